"""Warnings, each with advice, about the runs and the fit: what to do before trusting the law."""
from __future__ import annotations

from typing import Optional

import numpy as np

from planner.scaling.fit import FitResult
from planner.scaling.grid import GRID_KEYS
from planner.scaling.objectives import log_prediction
from planner.scaling.runs import Runs

FEW_RUNS = 10               # 5 runs fit the 5 parameters exactly; the chinchilla library seeds with dozens
MIN_COMPUTE_SPAN = 10.0     # largest / smallest run compute; below one decade the exponents are unidentifiable
NEAR_EQUAL_OBJECTIVE = 0.05  # optima within 5 % of the best objective count as rivals
DISTINCT_EXPONENT = 0.02    # ... if their alpha or beta differ by more than this
RESIDUAL_P_VALUE = 1e-3
RESIDUAL_R2 = 0.3


def run_warnings(runs: Runs) -> list[str]:
    warnings = []
    if len(runs) < FEW_RUNS:
        warnings.append(f"only {len(runs)} runs: 5 would fit the 5 parameters exactly; train at least {FEW_RUNS} "
                        f"seed runs (more sizes per compute level) before trusting the law")
    span = float(runs.C.max() / runs.C.min())
    if span < MIN_COMPUTE_SPAN:
        warnings.append(f"the runs span only {span:.1f}x in compute (seed models too small or too alike): "
                        f"alpha and beta are poorly pinned; add runs over at least {MIN_COMPUTE_SPAN:.0f}x, "
                        f"ideally 100x")
    return warnings


def grid_edge_warnings(fit: FitResult) -> list[str]:
    """Parameters the refinement left outside the grid, or inside its outermost cell: the grid may
    not bracket the optimum (or a better one lies beyond it)."""
    if fit.grid is None:
        return []
    warnings = []
    for index, key in enumerate(GRID_KEYS):
        values = np.sort(fit.grid[key])
        if len(values) < 3:
            continue
        fitted = float(fit.theta[index])
        if fitted < values[0] or fitted > values[-1]:
            warnings.append(f"{key} = {fitted:.4g} was fitted outside the grid's range [{values[0]:.4g}, "
                            f"{values[-1]:.4g}]: widen that range (--grid) and refit to rule out a missed optimum")
        # The default log_E grid ends just below the lowest observed loss, a physical ceiling
        # for E, so only its lower end can be "too narrow".
        elif fitted < values[1] or (fitted > values[-2] and key != "log_E"):
            warnings.append(f"{key} = {fitted:.4g} is at a bound of the grid [{values[0]:.4g}, {values[-1]:.4g}]: "
                            f"widen that range (--grid) so the optimum is bracketed")
    return warnings


def multimodal_warnings(fit: FitResult) -> list[str]:
    """Distinct optima with nearly the best objective: the data cannot choose between them."""
    rivals = [o for o in fit.optima[1:]
              if o.objective <= fit.objective * (1 + NEAR_EQUAL_OBJECTIVE)
              and np.max(np.abs(o.theta[3:] - fit.theta[3:])) > DISTINCT_EXPONENT]
    if not rivals:
        return []
    worst = max(rivals, key=lambda o: np.max(np.abs(o.theta[3:] - fit.theta[3:])))
    return [f"{len(rivals)} other optima reach within {100 * NEAR_EQUAL_OBJECTIVE:.0f} % of the best objective with "
            f"different exponents (alpha {fit.theta[3]:.3f} vs {worst.theta[3]:.3f}, beta {fit.theta[4]:.3f} vs "
            f"{worst.theta[4]:.3f}): the landscape is multimodal; add runs at new sizes and check the "
            f"--bootstrap intervals"]


def residual_warnings(fit: FitResult, runs: Runs) -> list[str]:
    """Residuals that a quadratic in (log N, log D) explains are structure the law misses (underfit)."""
    from scipy import stats   # imported on use: scipy.stats is slow to import

    n = len(runs)
    if n < 12:
        return []
    log_N, log_D = np.log(runs.N), np.log(runs.D)
    residual = np.log(runs.loss) - log_prediction(fit.theta, log_N, log_D)[0]
    x = (log_N - log_N.mean()) / (log_N.std() or 1.0)
    y = (log_D - log_D.mean()) / (log_D.std() or 1.0)
    design = np.column_stack([np.ones(n), x, y, x * x, y * y, x * y])
    coefficients, *_ = np.linalg.lstsq(design, residual, rcond=None)
    explained = residual - design @ coefficients
    total = residual - residual.mean()
    ss_total, ss_left = float(total @ total), float(explained @ explained)
    if ss_total <= 0:
        return []
    r2 = 1.0 - ss_left / ss_total
    k = design.shape[1] - 1
    f_stat = (r2 / k) / max((1.0 - r2) / (n - k - 1), 1e-300)
    p_value = float(stats.f.sf(f_stat, k, n - k - 1))
    if p_value < RESIDUAL_P_VALUE and r2 > RESIDUAL_R2:
        return [f"residuals follow N and D (a quadratic in log N, log D explains {100 * r2:.0f} % of them, "
                f"p = {p_value:.1g}): the law underfits; look for unconverged or mistuned runs, or drop the "
                f"smallest models"]
    return []


def extrapolation_warnings(runs: Runs, target_flops: Optional[float]) -> list[str]:
    """Extrapolating further past the largest run than the runs themselves span."""
    if target_flops is None:
        return []
    span = float(runs.C.max() / runs.C.min())
    factor = float(target_flops / runs.C.max())
    if factor > max(span, 1.0):
        return [f"the budget is {factor:.3g}x the largest run's compute, beyond the {span:.3g}x the runs span: "
                f"the law is extrapolated further than the data supports; step up with --scaling-factor 2-4 "
                f"and refit after each run"]
    return []


def all_warnings(fit: FitResult, runs: Runs, target_flops: Optional[float] = None) -> list[str]:
    return (run_warnings(runs) + grid_edge_warnings(fit) + multimodal_warnings(fit)
            + residual_warnings(fit, runs) + extrapolation_warnings(runs, target_flops))


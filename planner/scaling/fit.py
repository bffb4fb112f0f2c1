"""Fit L(N, D) = E + A/N^alpha + B/D^beta to runs: evaluate the whole grid of initial values at
once, then refine the best few grid points by quasi-Newton (BFGS, or L-BFGS-B) on exact gradients.

Hoffmann et al. 2022 (and the chinchilla library) run a BFGS from *every* grid point with
finite-difference gradients; ranking the grid first and refining a handful gives the same optimum
at a small fraction of the cost (bench/fit_speed.py measures both).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from planner.errors import UserError
from planner.scaling.grid import (DEFAULT_STARTS, Grid, best_points, default_grid, evaluate_grid, grid_size,
                          landscape)
from planner.scaling.law import ScalingLaw
from planner.scaling.objectives import Objective, value_and_gradient
from planner.scaling.runs import MIN_RUNS, Runs

# Quasi-Newton refinement on the exact gradient. "BFGS" (full 5x5 inverse-Hessian) and "L-BFGS-B"
# reach the same optimum; BFGS is the default because scipy's L-BFGS-B calls multithreaded OpenBLAS
# for this 5-variable problem and spends ~2 ms per iteration waking threads on a multicore machine.
# The summed Huber objective is ~1e-3 in size and the stopping tests are relative to max(|f|, 1),
# so the objective is rescaled to ~1 at the start point before minimising.
METHOD = "BFGS"
OPTIONS = {"BFGS": {"maxiter": 5000, "gtol": 1e-10},
           "L-BFGS-B": {"maxiter": 20000, "maxfun": 40000, "ftol": 1e-15, "gtol": 1e-11, "maxcor": 30}}
CONVERGED_GRADIENT = 1e-5    # on the rescaled objective: a stationary point to working precision
POLISH_ROUNDS = 2


@dataclass(frozen=True)
class LocalOptimum:
    """Where the refinement from one start ended."""

    theta: np.ndarray
    objective: float
    start_objective: float
    converged: bool
    message: str
    iterations: int


@dataclass
class FitResult:
    """The best refined optimum, every start's optimum, and the grid's landscape."""

    law: ScalingLaw
    theta: np.ndarray                   # (log E, log A, log B, alpha, beta)
    objective: float
    objective_kind: str
    converged: bool
    message: str
    iterations: int
    gradient_norm: float
    optima: list[LocalOptimum]          # one per start, best first
    grid: Optional[Grid] = None
    landscape: Optional[dict[str, np.ndarray]] = None
    best_grid_objective: Optional[float] = None
    n_runs: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        out = {
            "params": self.law.params(),
            "objective": self.objective,
            "objective_kind": self.objective_kind,
            "convergence": {
                "converged": self.converged,
                "message": self.message,
                "iterations": self.iterations,
                "gradient_norm": self.gradient_norm,
                "starts": len(self.optima),
                "starts_reaching_best": self.starts_reaching_best(),
            },
            "n_runs": self.n_runs,
        }
        if self.grid is not None:
            out["grid"] = {"size": grid_size(self.grid), "best_grid_objective": self.best_grid_objective,
                           "ranges": {k: [float(v.min()), float(v.max()), len(v)] for k, v in self.grid.items()}}
        if self.landscape is not None:
            out["landscape"] = {k: {"values": self.grid[k].tolist(), "best_objective": v.tolist()}
                                for k, v in self.landscape.items()}
        out["warnings"] = list(self.warnings)
        return out

    def starts_reaching_best(self, rtol: float = 1e-6) -> int:
        return sum(o.objective <= self.objective * (1 + rtol) + 1e-300 for o in self.optima)


def law_from_theta(theta: np.ndarray) -> ScalingLaw:
    log_E, log_A, log_B, alpha, beta = (float(v) for v in theta)
    return ScalingLaw(E=np.exp(log_E), A=np.exp(log_A), B=np.exp(log_B), alpha=alpha, beta=beta)


def theta_from_law(law: ScalingLaw) -> np.ndarray:
    return np.array([np.log(law.E), np.log(law.A), np.log(law.B), law.alpha, law.beta])


def objective_at(law: ScalingLaw, runs: Runs, objective: Objective) -> float:
    """The fit objective of any law on these runs (to compare with published parameters)."""
    value, _ = value_and_gradient(theta_from_law(law), np.log(runs.N), np.log(runs.D), np.log(runs.loss),
                                  objective)
    return value


def refine(theta0: np.ndarray, runs: Runs, objective: Objective, method: str = METHOD,
           rounds: int = POLISH_ROUNDS, gtol: Optional[float] = None) -> LocalOptimum:
    """Quasi-Newton (BFGS or L-BFGS-B) from theta0 on the exact gradient, restarted up to `rounds`
    times to shed a stale Hessian approximation."""
    if method not in OPTIONS:
        raise UserError(f"unknown optimizer '{method}': choose one of {', '.join(OPTIONS)}")
    from scipy.optimize import minimize   # here, not at module level: keeps `scaleplan` start-up fast

    log_N, log_D, log_loss = np.log(runs.N), np.log(runs.D), np.log(runs.loss)
    start_value, _ = value_and_gradient(theta0, log_N, log_D, log_loss, objective)
    scale = 1.0 / start_value if np.isfinite(start_value) and start_value > 0 else 1.0

    def scaled(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = value_and_gradient(theta, log_N, log_D, log_loss, objective)
        if not np.isfinite(value):
            return 1e300, np.zeros_like(theta)
        return value * scale, gradient * scale

    theta, iterations, result = np.asarray(theta0, float), 0, None
    for _ in range(rounds):
        options = dict(OPTIONS[method], **({"gtol": gtol} if gtol else {}))
        result = minimize(scaled, theta, jac=True, method=method, options=options)
        iterations += int(result.nit)
        improved = result.fun < scaled(theta)[0] * (1 - 1e-13)
        theta = result.x
        if not improved:
            break
    final_value, final_gradient = scaled(theta)
    final = float(final_value / scale)
    # "precision loss" / "ABNORMAL" endings are fine when the gradient is zero to working precision.
    converged = bool(result.success) or float(np.linalg.norm(final_gradient)) < CONVERGED_GRADIENT
    return LocalOptimum(theta=theta, objective=final, start_objective=float(start_value),
                        converged=converged, message=str(result.message), iterations=iterations)


def fit_from_starts(runs: Runs, objective: Objective, starts: Sequence[np.ndarray],
                    rounds: int = POLISH_ROUNDS, gtol: Optional[float] = None, method: str = METHOD) -> FitResult:
    """Refine each start and keep the best (no grid; the bootstrap uses this with warm starts)."""
    if len(runs) < MIN_RUNS:
        raise UserError(f"{len(runs)} runs: the 5-parameter law needs at least {MIN_RUNS}")
    optima = sorted((refine(np.asarray(s, float), runs, objective, method, rounds, gtol) for s in starts),
                    key=lambda o: o.objective)
    best = optima[0]
    _, gradient = value_and_gradient(best.theta, np.log(runs.N), np.log(runs.D), np.log(runs.loss), objective)
    return FitResult(law=law_from_theta(best.theta), theta=best.theta, objective=best.objective,
                     objective_kind=objective.kind, converged=best.converged, message=best.message,
                     iterations=best.iterations, gradient_norm=float(np.linalg.norm(gradient)),
                     optima=optima, n_runs=len(runs))


def fit_law(runs: Runs, objective: Objective = Objective(), grid: Optional[Grid] = None,
            n_starts: int = DEFAULT_STARTS, workers: Optional[int] = None, method: str = METHOD) -> FitResult:
    """Evaluate every grid point, then refine the `n_starts` best with L-BFGS."""
    if len(runs) < MIN_RUNS:
        raise UserError(f"{len(runs)} runs: the 5-parameter law needs at least {MIN_RUNS}")
    grid = grid if grid is not None else default_grid(runs)
    values = evaluate_grid(grid, runs, objective, workers=workers)
    starts = best_points(grid, values, n_starts)
    if not starts:
        raise UserError("the objective is not finite anywhere on the grid; check the grid ranges")
    result = fit_from_starts(runs, objective, [theta for theta, _ in starts], method=method)
    result.grid = grid
    result.landscape = landscape(grid, values)
    result.best_grid_objective = starts[0][1]
    return result


def describe(result: FitResult) -> str:
    """Human-readable summary of a fit."""
    p = result.law.params()
    lines = [f"L(N, D) = {p['E']:.4f} + {p['A']:.5g} / N^{p['alpha']:.4f} + {p['B']:.5g} / D^{p['beta']:.4f}",
             f"objective ({result.objective_kind}, summed over {result.n_runs} runs): {result.objective:.8g}",
             f"convergence: {'yes' if result.converged else 'NO'} ({result.message}), "
             f"{result.iterations} iterations, |grad| {result.gradient_norm:.2e}, "
             f"{result.starts_reaching_best()}/{len(result.optima)} starts reach the best objective"]
    if result.grid is not None:
        lines.append(f"grid: {grid_size(result.grid):,} points, best grid objective {result.best_grid_objective:.6g}")
    return "\n".join(lines)


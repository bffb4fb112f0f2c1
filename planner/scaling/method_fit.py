"""What `scaleplan fit --method` and `next --method` forecast at one budget: N_opt, D_opt and the
loss there by Approach 3 (parametric), Approach 2 (isoFLOP), both side by side, or the default
(`auto`, see forecast.py), each with its honest interval (intervals.py) and the warnings the
runs deserve (isoFLOP budgets skipped, small-scale deviation)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from planner.errors import UserError
from planner.scaling.backtest import design_of, forms_for, remedies_for
from planner.scaling.budgets import at_least, labelled, require_budgets
from planner.scaling.candidates import evaluate
from planner.scaling.deviation import warnings_for
from planner.scaling.forecast import forecast
from planner.scaling.isoflop import IsoflopLaw, laws_from_minima
from planner.scaling.law import FLOPS_PER_PARAM_TOKEN
from planner.scaling.runs import Runs
from planner.scaling.slices import MIN_SIZES

METHOD_CHOICES = ("auto", "parametric", "isoflop", "both")


def slice_warnings(runs: Runs, named: bool, design, minima) -> list[str]:
    """Budgets the table names that cannot give an isoFLOP optimum, each skipped with a reason."""
    warnings = []
    if named:
        for b in design.found:
            sizes = len(np.unique(runs.N[design.label == b]))
            if sizes < MIN_SIZES:
                warnings.append(f"isoFLOP: budget {b:.3g} FLOPs has {sizes} model size(s); a parabola needs "
                                f"{MIN_SIZES}: skipped")
    missed = [level for level, ok in zip(design.slices.levels, minima[3][0]) if not ok]
    if missed:
        warnings.append(f"isoFLOP: at {len(missed)} of {len(design.slices.levels)} compute levels the model sizes do "
                        f"not bracket the loss minimum ({', '.join(f'{c:.2g}' for c in missed)} FLOPs): skipped")
    return warnings


def isoflop_law(design, minima) -> Optional[IsoflopLaw]:
    if minima[3][0].sum() < 2:
        return None
    return laws_from_minima(np.log(design.slices.levels), *minima[:4])


def _summary(result, budget: float) -> dict:
    N, loss = result.N_opt, result.loss_opt
    point, low, high = (float(N[k][0, 0]) for k in ("point", "low", "high"))
    to_D = budget / FLOPS_PER_PARAM_TOKEN
    return {"chosen": result.chosen_N[0], "chosen_loss": result.chosen_loss[0],
            "N_opt": point, "N_opt_interval": [low, high],
            "D_opt": to_D / point, "D_opt_interval": [to_D / high, to_D / low],
            "loss": float(loss["point"][0, 0]), "loss_interval": [float(loss["low"][0, 0]), float(loss["high"][0, 0])],
            "interval_parts_log": {k: float(N[k][0, 0]) for k in ("bootstrap", "jackknife", "disagreement",
                                                                   "extrapolation")}}


def forecast_at(runs: Runs, budget: float, method: str = "auto", law_form: str = "auto", confidence: float = 0.9,
                min_flops: Optional[float] = None, small_weight: Optional[float] = None, draws: int = 400,
                seed: int = 0) -> dict:
    """The method's forecast at `budget` (both: parametric and isoFLOP, with their disagreement)."""
    if method not in METHOD_CHOICES:
        raise UserError(f"unknown --method '{method}': choose one of {', '.join(METHOD_CHOICES)}")
    if small_weight is not None and not 0 <= small_weight <= 1:
        raise UserError(f"--small-weight must lie in [0, 1], got {small_weight:g}")
    named = runs.budget is not None
    runs = labelled(at_least(runs, min_flops))
    require_budgets(runs)
    design = design_of(runs, named)
    remedies, weight = remedies_for(small_weight)
    targets = np.array([float(budget)])
    point = (runs.N[-1:], runs.D[-1:])   # losses at runs are the backtest's business; here the optimum's
    candidates, deviation, minima = evaluate(design, forms_for(law_form) if method != "isoflop" else ["chinchilla"],
                                             method != "parametric", targets, point, remedies, weight)
    warnings = warnings_for(deviation, design.found)
    if method != "parametric":
        warnings = slice_warnings(runs, named, design, minima) + warnings
    if method in ("isoflop", "both") and "isoflop" not in candidates:
        raise UserError("isoFLOP: fewer than 2 compute budgets have 3 or more model sizes that bracket the loss "
                        "minimum; Approach 2 needs at least 2 (use --method parametric)")
    wanted = ("parametric", "isoflop") if method == "both" else (method,)
    out = {"method": method, "budget_flops": float(budget), "confidence": confidence, "warnings": warnings,
           "forecasts": {m: _summary(forecast(design, candidates, minima, m, targets, point, confidence, draws, seed),
                                     budget) for m in wanted}}
    law = isoflop_law(design, minima) if "isoflop" in candidates else None
    if law is not None:
        out["isoflop_law"] = law.to_json()
    if method == "both":
        ratio = out["forecasts"]["parametric"]["N_opt"] / out["forecasts"]["isoflop"]["N_opt"]
        out["disagreement"] = {"N_opt_ratio": ratio, "log": abs(float(np.log(ratio)))}
    return out

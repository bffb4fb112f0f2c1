"""Backtest: fit the runs up to a compute cut, forecast every larger budget, and score the forecasts
against what those runs measured: the loss of each larger run, and N_opt where a larger budget has
at least 3 sizes for its own parabola to locate the minimum. Each forecast's interval either covers
the truth or not; a user learns from their own runs how far their law carries.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from planner.errors import UserError
from planner.scaling.budgets import budget_of, labelled, split_at
from planner.scaling.candidates import REMEDIES, Design, evaluate
from planner.scaling.deviation import DOWN_WEIGHT, warnings_for
from planner.scaling.forecast import Forecast, forecast
from planner.scaling.law_forms import FORMS
from planner.scaling.runs import Runs

MIN_FIT_RUNS = 8    # 5 parameters, and a refit without one budget still needs 7 (parameters + 2)


def design_of(runs: Runs, named: bool) -> Design:
    label = budget_of(runs)
    return Design(runs.N, runs.D, label, np.unique(label), np.log(runs.loss)[None, :], named)


def measured_optima(runs: Runs, named: bool) -> dict[float, tuple[float, float]]:
    """Each slice's own optimum (N_opt, L_opt) where its parabola locates one: the truth a
    backtest holds forecasts to."""
    design = design_of(runs, named)
    x_min, y_min, _, valid, _ = design.minima()
    return {float(level): (float(np.exp(x_min[0, k])), float(y_min[0, k]))
            for k, level in enumerate(design.slices.levels) if valid[0, k]}


def forms_for(law_form: str) -> list[str]:
    return list(FORMS) if law_form == "auto" else [law_form]


def remedies_for(small_weight: Optional[float]) -> tuple[tuple[str, ...], float]:
    """The remedies the default chooses between, or the one the user asked for."""
    if small_weight is None:
        return REMEDIES, DOWN_WEIGHT
    return ("down-weight",), small_weight


@dataclass
class MethodScore:
    method: str
    chosen: str
    N_errors: list[float] = field(default_factory=list)      # relative, signed
    N_covered: list[bool] = field(default_factory=list)
    loss_errors: list[float] = field(default_factory=list)
    loss_covered: list[bool] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        covered = self.N_covered + self.loss_covered
        return {"method": self.method, "chosen": self.chosen,
                "N_opt_median_error": float(np.median(np.abs(self.N_errors))) if self.N_errors else None,
                "loss_mean_error": float(np.mean(np.abs(self.loss_errors))),
                "N_opt_coverage": float(np.mean(self.N_covered)) if self.N_covered else None,
                "loss_coverage": float(np.mean(self.loss_covered)),
                "coverage": float(np.mean(covered)), "forecasts": len(covered)}


@dataclass
class Backtest:
    cut: float
    fitted_budgets: list[float]
    forecast_budgets: list[float]
    scores: list[MethodScore]
    warnings: list[str]
    confidence: float

    def to_json(self) -> dict:
        return {"cut_flops": self.cut, "fitted_budgets": self.fitted_budgets,
                "forecast_budgets": self.forecast_budgets, "confidence": self.confidence,
                "extrapolation": max(self.forecast_budgets) / max(self.fitted_budgets),
                "methods": [dict(s.summary(), forecasts_detail=s.rows) for s in self.scores],
                "warnings": list(self.warnings)}


def score(method: str, result: Forecast, truth_N: dict, test: Runs, test_label: np.ndarray,
          targets: np.ndarray) -> MethodScore:
    out = MethodScore(method, f"N_opt: {result.chosen_N[0]}, loss: {result.chosen_loss[0]}")
    for j, C in enumerate(targets):
        if float(C) not in truth_N:
            continue
        N_true = truth_N[float(C)][0]
        point, low, high = (float(result.N_opt[k][0, j]) for k in ("point", "low", "high"))
        out.N_errors.append(point / N_true - 1)
        out.N_covered.append(bool(low <= N_true <= high))
        out.rows.append({"kind": "N_opt", "C": float(C), "truth": N_true, "forecast": point, "low": low, "high": high})
    for i in range(len(test)):
        point, low, high = (float(result.loss[k][0, i]) for k in ("point", "low", "high"))
        truth = float(test.loss[i])
        out.loss_errors.append(point / truth - 1)
        out.loss_covered.append(bool(low <= truth <= high))
        out.rows.append({"kind": "loss", "C": float(test_label[i]), "N": float(test.N[i]), "D": float(test.D[i]),
                         "truth": truth, "forecast": point, "low": low, "high": high})
    return out


def backtest(runs: Runs, cut_flops: Optional[float] = None, cut_fraction: Optional[float] = None,
             methods: tuple[str, ...] = ("parametric", "isoflop", "auto"), law_form: str = "auto",
             confidence: float = 0.9, min_flops: Optional[float] = None, small_weight: Optional[float] = None,
             draws: int = 400, seed: int = 0) -> Backtest:
    named = runs.budget is not None
    fit_runs, test, cut = split_at(labelled(runs), cut_flops, cut_fraction, min_flops)
    if len(fit_runs) < MIN_FIT_RUNS:
        raise UserError(f"the cut at {cut:.3g} FLOPs leaves {len(fit_runs)} runs to fit; the law and its "
                        f"leave-one-budget-out refits need at least {MIN_FIT_RUNS}")
    design = design_of(fit_runs, named)
    test_label = budget_of(test)
    truth_N = measured_optima(test, named)
    targets = np.array(sorted(truth_N)) if truth_N else np.unique(test_label)
    remedies, weight = remedies_for(small_weight)
    candidates, deviation, minima = evaluate(design, forms_for(law_form), True, targets, (test.N, test.D),
                                             remedies, weight)
    scores = []
    for method in methods:
        if method == "isoflop" and "isoflop" not in candidates:
            continue
        result = forecast(design, candidates, minima, method, targets, (test.N, test.D), confidence, draws, seed)
        scores.append(score(method, result, truth_N, test, test_label, targets))
    warnings = warnings_for(deviation, design.found)
    if "isoflop" not in candidates:
        warnings.append("isoFLOP: fewer than 2 fitted budgets locate an optimum; Approach 2 left out")
    return Backtest(cut, [float(b) for b in design.found], [float(b) for b in np.unique(test_label)], scores,
                    warnings, confidence)

"""Must-show 1: a known law whose smallest budgets are distorted (their losses raised, as untuned
hyperparameters raise them), 100 repetitions at 1 % noise, all fitted in the same batched calls:
the default method's median N_opt error at 100x the largest fitted budget is at most 10 %, and its
90 % interval covers the true N_opt in at least 85 % of repetitions."""
from __future__ import annotations

import numpy as np

from planner.scaling.candidates import Design, evaluate
from planner.scaling.deviation import detect
from planner.scaling.forecast import forecast
from planner.scaling.law import CHINCHILLA
from planner.scaling.law_forms import FORMS

REPETITIONS = 100
NOISE = 0.01
BUDGETS = np.logspace(16, 19, 7)
RAISED = {0: 0.05, 1: 0.02}            # the two smallest budgets: +5 % and +2 % loss


def isoflop_design(rng: np.random.Generator, repetitions: int) -> Design:
    """7 sizes per budget spanning e^±1.5 around the true optimum, losses with log-normal noise."""
    N, D, budget, raise_by = [], [], [], []
    for k, C in enumerate(BUDGETS):
        center, _ = CHINCHILLA.optimal_allocation(C)
        for factor in np.exp(np.linspace(-1.5, 1.5, 7)):
            N.append(center * factor)
            D.append(C / (6 * center * factor))
            budget.append(C)
            raise_by.append(RAISED.get(k, 0.0))
    N, D, budget = np.array(N), np.array(D), np.array(budget)
    clean = np.log(CHINCHILLA.predict(N, D) * (1 + np.array(raise_by)))
    return Design(N, D, budget, BUDGETS, clean[None, :] + rng.normal(0, NOISE, (repetitions, len(N))))


def test_backtest_synthetic() -> None:
    design = isoflop_design(np.random.default_rng(0), REPETITIONS)
    target = np.array([100 * BUDGETS[-1]])
    truth, _ = CHINCHILLA.optimal_allocation(target[0])
    candidates, deviation, minima = evaluate(design, list(FORMS), True, target, (design.N[:1], design.D[:1]))
    result = forecast(design, candidates, minima, "auto", target, (design.N[:1], design.D[:1]), 0.9, count=200)
    point, low, high = (result.N_opt[k][:, 0] for k in ("point", "low", "high"))
    assert np.median(np.abs(point / truth - 1)) <= 0.10
    assert np.mean((low <= truth) & (truth <= high)) >= 0.85
    # The distortion is there to be found: the smallest budget is flagged in most repetitions.
    assert deviation.flagged[:, 0].mean() > 0.8


def test_deviation_not_flagged_on_clean_runs() -> None:
    rng = np.random.default_rng(1)
    design = isoflop_design(rng, 20)
    clean = np.log(CHINCHILLA.predict(design.N, design.D))[None, :] + rng.normal(0, NOISE, (20, len(design.N)))
    flagged = detect(np.log(design.N), np.log(design.D), clean, design.label, design.found).flagged
    assert flagged.mean() < 0.05

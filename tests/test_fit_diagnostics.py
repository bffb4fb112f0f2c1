"""Each diagnostic fires on a case built to trigger it, and stays quiet on a healthy fit."""
from __future__ import annotations

import numpy as np

from planner.scaling.diagnostics import (all_warnings, extrapolation_warnings, grid_edge_warnings, multimodal_warnings,
                                 residual_warnings, run_warnings)
from planner.scaling.fit import LocalOptimum, fit_law
from planner.scaling.grid import default_grid
from planner.scaling.objectives import Objective
from planner.scaling.runs import Runs
from tests.planner_helpers import synthetic_runs


def healthy():
    runs = synthetic_runs(np.random.default_rng(7), count=40, noise=0.003)
    return runs, fit_law(runs, Objective("huber"))


def test_healthy_fit_has_no_warnings() -> None:
    runs, fit = healthy()
    assert all_warnings(fit, runs, target_flops=2 * runs.C.max()) == []


def test_few_runs_and_narrow_compute_span() -> None:
    runs = synthetic_runs(np.random.default_rng(8), count=7, flops=(1e18, 3e18))
    messages = " | ".join(run_warnings(runs))
    assert "only 7 runs" in messages and "seed models too small" in messages


def test_parameter_at_grid_bound() -> None:
    runs, _ = healthy()
    grid = default_grid(runs, 6)
    grid["alpha"] = np.linspace(0.05, 0.3, 6)     # truth 0.34 lies beyond the top
    fit = fit_law(runs, Objective("huber"), grid=grid)
    assert any("alpha" in w and ("bound" in w or "outside" in w) for w in grid_edge_warnings(fit))


def test_rival_optima_are_reported() -> None:
    _, fit = healthy()
    rival = LocalOptimum(theta=fit.theta + np.array([0, 1.0, 0, 0.1, 0]), objective=fit.objective * 1.01,
                         start_objective=1.0, converged=True, message="", iterations=1)
    fit.optima = [fit.optima[0], rival]
    assert "multimodal" in multimodal_warnings(fit)[0]


def test_structured_residuals_mean_underfit() -> None:
    rng = np.random.default_rng(9)
    runs = synthetic_runs(rng, count=60, noise=0.002)
    # a bump in the middle sizes that no power law can follow
    log_N = np.log(runs.N)
    bumped = runs.loss * np.exp(0.1 * np.exp(-((log_N - log_N.mean()) / log_N.std()) ** 2))
    runs = Runs(runs.N, runs.D, bumped)
    fit = fit_law(runs, Objective("mse-log"))
    assert "underfits" in residual_warnings(fit, runs)[0]


def test_extrapolation_beyond_the_data() -> None:
    runs = synthetic_runs(np.random.default_rng(10), count=20, flops=(1e18, 1e19))
    assert extrapolation_warnings(runs, 5 * runs.C.max()) == []
    assert "extrapolated" in extrapolation_warnings(runs, 1e4 * runs.C.max())[0]

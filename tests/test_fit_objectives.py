"""Analytic gradients against finite differences; the grid kernel against the plain objective."""
from __future__ import annotations

import numpy as np
import pytest

from planner.scaling.grid import GRID_KEYS, best_points, default_grid, evaluate_grid, landscape
from planner.scaling.objectives import OBJECTIVES, Objective, value_and_gradient
from tests.planner_helpers import synthetic_runs


@pytest.mark.parametrize("kind", OBJECTIVES)
def test_gradient_matches_finite_differences(kind: str) -> None:
    runs = synthetic_runs(np.random.default_rng(1), count=30, noise=0.02)
    objective = Objective(kind, delta=0.01)   # a delta the residuals straddle, so both branches are hit
    args = (np.log(runs.N), np.log(runs.D), np.log(runs.loss), objective)
    theta = np.array([0.4, 6.2, 5.8, 0.33, 0.27])
    _, gradient = value_and_gradient(theta, *args)
    step = 1e-6
    for i in range(5):
        shift = np.zeros(5)
        shift[i] = step
        upper, lower = value_and_gradient(theta + shift, *args)[0], value_and_gradient(theta - shift, *args)[0]
        numeric = (upper - lower) / (2 * step)
        assert gradient[i] == pytest.approx(numeric, rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("kind", OBJECTIVES)
def test_grid_kernel_equals_pointwise_objective(kind: str) -> None:
    runs = synthetic_runs(np.random.default_rng(2), count=25)
    objective = Objective(kind)
    grid = default_grid(runs, 3)
    values = evaluate_grid(grid, runs, objective, workers=2)
    args = (np.log(runs.N), np.log(runs.D), np.log(runs.loss), objective)
    for index in [(0, 0, 0, 0, 0), (1, 2, 0, 1, 2), (2, 1, 2, 2, 1)]:
        theta = np.array([grid[key][i] for key, i in zip(GRID_KEYS, index)])
        assert values[index] == pytest.approx(value_and_gradient(theta, *args)[0], rel=2e-4)


def test_best_points_and_landscape_are_consistent() -> None:
    runs = synthetic_runs(np.random.default_rng(3), count=20)
    grid = default_grid(runs, 4)
    values = evaluate_grid(grid, runs, Objective(), workers=1)
    best = best_points(grid, values, 5)
    assert [v for _, v in best] == sorted(v for _, v in best)
    assert best[0][1] == pytest.approx(values.min())
    sweep = landscape(grid, values)
    for key in GRID_KEYS:
        assert sweep[key].shape == (4,) and sweep[key].min() == pytest.approx(values.min())


def test_asymmetric_weights_over_predictions() -> None:
    objective = Objective("asymmetric", weight=10.0)
    # r = log L - log L̂ < 0 is an over-prediction
    assert objective.pointwise(np.array([-0.1]))[0] == pytest.approx(10 * objective.pointwise(np.array([0.1]))[0])

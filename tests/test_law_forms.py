"""The law forms: analytic Jacobians against finite differences, the batched fit recovering each
form's own law, the Chinchilla form reproducing the scipy fit on the Chinchilla data, optima along
6 N D = C against a brute-force search, and the honest interval's arithmetic."""
from __future__ import annotations

import numpy as np
import pytest

from planner.scaling.fit import fit_law
from planner.scaling.form_fit import fit_forms
from planner.scaling.intervals import honest, jackknife
from planner.scaling.law_forms import FORMS
from planner.scaling.runs import read_runs
from tests.conftest import SHARED_DATA

THETAS = {"chinchilla": [0.5, 6.0, 7.0, 0.34, 0.28], "tied": [0.5, 6.0, 7.0, 0.31],
          "kaplan": [0.5, 18.0, 22.0, 0.3, 0.3]}


def grid_runs():
    N = np.repeat(np.geomspace(2e7, 2e9, 8), 5)
    D = N * np.tile(np.geomspace(5, 500, 5), 8)
    return np.log(N), np.log(D)


@pytest.mark.parametrize("name", list(FORMS))
def test_jacobian_matches_finite_differences(name) -> None:
    form, theta = FORMS[name], np.array([THETAS[name]])
    log_N, log_D = grid_runs()
    u, J = form.log_jacobian(theta, log_N[None, :], log_D[None, :])
    for k in range(theta.shape[1]):
        step = np.zeros_like(theta)
        step[0, k] = 1e-6
        up = form.log_jacobian(theta + step, log_N[None, :], log_D[None, :], False)[0]
        down = form.log_jacobian(theta - step, log_N[None, :], log_D[None, :], False)[0]
        assert np.allclose(J[0, :, k], (up - down)[0] / 2e-6, rtol=1e-5, atol=1e-8), (name, k)


@pytest.mark.parametrize("name", list(FORMS))
def test_batched_fit_recovers_each_forms_law(name) -> None:
    form, theta = FORMS[name], np.array([THETAS[name]])
    log_N, log_D = grid_runs()
    log_loss = form.log_predict(theta, np.exp(log_N), np.exp(log_D))
    start = FORMS["chinchilla"].from_chinchilla(np.array([THETAS["chinchilla"]])) if name == "chinchilla" else None
    fitted = fit_forms(form, log_N, log_D, log_loss, starts=None if start is None else start[:, None, :])
    assert np.abs(form.log_predict(fitted.theta, np.exp(log_N), np.exp(log_D)) - log_loss).max() < 1e-4
    N_true, _ = form.optimal_allocation(theta, 1e23)
    N_fit, _ = form.optimal_allocation(fitted.theta, 1e23)
    assert N_fit[0, 0] == pytest.approx(N_true[0, 0], rel=0.05)


@pytest.mark.parametrize("name", list(FORMS))
def test_optimum_is_the_minimum_along_the_budget(name) -> None:
    form, theta = FORMS[name], np.array([THETAS[name]])
    C = 1e21
    N = np.geomspace(1e7, 1e12, 20001)
    brute = N[np.argmin(form.log_predict(theta, N, C / (6 * N))[0])]
    assert form.optimal_allocation(theta, C)[0][0, 0] == pytest.approx(brute, rel=0.01)


@pytest.mark.skipif(not (SHARED_DATA / "chinchilla_fig4_epoch.csv").is_file(), reason="shared data absent")
def test_batched_chinchilla_form_matches_the_scipy_fit() -> None:
    runs = read_runs(SHARED_DATA / "chinchilla_fig4_epoch.csv").without_highest_loss(5)
    reference = fit_law(runs)
    batched = fit_forms(FORMS["chinchilla"], np.log(runs.N), np.log(runs.D), np.log(runs.loss))
    assert batched.objective[0] <= reference.objective * (1 + 1e-6)
    assert np.allclose(batched.theta[0], reference.theta, atol=1e-3)


def test_honest_interval_adds_its_parts_in_quadrature() -> None:
    point = np.array([[100.0]])
    draws = np.exp(np.log(100.0) + np.linspace(-0.1, 0.1, 1001))[None, :, None]
    left_out = np.array([[[90.0], [110.0], [100.0]]])
    active = np.ones((1, 3), bool)
    result = honest(point, draws, left_out, active, np.array([[0.2]]), np.array([[0.05]]), 0.9)
    logs = np.log([90.0, 110.0, 100.0])
    jack = np.sqrt(2 / 3 * np.sum((logs - logs.mean()) ** 2))
    assert jackknife(left_out, active)[0, 0] == pytest.approx(jack)
    z = 1.6448536269514722
    boot = 0.09   # the 5th and 95th percentiles of the draws lie 0.09 from the centre in log
    half = np.sqrt(boot ** 2 + (z * jack) ** 2 + 0.2 ** 2 + (z * 0.05) ** 2)
    assert np.log(result["high"][0, 0] / 100) == pytest.approx(half, rel=1e-3)
    assert np.log(100 / result["low"][0, 0]) == pytest.approx(half, rel=1e-3)

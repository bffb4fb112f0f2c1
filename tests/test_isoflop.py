"""Approach 2: parabola minima per budget, power laws through them, slices interpolated along a
size's runs, the residual bootstrap, and a fit JSON whose isoFLOP allocation allocate reads."""
from __future__ import annotations

import json

import numpy as np
import pytest

from launch.cli import main
from planner.scaling.backtest import design_of, measured_optima
from planner.scaling.isoflop import bootstrap_isoflop, fit_isoflop, parabola_minima
from planner.scaling.law import CHINCHILLA, law_from_dict
from planner.scaling.runs import Runs, write_runs
from planner.scaling.slices import build


def isoflop_runs(noise: float, budgets=np.logspace(17, 20, 7), sizes: int = 7, seed: int = 0) -> Runs:
    rng = np.random.default_rng(seed)
    N, D, B = [], [], []
    for C in budgets:
        center, _ = CHINCHILLA.optimal_allocation(C)
        for f in np.exp(np.linspace(-1.5, 1.5, sizes)):
            N.append(center * f), D.append(C / (6 * center * f)), B.append(C)
    N, D = np.array(N), np.array(D)
    return Runs(N, D, CHINCHILLA.predict(N, D) * np.exp(rng.normal(0, noise, len(N))), budget=np.array(B))


def test_parabola_minimum_is_exact_for_a_parabola() -> None:
    x = np.log(np.array([1e8, 2e8, 4e8, 8e8]))
    y = 3.0 + 0.2 * (x - np.log(3e8)) ** 2
    x_min, y_min, curv, valid, _ = parabola_minima(x, y[None, :], [np.arange(4)])
    assert valid[0, 0] and np.exp(x_min[0, 0]) == pytest.approx(3e8) and y_min[0, 0] == pytest.approx(3.0)
    assert curv[0, 0] == pytest.approx(0.2)


def test_isoflop_recovers_the_laws_optimum() -> None:
    fit = fit_isoflop(isoflop_runs(noise=0.0))
    a_true = CHINCHILLA.beta / (CHINCHILLA.alpha + CHINCHILLA.beta)
    assert fit.law.a[0] == pytest.approx(a_true, abs=0.02)
    N, _ = fit.law.optimal_allocation(1e22)
    assert N[0, 0] / CHINCHILLA.optimal_allocation(1e22)[0] == pytest.approx(1, abs=0.1)


def test_isoflop_bootstrap_brackets_the_truth() -> None:
    fit = fit_isoflop(isoflop_runs(noise=0.01, seed=3))
    laws = bootstrap_isoflop(fit, 2000, seed=0)
    N, _ = laws.optimal_allocation(1e21)
    low, high = np.nanpercentile(N[:, 0], [5, 95])
    truth = CHINCHILLA.optimal_allocation(1e21)[0]
    assert low < high and low < truth * 1.15 and high > truth / 1.15


def test_slices_interpolate_along_each_sizes_runs() -> None:
    """Three sizes, each trained at two token counts around 1e19 FLOPs: a slice at 1e19 from their
    log losses interpolated linearly in log compute, checked against the same computation by hand."""
    N = np.repeat([1e8, 3e8, 9e8], 2)
    C = np.tile([0.5e19, 2e19], 3)
    D = C / (6 * N)
    loss = CHINCHILLA.predict(N, D)
    slices = build(N, D, C, named=False)
    k = int(np.argmin(np.abs(np.log(slices.levels / 1e19))))
    assert slices.levels[k] == pytest.approx(1e19)
    points = slices.groups[k]
    by_hand = np.log(loss[0::2]) + (np.log(loss[1::2]) - np.log(loss[0::2])) * np.log(2) / np.log(4)
    assert np.allclose(slices.log_loss(np.log(loss)[None, :])[0, points], by_hand)


def test_measured_optima_need_three_sizes() -> None:
    runs = isoflop_runs(noise=0.0, budgets=np.array([1e18, 1e19]), sizes=2)
    assert measured_optima(runs, named=True) == {}
    design = design_of(isoflop_runs(noise=0.0), named=True)
    assert len(design.slices.levels) == 7


def test_fit_isoflop_json_feeds_allocate(tmp_path, capsys) -> None:
    path = tmp_path / "runs.csv"
    runs = isoflop_runs(noise=0.005)
    write_runs(path, runs)
    assert main(["fit", str(path), "--method", "isoflop", "--at-flops", "1e22", "--out", str(tmp_path / "fit.json"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    forecast = out["forecast"]["forecasts"]["isoflop"]
    low, high = forecast["N_opt_interval"]
    assert low < forecast["N_opt"] < high
    law = law_from_dict(json.loads((tmp_path / "fit.json").read_text()))
    assert law.isoflop is not None
    assert main(["allocate", "--flops", "1e22", "--law", str(tmp_path / "fit.json"), "--json"]) == 0
    allocated = json.loads(capsys.readouterr().out)
    assert allocated["N"] == pytest.approx(forecast["N_opt"], rel=0.02)

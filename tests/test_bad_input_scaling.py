"""Must-show 5, and the rest of the backtest / isoFLOP flags wrong: one line on stderr naming the
problem, exit code 2, no traceback; an isoFLOP budget with too few sizes is a warning, not an error,
unless no budget is left."""
from __future__ import annotations

import json

import numpy as np
import pytest

from launch.cli import main
from planner.scaling.law import CHINCHILLA
from tests.test_cli_planner import one_line_error


def table(path, budgets, sizes=5, named=True, drop=()):
    rows = ["name,N,D,C,budget,loss" if named else "name,N,D,C,loss"]
    for C in budgets:
        center, _ = CHINCHILLA.optimal_allocation(C)
        for i, f in enumerate(np.exp(np.linspace(-1.2, 1.2, sizes))):
            if (C, i) in drop:
                continue
            N, D = center * f, C / (6 * center * f)
            budget = f",{C:.6g}" if named else ""
            rows.append(f"r,{N:.6g},{D:.6g},{6 * N * D:.6g}{budget},{CHINCHILLA.predict(N, D):.6f}")
    path.write_text("\n".join(rows) + "\n")
    return str(path)


SIX = list(np.logspace(17, 19.5, 6))


@pytest.mark.parametrize("cut", ["2e17", "5e19", "1e21"])
def test_backtest_cut_needs_three_budgets_each_side(capsys, tmp_path, cut) -> None:
    err = one_line_error(capsys, ["backtest", table(tmp_path / "r.csv", SIX), "--cut-flops", cut])
    assert "at least 3 on each side" in err


def test_one_compute_budget_only(capsys, tmp_path) -> None:
    path = table(tmp_path / "r.csv", [1e18], sizes=8)
    for command in (["fit", path], ["backtest", path], ["fit", path, "--method", "isoflop"]):
        assert "one compute budget only" in one_line_error(capsys, command)


def test_budget_with_two_sizes_is_skipped_with_a_warning(capsys, tmp_path) -> None:
    path = table(tmp_path / "r.csv", SIX, drop={(SIX[2], 0), (SIX[2], 1), (SIX[2], 4)})
    assert main(["fit", path, "--method", "isoflop", "--json"]) == 0
    captured = capsys.readouterr()
    assert f"budget {SIX[2]:.3g} FLOPs has 2 model size(s)" in captured.err
    assert json.loads(captured.out)["forecast"]["forecasts"]["isoflop"]["N_opt"] > 0


def test_no_budget_with_three_sizes_is_an_error(capsys, tmp_path) -> None:
    path = table(tmp_path / "r.csv", SIX, sizes=2)
    assert "Approach 2 needs at least 2" in one_line_error(capsys, ["fit", path, "--method", "isoflop"])


@pytest.mark.parametrize("flags, words", [
    (["--cut-fraction", "1.5"], "--cut-fraction"),
    (["--small-weight", "2"], "--small-weight"),
    (["--min-flops", "1e30"], "--min-flops"),
    (["--confidence", "1"], "--confidence"),
    (["--cut-flops", "-1"], "must be positive"),
    (["--cut-flops", "1e18", "--cut-fraction", "0.5"], "not allowed with"),
    (["--law-form", "power"], "invalid choice"),
])
def test_backtest_flags(capsys, tmp_path, flags, words) -> None:
    assert words in one_line_error(capsys, ["backtest", table(tmp_path / "r.csv", SIX), *flags])


def test_fit_json_with_a_bad_isoflop_allocation(capsys, tmp_path) -> None:
    law = tmp_path / "fit.json"
    law.write_text(json.dumps({"params": CHINCHILLA.params(), "allocation": {"exponent": 1.7, "log_coefficient": 0}}))
    assert "allocation exponent" in one_line_error(capsys, ["allocate", "--flops", "1e21", "--law", str(law)])

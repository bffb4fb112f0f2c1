"""Must-show 2: on every public dataset of published runs in tests/data/ (source and licence beside
each CSV), `scaleplan backtest` with the default cut (halfway through the budgets in log compute)
extrapolates at least 16x; the default method is no worse than the better of parametric and
isoFLOP, and its 90 % intervals cover at least 80 % of the forecasts (N_opt and losses)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.cli import main

DATA = Path(__file__).resolve().parent / "data"
SETS = sorted(p.stem for p in DATA.glob("*.csv"))


def test_at_least_three_sets() -> None:
    assert len(SETS) >= 3, SETS
    for name in SETS:
        assert (DATA / f"{name}.SOURCE.md").is_file(), f"{name}.csv has no SOURCE.md beside it"


@pytest.mark.parametrize("name", SETS)
def test_backtest_real(name, capsys) -> None:
    assert main(["backtest", str(DATA / f"{name}.csv"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["extrapolation"] >= 16
    methods = {m["method"]: m for m in result["methods"]}
    default = methods["auto"]
    rivals = [methods[m] for m in ("parametric", "isoflop") if m in methods]
    for key in ("N_opt_median_error", "loss_mean_error"):
        if default[key] is not None:
            best = min(m[key] for m in rivals if m[key] is not None)
            assert default[key] <= best + 1e-9, (key, default[key], best)
    assert default["coverage"] >= 0.8

"""Published training runs kept in tests/data for scaling-law backtests. Each set is read with the
runs reader and held to what a backtest needs: enough finished runs over at least two decades of
compute, isoFLOP slices (or, for the over-training set, a ladder of tokens per parameter), and a
SOURCE.md that records where it came from and under which licence."""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from planner.scaling.runs import Runs, read_runs

DATA = Path(__file__).resolve().parent / "data"
# Each set and the structure a backtest uses it for.
SETS = {
    "gemstones_cooldown": "isoflop",
    "datablations_single_epoch": "isoflop",
    "beyond_chinchilla": "overtraining",
}
REDISTRIBUTABLE = ("MIT", "Apache-2.0", "CC-BY-4.0", "CC0-1.0", "BSD-3-Clause")
# Runs within a factor 10**0.1 (26 %) of a group's smallest compute count as one budget when the
# source names none: the sets' grids were not all laid on exact budgets.
GROUP_DECADES = 0.1


def _table(name: str) -> list[dict[str, str]]:
    with (DATA / f"{name}.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def compute_groups(name: str, runs: Runs) -> list[np.ndarray]:
    """Indices of the runs of each compute budget: the `budget` column if the set has one, else bins."""
    rows = _table(name)
    if "budget" in rows[0]:
        budgets = np.array([float(row["budget"]) for row in rows])
        return [np.flatnonzero(budgets == b) for b in np.unique(budgets)]
    order = np.argsort(runs.C, kind="stable")
    groups, start = [[order[0]]], math.log10(runs.C[order[0]])
    for i in order[1:]:
        if math.log10(runs.C[i]) - start > GROUP_DECADES:
            groups.append([])
            start = math.log10(runs.C[i])
        groups[-1].append(i)
    return [np.array(group) for group in groups]


@pytest.mark.parametrize("name", SETS)
def test_enough_finished_runs_over_two_decades_of_compute(name):
    runs = read_runs(DATA / f"{name}.csv")
    assert len(runs) >= 40
    for column in (runs.N, runs.D, runs.loss, runs.C):
        assert np.all(np.isfinite(column)) and np.all(column > 0)
    assert math.log10(runs.C.max() / runs.C.min()) >= 2.0
    assert (DATA / f"{name}.csv").stat().st_size < 300_000


@pytest.mark.parametrize("name", SETS)
def test_optional_columns_agree_with_n_and_d(name):
    rows = _table(name)
    assert len({row["name"] for row in rows}) == len(rows), "run names repeat"
    for row in rows:
        assert float(row["C"]) == pytest.approx(6 * float(row["N"]) * float(row["D"]), rel=1e-6), row["name"]


@pytest.mark.parametrize("name", [name for name, kind in SETS.items() if kind == "isoflop"])
def test_isoflop_slices_locate_an_interior_minimum_at_the_larger_budgets(name):
    runs = read_runs(DATA / f"{name}.csv")
    sliced = [g for g in compute_groups(name, runs) if len(np.unique(runs.N[g])) >= 3]
    assert len(sliced) >= 3
    # An N_opt can be read off a slice only where its best run is neither its smallest nor its
    # largest model; ask it of the slices above the median budget, where a backtest forecasts.
    median_budget = np.median([runs.C[g].min() for g in sliced])
    interior = [g for g in sliced if runs.C[g].min() >= median_budget
                and runs.N[g].min() < runs.N[g][np.argmin(runs.loss[g])] < runs.N[g].max()]
    assert interior, "no larger budget has its loss minimum inside its range of model sizes"


@pytest.mark.parametrize("name", [name for name, kind in SETS.items() if kind == "overtraining"])
def test_overtraining_set_spans_tokens_per_parameter_at_several_sizes(name):
    runs = read_runs(DATA / f"{name}.csv")
    ratio = runs.D / runs.N
    assert math.log10(ratio.max() / ratio.min()) >= 2.0
    token_counts = [len(np.unique(runs.D[runs.N == n])) for n in np.unique(runs.N)]
    assert sum(count >= 3 for count in token_counts) >= 3


@pytest.mark.parametrize("name", SETS)
def test_source_records_origin_and_licence(name):
    text = (DATA / f"{name}.SOURCE.md").read_text()
    licence = re.search(r"^\*\*Licence: ([\w.-]+)\*\*", text, flags=re.MULTILINE)
    assert licence and licence.group(1) in REDISTRIBUTABLE
    assert re.search(r"https://github\.com/\S+, commit\s+`[0-9a-f]{40}`", text)
    for licence_file in re.findall(r"`(LICENSE-[\w.-]+\.txt)`", text):
        assert (DATA / licence_file).is_file(), licence_file


def _derive_module(name: str):
    spec = importlib.util.spec_from_file_location(name, DATA / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_datablations_derivation_keeps_single_epoch_c4_runs_only(tmp_path):
    cell = ("NAMES_TO_VAL_LOSSES = {'2b855b55bc4seed1': 2.5, '4b284b12b': 2.5, '146m14b100mdedup': 3.9,\n"
            "    '3b926b400m': 0, '1b58b88b8': 3.0, '83m20b20boscar': 3.6, '1b1100m100m': 6.6}\n"
            "TOKENS_MAP = {'100m': 0.1}\n"
            "PARAMS_MAP = {'1b1': 1.1e9, '1b5': 1.5e9, '2b8': 2.8e9, '3b9': 3.9e9, '4b2': 4.2e9, '83m': 8.3e7, '146m': 1.5e8}\n")
    notebook = tmp_path / "parametric_fit.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "source": [cell]}]}))
    out = io.StringIO()
    assert _derive_module("derive_datablations_single_epoch").derive(str(notebook), out) == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["name"], int(r["N"]), int(r["D"])) for r in rows] == [
        ("1b1100m100m", 1_100_000_000, 100_000_000),
        ("1b58b88b8", 1_500_000_000, 8_800_000_000),
        ("2b855b55bc4seed1", 2_800_000_000, 55_000_000_000),
    ]

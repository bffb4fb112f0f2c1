"""Compute budgets of a runs table: which runs share an isoFLOP budget, and cuts by budget.

A table may name each run's budget (a `budget` column); otherwise runs whose compute C = 6 N D lies
within GAP_DEX of a neighbour's share one, so a table of nominal budgets (1e18, 3e18, ...) with
slightly different achieved compute still groups as its author meant.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from planner.errors import UserError
from planner.scaling.runs import Runs

GAP_DEX = 0.04        # a 10 % gap in compute between neighbouring runs starts a new budget ...
SPAN_DEX = 0.1        # ... and so does a group that would span more than this
MIN_BUDGETS_SIDE = 3  # a backtest needs this many budgets on each side of its cut


def budget_of(runs: Runs) -> np.ndarray:
    """Each run's compute budget: the table's own, or the geometric mean of its compute group."""
    if runs.budget is not None:
        return np.asarray(runs.budget, float)
    log_C = np.log10(runs.C)
    order = np.argsort(log_C, kind="stable")
    labels = np.empty(len(runs))
    group = [order[0]]
    for previous, current in zip(order[:-1], order[1:]):
        if log_C[current] - log_C[previous] > GAP_DEX or log_C[current] - log_C[group[0]] > SPAN_DEX:
            labels[group] = 10.0 ** log_C[group].mean()
            group = []
        group.append(current)
    labels[group] = 10.0 ** log_C[group].mean()
    return labels


def labelled(runs: Runs) -> Runs:
    """The runs with their budgets written in, so that subsets keep the grouping of the whole table."""
    return Runs(runs.N, runs.D, runs.loss, runs.source, budget_of(runs))


def budgets(runs: Runs) -> np.ndarray:
    """The distinct budgets, smallest first."""
    return np.unique(budget_of(runs))


def require_budgets(runs: Runs, what: str = "the runs") -> np.ndarray:
    found = budgets(runs)
    if len(found) < 2:
        raise UserError(f"{what} hold one compute budget only ({found[0]:.3g} FLOPs): a scaling law needs runs "
                        f"at several budgets (ideally 3 or more, spread over 2 decades)")
    return found


def split_at(runs: Runs, cut_flops: Optional[float] = None, cut_fraction: Optional[float] = None,
             min_flops: Optional[float] = None) -> tuple[Runs, Runs, float]:
    """(runs at budgets <= cut, runs at larger budgets, cut). `cut_fraction` F puts the cut at the
    budget F of the way through the budgets in log compute. At least MIN_BUDGETS_SIDE on each side."""
    found = require_budgets(runs)
    label = budget_of(runs)
    if cut_flops is not None and cut_fraction is not None:
        raise UserError("give --cut-flops or --cut-fraction, not both")
    if cut_flops is None:
        fraction = 0.5 if cut_fraction is None else cut_fraction
        if not 0 < fraction < 1:
            raise UserError(f"--cut-fraction must lie between 0 and 1, got {fraction:g}")
        log_b = np.log(found)
        target = log_b[0] + fraction * (log_b[-1] - log_b[0])
        cut_flops = float(found[np.flatnonzero(log_b <= target + 1e-9)[-1]])
    if not cut_flops > 0:
        raise UserError(f"--cut-flops must be positive, got {cut_flops:g}")
    floor = 0.0 if min_flops is None else min_flops
    below = int(np.sum((found <= cut_flops * (1 + 1e-9)) & (found >= floor)))
    above = int(np.sum(found > cut_flops * (1 + 1e-9)))
    if below < MIN_BUDGETS_SIDE or above < MIN_BUDGETS_SIDE:
        floor_text = f" at or above --min-flops {floor:.3g}" if floor > 0 else ""
        raise UserError(f"a cut at {cut_flops:.3g} FLOPs leaves {below} budget(s){floor_text} to fit and {above} "
                        f"to forecast; "
                        f"a backtest needs at least {MIN_BUDGETS_SIDE} on each side (budgets: "
                        f"{', '.join(f'{b:.2g}' for b in found)})")
    inside = label <= cut_flops * (1 + 1e-9)
    runs = labelled(runs)
    return runs.subset(np.flatnonzero(inside & (label >= floor))), runs.subset(np.flatnonzero(~inside)), cut_flops


def at_least(runs: Runs, min_flops: Optional[float]) -> Runs:
    """Runs at budgets of at least `min_flops` (the remedy for off-trend small runs)."""
    if min_flops is None:
        return runs
    if not min_flops > 0:
        raise UserError(f"--min-flops must be positive, got {min_flops:g}")
    kept = labelled(runs).subset(np.flatnonzero(budget_of(runs) >= min_flops * (1 - 1e-9)))
    if len(kept) < 5:
        raise UserError(f"--min-flops {min_flops:.3g} leaves {len(kept)} runs; the law needs at least 5")
    return kept

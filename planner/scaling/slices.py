"""IsoFLOP slices: the (model size, loss) points at one compute level that Approach 2 fits a
parabola to. A table that names budgets gives them directly. Otherwise runs that share a compute
group (within 0.1 decade) form a slice, and where a model size was trained for several token counts
(checkpoints, cooldowns, a tokens-per-parameter sweep) its loss at a compute level between two of
its runs is interpolated, linearly in log loss against log compute (Chinchilla's Approach 1 reads
the same envelope from training curves). Levels lie on a 0.25-decade grid.

A slice point's log loss is a fixed linear map of the runs' log losses (`weights`), so slices of many
repetitions, or of bootstrap draws, are one matrix product.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.scaling.law import FLOPS_PER_PARAM_TOKEN

GRID_DEX = 0.25       # interpolated levels: 4 per decade
NEAR_DEX = 0.02       # a run this close to a level stands for that size there
MIN_SIZES = 3


@dataclass(frozen=True)
class Slices:
    levels: np.ndarray       # (L,) compute of each slice
    N: np.ndarray            # (q,) model size of each slice point
    level: np.ndarray        # (q,) index into levels
    weights: np.ndarray      # (q, n) point log loss = weights @ run log losses
    groups: list             # per level, the indices of its points

    def log_loss(self, run_log_loss: np.ndarray) -> np.ndarray:
        """(R, q) slice-point log losses from (R, n) run log losses."""
        return run_log_loss @ self.weights.T

    def level_weights(self, run_weights: np.ndarray) -> np.ndarray:
        """(R, L): a level counts as much as the least-weighted run it is made of."""
        out = np.ones((run_weights.shape[0], len(self.levels)))
        for k, members in enumerate(self.groups):
            used = np.flatnonzero(self.weights[members].sum(0) > 0)
            out[:, k] = run_weights[:, used].min(axis=1)
        return out


def _sizes(N: np.ndarray) -> int:
    return len(np.unique(np.round(np.log(N), 6)))


def build(N: np.ndarray, D: np.ndarray, label: np.ndarray, named: bool) -> Slices:
    """The slices of one runs table (label: each run's budget; named: the table gave them)."""
    n = len(N)
    log_C = np.log10(FLOPS_PER_PARAM_TOKEN * N * D)
    rows, sizes, level_of, levels = [], [], [], []

    def add(level: float, points: list[tuple[float, np.ndarray]]) -> None:
        if _sizes(np.array([p[0] for p in points])) >= MIN_SIZES:
            levels.append(level)
            for size, row in points:
                rows.append(row)
                sizes.append(size)
                level_of.append(len(levels) - 1)

    for b in np.unique(label):
        members = np.flatnonzero(label == b)
        add(float(b), [(N[i], np.eye(n)[i]) for i in members])
    if not named:
        taken = np.log10(np.array(levels)) if levels else np.zeros(0)
        for grid in np.arange(np.ceil(log_C.min() / GRID_DEX), np.floor(log_C.max() / GRID_DEX) + 1) * GRID_DEX:
            if taken.size and np.min(np.abs(taken - grid)) < GRID_DEX / 2:
                continue
            points = []
            for size in np.unique(N):
                own = np.flatnonzero(N == size)
                own = own[np.argsort(log_C[own])]
                x = log_C[own]
                row = np.zeros(n)
                near = np.flatnonzero(np.abs(x - grid) <= NEAR_DEX)
                if near.size:
                    row[own[near[0]]] = 1.0
                elif len(own) >= 2 and x[0] < grid < x[-1]:
                    j = int(np.searchsorted(x, grid))
                    t = (grid - x[j - 1]) / (x[j] - x[j - 1])
                    row[own[j - 1]], row[own[j]] = 1.0 - t, t
                else:
                    continue
                points.append((size, row))
            add(10.0 ** grid, points)
    order = np.argsort(levels)
    rank = np.empty(len(levels), int)
    rank[order] = np.arange(len(levels))
    level = rank[np.array(level_of, int)] if level_of else np.zeros(0, int)
    groups = [np.flatnonzero(level == k) for k in range(len(levels))]
    return Slices(np.array(levels, float)[order], np.array(sizes, float), level,
                  np.array(rows).reshape(-1, n), groups)

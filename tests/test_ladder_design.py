"""Must-show 1: the designed seed ladder pins N_opt at 100x its largest budget far better than
log-uniform random placement of the same number of runs and the same compute."""
from __future__ import annotations

import numpy as np
import pytest

from planner.errors import UserError
from planner.scaling.ladder import (LOGUNIFORM_SPREAD, LOGUNIFORM_TOKENS_PER_PARAM, Design, design_ladder,
                                    largest_budget, place, score)
from planner.scaling.law import CHINCHILLA

TOTAL_FLOPS = 1e20
RUNS = 20
NOISE = 0.01


def test_ladder_design() -> None:
    # The search simulates 32 repetitions per candidate (seed 0); the verdict uses 50 fresh ones (seed 1).
    designed = design_ladder(CHINCHILLA, TOTAL_FLOPS, RUNS, NOISE).best.design
    target = 100.0 * largest_budget(designed, TOTAL_FLOPS)
    ours = score(designed, CHINCHILLA, TOTAL_FLOPS, target, NOISE, repetitions=50, seed=1)
    reference = score(Design("loguniform", RUNS, 1, LOGUNIFORM_SPREAD, LOGUNIFORM_TOKENS_PER_PARAM), CHINCHILLA,
                      TOTAL_FLOPS, target, NOISE, repetitions=50, seed=1)
    # Measured: the search chooses 2 slices x 10 runs 1000x apart in compute, 1-400 tokens/param per
    # slice; its median N_opt error is 10.0 % (bias +2.7 %, scatter 40 %), log-uniform placement's 47.8 %:
    # 0.21x.
    print(f"designed: {designed.describe()}: median {ours.median_error:.3f}, bias {ours.bias:+.3f}, "
          f"scatter {ours.scatter:.3f}; log-uniform: median {reference.median_error:.3f}")
    assert ours.median_error <= reference.median_error / 3.0
    assert np.all(np.isfinite(ours.log_errors))


def test_placement_spends_the_budget_on_the_runs() -> None:
    design = Design("isoflop", 12, 3, 10.0, (1.0, 400.0))
    placement = place(design, 1e18)
    assert len(placement.N) == 12
    assert placement.C.sum() == pytest.approx(1e18)
    slices = [placement.C[placement.slice_index == s] for s in range(3)]
    assert all(np.allclose(c, c[0]) for c in slices)                 # one budget per slice
    assert slices[2][0] / slices[0][0] == pytest.approx(10.0)        # spread
    ratio = placement.D / placement.N
    assert ratio.min() == pytest.approx(1.0) and ratio.max() == pytest.approx(400.0)
    floored = place(design, 1e18, min_params=1e7)
    assert floored.N.min() >= 1e7 and floored.C.sum() == pytest.approx(1e18)


def test_bad_designs_are_user_errors() -> None:
    with pytest.raises(UserError, match="at least 5"):
        Design("isoflop", 4)
    with pytest.raises(UserError, match="unknown design"):
        Design("grid", 20)
    with pytest.raises(UserError, match="slices"):
        Design("isoflop", 8, 5)

"""Budget units and the data-constrained allocation (Muennighoff et al. 2023)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from planner.scaling.allocate import PF_DAY, SAFE_EPOCHS, allocate, budget_flops, effective_tokens
from planner.errors import UserError
from planner.hardware import CATALOG
from planner.scaling.law import CHINCHILLA, TOKENS20


def test_budget_units() -> None:
    assert budget_flops(flops=3e21) == 3e21
    assert budget_flops(pf_days=2) == pytest.approx(2 * 1e15 * 86400)
    expected = 1000 * 3600 * CATALOG["h100-sxm"].peak_bf16 * 0.4
    assert budget_flops(gpu_hours=1000, gpu="h100-sxm", mfu=0.4) == pytest.approx(expected)
    assert PF_DAY == 8.64e19


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly once"),
    ({"flops": 1e20, "pf_days": 1}, "exactly once"),
    ({"gpu_hours": 10, "mfu": 0.4}, "needs --gpu"),
    ({"gpu_hours": 10, "gpu": "tpu-v9", "mfu": 0.4}, "unknown --gpu"),
    ({"gpu_hours": 10, "gpu": "a100-80gb", "mfu": 1.5}, "--mfu"),
    ({"flops": -1.0}, "positive"),
])
def test_bad_budgets(kwargs, message) -> None:
    with pytest.raises(UserError, match=message):
        budget_flops(**kwargs)


def test_effective_tokens_formula() -> None:
    U = 1e9
    assert effective_tokens(0.5e9, U) == 0.5e9
    # 4 epochs: R = 3 repeats, worth U (1 + 15.39 (1 - e^{-3/15.39}))
    assert effective_tokens(4e9, U) == pytest.approx(U * (1 + 15.39 * (1 - math.exp(-3 / 15.39))))
    assert effective_tokens(1e12, U) <= U * (1 + 15.39)    # saturates at U (1 + R*)


def test_plentiful_data_changes_nothing() -> None:
    plain = allocate(CHINCHILLA, 1e22)
    constrained = allocate(CHINCHILLA, 1e22, unique_tokens=10 * plain.D)
    assert constrained.N == pytest.approx(plain.N) and constrained.warnings == []


def test_scarce_data_optimum_is_the_true_minimum_and_warns() -> None:
    C, U = 1e23, 5e10
    result = allocate(CHINCHILLA, C, unique_tokens=U)
    # brute force over N on a fine log grid
    N_values = np.geomspace(1e8, 1e13, 20001)
    losses = [CHINCHILLA.predict(n, effective_tokens(C / (6 * n), U)) for n in N_values]
    best = N_values[int(np.argmin(losses))]
    assert result.N == pytest.approx(best, rel=2e-3)
    assert result.N > allocate(CHINCHILLA, C).N       # scarce data: a bigger model, fewer epochs
    assert result.epochs > SAFE_EPOCHS and "epochs" in result.warnings[0]


def test_fixed_ratio_preset_reports_epochs() -> None:
    result = allocate(TOKENS20, 1e22, unique_tokens=1e9)
    assert result.tokens_per_param == pytest.approx(20.0)
    assert result.epochs == pytest.approx(result.D / 1e9) and result.warnings

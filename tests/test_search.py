"""Layout search: the enumeration against brute force, vectorised evaluation against one-at-a-time,
ranking order, speed, and the one-line errors of impossible requests."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from planner.errors import UserError
from planner.hardware import CATALOG
from planner.model_spec import ModelSpec
from planner.layout.inputs import PlanInputs
from planner.layout.search import (SPEED_TOLERANCE, describe, enumerate_layouts, evaluate_layout, parse_layout,
                            search)

LLAMA7B = ModelSpec("llama", 32, 4096, 32, 32000, 4096)
LLAMA70B = ModelSpec("llama", 80, 8192, 64, 32000, 4096, n_kv_heads=8, ffn_hidden=28672)


def test_enumeration_equals_brute_force_splits():
    inputs = PlanInputs(LLAMA70B, CATALOG["h100-sxm"], 96, 480)
    layouts, rejected = enumerate_layouts(inputs)
    found = set(zip(layouts.dp.tolist(), layouts.tp.tolist(), layouts.pp.tolist()))
    expected = {(dp, tp, pp) for dp, tp, pp in itertools.product(range(1, 97), repeat=3)
                if dp * tp * pp == 96 and tp <= 8 and 64 % tp == 0 and 8 % tp == 0 and pp <= 80
                and 480 % dp == 0}
    assert found == expected
    assert rejected   # some splits were pruned, and counted
    # every candidate's micro-batch divides its share of the batch; vpp divides the layers per stage
    assert np.all((480 // layouts.dp) % layouts.mb == 0)
    assert np.all((layouts.vpp == 1) | (80 % (layouts.pp * layouts.vpp) == 0))
    assert np.all(~layouts.sp | (layouts.tp > 1))


def test_vectorised_evaluation_equals_one_layout_at_a_time():
    inputs = PlanInputs(LLAMA7B, CATALOG["a100-80gb"], 32, 256, memory_model="detailed")
    layouts, _ = enumerate_layouts(inputs)
    result = search(inputs)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(layouts), size=25, replace=False):
        single = evaluate_layout(inputs, layouts.layout(int(i)))
        for key in ("detailed", "rule24"):
            assert float(single.memory[key][0]) == pytest.approx(float(result.memory[key][i]))
        for key in ("step_time_s", "mfu"):
            assert float(single.cost[key][0]) == pytest.approx(float(result.cost[key][i]))


def test_ranking_best_first_among_fitting():
    inputs = PlanInputs(LLAMA7B, CATALOG["h100-sxm"], 64, 512)
    result = search(inputs)
    assert np.all(result.memory["fits"][result.ranked])
    agrees = result.memory["fits_detailed"][result.ranked]
    assert np.all(np.diff(agrees.astype(int)) <= 0)      # layouts both models fit come first
    speed = result.cost["tokens_per_s"][result.ranked][agrees]
    memory = result.memory["detailed"][result.ranked][agrees]
    # best first: nothing later is faster than anything earlier by more than the tie tolerance;
    # layouts within the tolerance of the fastest come first, least memory first among them
    assert np.all(speed[1:] <= np.minimum.accumulate(speed)[:-1] * (1 + SPEED_TOLERANCE) ** 2)
    tied = speed >= speed.max() / (1 + SPEED_TOLERANCE)
    assert np.all(tied[: tied.sum()])
    assert np.all(np.diff(memory[: tied.sum()]) >= 0)
    assert set(result.ranked.tolist()) | set(result.oom.tolist()) == set(range(result.n_candidates))


def test_detailed_feasibility_is_stricter_for_big_micro_batches():
    rule = search(PlanInputs(LLAMA7B, CATALOG["h100-sxm"], 8, 128, memory_model="rule24"))
    detailed = search(PlanInputs(LLAMA7B, CATALOG["h100-sxm"], 8, 128, memory_model="detailed"))
    best = detailed.ranked[0]
    assert detailed.memory["detailed"][best] <= CATALOG["h100-sxm"].hbm_bytes
    assert len(detailed.ranked) != len(rule.ranked)


def test_4096_gpus_searched_in_under_two_seconds():
    inputs = PlanInputs(LLAMA70B, CATALOG["h100-sxm"], 4096, 2048)
    search(inputs)                    # warm numpy up
    start = time.perf_counter()
    result = search(inputs)
    assert time.perf_counter() - start < 2.0
    assert len(result.ranked) > 0


def test_nothing_fits_is_one_line_naming_what_to_change():
    with pytest.raises(UserError, match="no layout fits.*--gpus"):
        search(PlanInputs(LLAMA70B, CATALOG["a10"], 2, 8))


def test_no_split_at_all():
    with pytest.raises(UserError, match="no dp × cp × tp × pp split of 7 GPUs"):
        search(PlanInputs(LLAMA7B, CATALOG["h100-sxm"], 7, 4))


@pytest.mark.parametrize("text", ["dp=8,tp=8,pp=1,zero=1,mb=2,recompute=selective,sp=false",
                                  "dp=4,tp=2,pp=8,zero=0,mb=1,recompute=full,sp=true,schedule=interleaved,vpp=2",
                                  "dp=2,tp=4,pp=8,zero=3,mb=4,recompute=none,sp=false,schedule=gpipe"])
def test_layout_flag_round_trips(text):
    assert describe(parse_layout(text)) == text


@pytest.mark.parametrize("text,match", [("dp=8,foo=1", "key one of"), ("tp=x", "positive integer"),
                                        ("zero=5", "0, 1, 2 or 3"), ("recompute=some", "recompute"),
                                        ("schedule=zigzag", "schedule"), ("sp=maybe", "true or false")])
def test_bad_layout_text(text, match):
    with pytest.raises(UserError, match=match):
        parse_layout(text, 8)


def test_evaluate_layout_names_every_problem():
    inputs = PlanInputs(LLAMA7B, CATALOG["h100-sxm"], 64, 512)
    with pytest.raises(UserError, match="tp=3 does not divide the 32 attention heads"):
        evaluate_layout(inputs, parse_layout("dp=2,tp=3,pp=1", 64))
    with pytest.raises(UserError, match="spans more than one node"):
        evaluate_layout(inputs, parse_layout("dp=4,tp=16,pp=1", 64))
    with pytest.raises(UserError, match="not divisible by micro_batch 16 × data-parallel size 64"):
        evaluate_layout(inputs, parse_layout("dp=64,mb=16", 64))


def test_planner_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, planner.layout.search, planner.layout.report, planner.layout.plots, planner.scaling.shape, "
            "planner.hardware, launch.commands.plan, launch.layout_inputs; assert 'torch' not in sys.modules, 'torch imported'")
    from tests.conftest import REPO

    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_interleaved_needs_micro_batches_a_multiple_of_pp():
    inputs = PlanInputs(LLAMA7B, CATALOG["h100-sxm"], 64, 512)
    with pytest.raises(UserError, match=r"pp=4 ranks \(interleaved\) needs a multiple of 4 micro-batches per step, not 2"):
        evaluate_layout(inputs, parse_layout("dp=8,tp=2,pp=4,mb=32,schedule=interleaved,vpp=2", 64))
    evaluate_layout(inputs, parse_layout("dp=8,tp=2,pp=4,mb=4,schedule=interleaved,vpp=2", 64))

"""The memory model's pieces against independent computations: the 24-byte rule, parameters per
pipeline stage, Korthikanti et al.'s per-layer formulas, micro-batches in flight of a simulated
1F1B / interleaved schedule, and the sharding of model states."""
from __future__ import annotations

import numpy as np
import pytest

from parallel.layout import Layout
from planner.hardware import CATALOG
from planner.layout.candidates import LayoutArrays
from planner.layout.memory import PARTS, evaluate_memory, per_stage_breakdown, stage_memory, total
from planner.layout.activations import layer_activation_bytes, micro_batches_in_flight
from planner.layout.memory import rule24_breakdown, rule24_bytes
from planner.layout.model_states import detailed_model_states, stage_params
from planner.model_spec import ModelSpec, count_params

GPT = ModelSpec("gpt", 24, 2048, 16, 50304, 2048)
LLAMA = ModelSpec("llama", 32, 4096, 32, 32000, 4096, n_kv_heads=8)
TIED = ModelSpec("gpt", 8, 512, 8, 1000, 256, tie_embeddings=True, bias=True)


@pytest.mark.parametrize("zero,expected", [(0, 24.0), (1, 16 + 8 / 8), (2, 12 + 12 / 8), (3, 8 + 16 / 8)])
def test_rule24_per_parameter_by_stage(zero, expected):
    n = 1e9
    assert rule24_bytes(n, 1, 1, 8, zero) == pytest.approx(n * expected)
    # tp × pp divide everything; activations are never sharded over dp
    parts = rule24_breakdown(n, 2, 4, 8, zero)
    assert parts["activations"] == pytest.approx(n * 8 / 8)
    assert sum(parts.values()) == pytest.approx(n * expected / 8)


@pytest.mark.parametrize("spec", [GPT, LLAMA, TIED], ids=["gpt", "llama", "tied-bias"])
@pytest.mark.parametrize("pp", [1, 2, 4, 8])
def test_stage_params_add_up_to_the_model(spec, pp):
    held = [float(stage_params(spec, 1, pp, s)) for s in range(pp)]
    duplicate_head = spec.vocab_size * spec.d_model if spec.tie_embeddings and pp > 1 else 0
    assert sum(held) == pytest.approx(count_params(spec) + duplicate_head)


def test_tensor_parallel_splits_matrices_not_norms():
    # replicated on every TP rank: two norms per layer, the final norm, the learned positions
    replicated = GPT.n_layers * 2 * GPT.d_model + GPT.d_model + GPT.seq_len * GPT.d_model
    for tp in (2, 4, 8):
        held = float(stage_params(GPT, tp, 1, 0))
        assert held == pytest.approx((count_params(GPT) - replicated) / tp + replicated)


def test_korthikanti_formula_for_16bit_gpt_without_dropout():
    """Korthikanti et al. 2022 eq. for TP without SP: s·b·h·(10 + 24/t), with SP: s·b·h·34/t, less
    their two 1-byte dropout masks outside (2) and one inside the TP region (none here, no
    dropout: 10 → 8); plus per token the fp32 norm statistics (16 B) and the fp32 log-sum-exp.
    Under lean SP (the default) the column-parallel matmuls after each norm save its output as the
    sequence shard and gather it again in backward, as Megatron does; with lean_sp=false they keep
    the all-gathered input, so of the 8·s·b·h outside, the norms' outputs (4·s·b·h) stay whole."""
    s, b, h, a = GPT.seq_len, 2, GPT.d_model, GPT.n_heads
    stats, lse = 2 * 8, 4 * a
    for tp in (1, 2, 4, 8):
        for sp, lean in ((False, True), (True, True), (True, False)):
            ours = float(layer_activation_bytes(GPT, b, tp, sp, 0, 2, 2, lean_sp=lean)["stored"])
            outside = ((4 * s * b * h + stats * s * b) / (tp if sp else 1)
                       + 4 * s * b * h / (tp if sp and lean else 1))
            inside = (24 * s * b * h + lse * s * b) / tp
            assert ours == pytest.approx(outside + inside)
    # full recomputation keeps the layer input only (2sbh, / t with SP)
    assert float(layer_activation_bytes(GPT, b, 4, True, 2, 2, 2)["stored"]) == pytest.approx(2 * s * b * h / 4)
    # math attention adds the softmax output a·s² per sequence (2 bytes); selective drops it again
    math = float(layer_activation_bytes(GPT, b, 1, False, 0, 2, 2, "math")["stored"])
    selective = float(layer_activation_bytes(GPT, b, 1, False, 1, 2, 2, "math")["stored"])
    flash = float(layer_activation_bytes(GPT, b, 1, False, 0, 2, 2)["stored"])
    assert math - flash == pytest.approx(2 * a * s * s * b)
    assert selective == pytest.approx(flash)


def simulate_peak_in_flight(pp: int, m: int, schedule: str, vpp: int = 1) -> list[float]:
    """Walk a pipeline schedule op by op and record, per stage, the most (micro-batch, chunk)
    activations held at once, in units of a micro-batch through the stage's layers.

    1F1B: stage i does min(p − i − 1, m) warm-up forwards, then alternates forward/backward.
    Interleaved (Narayanan et al. 2021, Megatron's order): warm-up 2(p − i − 1) + (v − 1)p chunk
    forwards (all of them if that exceeds m·v), then one forward and one backward per step.
    GPipe: all forwards, then all backwards.
    """
    peaks = []
    for stage in range(pp):
        chunks = m * vpp
        if schedule == "gpipe":
            warmup = chunks
        elif schedule == "1f1b":
            warmup = min(pp - stage - 1, m)
        else:
            warmup = min(2 * (pp - stage - 1) + (vpp - 1) * pp, chunks)
        held = peak = 0
        forwards = backwards = 0
        for _ in range(warmup):
            forwards += 1
            held += 1
            peak = max(peak, held)
        while backwards < chunks:
            if forwards < chunks:
                forwards += 1
                held += 1
                peak = max(peak, held)
            backwards += 1
            held -= 1
        peaks.append(peak / vpp)
    return peaks


@pytest.mark.parametrize("pp,m,schedule,vpp", [
    (4, 8, "1f1b", 1), (4, 2, "1f1b", 1), (8, 16, "1f1b", 1), (4, 8, "gpipe", 1),
    (4, 8, "interleaved", 2), (4, 16, "interleaved", 4), (8, 32, "interleaved", 2)])
def test_in_flight_matches_simulated_schedule(pp, m, schedule, vpp):
    code = {"gpipe": 0, "1f1b": 1, "interleaved": 2}[schedule]
    ours = [float(micro_batches_in_flight(s, pp, m, code, vpp)) for s in range(pp)]
    assert ours == pytest.approx(simulate_peak_in_flight(pp, m, schedule, vpp))


def test_korthikanti_interleaved_first_stage_factor():
    """First stage of interleaved 1F1B holds p·(1 + (p − 1)/(p·v)) micro-batches' worth."""
    for pp, vpp in ((4, 2), (8, 4), (16, 2)):
        assert float(micro_batches_in_flight(0, pp, 10 * pp, 2, vpp)) == pytest.approx(pp * (1 + (pp - 1) / (pp * vpp)))


def test_states_shard_by_stage():
    held, shard = 1e9, 8
    ds = {z: detailed_model_states(held, shard, 2, z, "bf16", 1e7) for z in range(4)}
    # DeepSpeed bf16, stage 0: 2 (16-bit weights) + 2 (16-bit grads) + 4 (fp32 grads) + 12 (master +
    # moments); stages 1-2: 16-bit weights + 16-bit and fp32 gradient partitions + 12 sharded; stage 3:
    # all sharded
    assert float(ds[0]["params"] + ds[0]["gradients"] + ds[0]["optimizer"]) == pytest.approx(20 * held)
    assert float(ds[1]["params"] + ds[1]["gradients"] + ds[1]["optimizer"]) == pytest.approx((2 + 18 / 8) * held)
    assert float(ds[2]["params"] + ds[2]["gradients"] + ds[2]["optimizer"]) == pytest.approx((2 + 18 / 8) * held)
    assert float(ds[3]["params"] + ds[3]["gradients"] + ds[3]["optimizer"]) == pytest.approx(20 / 8 * held)
    ddp = detailed_model_states(held, 1, 0, 0, "bf16", 1e7)
    assert float(ddp["params"] + ddp["gradients"] + ddp["optimizer"]) == pytest.approx(16 * held)
    assert float(ddp["compute_copies"]) == pytest.approx(2 * held)
    fsdp = detailed_model_states(held, shard, 1, 3, "bf16", 1e7)
    assert float(fsdp["params"] + fsdp["gradients"] + fsdp["optimizer"]) == pytest.approx(16 * held / 8)
    assert float(fsdp["buffers"]) == pytest.approx(2 * 1e7 * 2 + 4 * 1e7)


def _layouts(*layouts, backend="auto"):
    return LayoutArrays.from_layouts(list(layouts), backend)


def test_peak_stage_and_breakdown_are_consistent():
    inputs_spec = LLAMA
    from planner.layout.inputs import PlanInputs

    inputs = PlanInputs(inputs_spec, CATALOG["h100-sxm"], 64, 256)
    layouts = _layouts(Layout(dp_replicate=4, tp=4, pp=4, micro_batch=1),
                       Layout(dp_shard=16, tp=4, zero_stage=3, micro_batch=2, recompute="full"),
                       Layout(dp_replicate=2, tp=8, pp=4, micro_batch=2, pp_schedule="gpipe"))
    result = evaluate_memory(inputs, layouts)
    for i in range(len(layouts)):
        stages = per_stage_breakdown(inputs, layouts, i)
        totals = [sum(s[p] for p in PARTS) for s in stages]
        assert float(result["detailed"][i]) == pytest.approx(max(totals[0], totals[-1]))
        assert max(totals) == pytest.approx(max(totals[0], totals[-1]))   # first or last is the peak
        assert sum(float(result["breakdown"][p][i]) for p in PARTS) == pytest.approx(float(result["detailed"][i]))
        assert float(result["rule24"][i]) == pytest.approx(rule24_bytes(
            count_params(LLAMA), layouts.tp[i], layouts.pp[i], layouts.dp[i], layouts.zero[i]))
    # the reserve is the context plus the fragmentation share of everything allocated
    parts = stage_memory(inputs, layouts, 0)
    allocated = total(parts) - parts["reserve"]
    assert np.allclose(parts["reserve"], inputs.context_bytes + inputs.fragmentation * allocated)


def test_feasibility_follows_the_chosen_model():
    from planner.layout.inputs import PlanInputs

    layouts = _layouts(Layout(dp_replicate=8, micro_batch=16))
    loose = PlanInputs(LLAMA, CATALOG["h100-sxm"], 8, 128, memory_model="rule24")
    strict = PlanInputs(LLAMA, CATALOG["h100-sxm"], 8, 128, memory_model="detailed")
    for inputs in (loose, strict):
        memory = evaluate_memory(inputs, layouts)
        key = inputs.memory_model
        assert bool(memory["fits"][0]) == bool(memory[key][0] <= CATALOG["h100-sxm"].hbm_bytes)

"""Memory per GPU and per pipeline stage: the `rule24` and `detailed` models side by side.

`detailed` = model states (model_states.py) + activations (activations.py) for the micro-batches
a stage holds in flight + logits + communication buffers + a reserve for the CUDA context and
fragmentation. The peak over pipeline stages decides: the first stage holds the most micro-batches
(and the embedding), the last the output head and the logits.
"""
from __future__ import annotations

import numpy as np

from planner.layout.candidates import LayoutArrays
from planner.layout.activations import (embedding_bytes, head_bytes, korthikanti_layer_bytes,
                                        layer_activation_bytes, logits_bytes, micro_batches_in_flight)
from planner.layout.model_states import (compute_bytes, deepspeed_accounting_states, detailed_model_states,
                                   largest_layer_params, layer_params_per_tp_rank,
                                   matmul_params_on_stage, stage_params)
from planner.model_spec import count_params
from planner.layout.inputs import PlanInputs
from planner.layout.stages import blocks_on_rank, peak_candidate_ranks

# The 24-bytes-per-parameter rule of thumb, sharded. Mixed-precision Adam holds 16 bytes of model
# states per parameter (Rajbhandari et al. 2020, ZeRO: fp32 weights 4, gradients 4, two Adam moments
# 8); the rule adds 8 bytes per parameter for activations and temporaries. Each part is divided by the
# data-parallel size where the sharding stage shards it (ZeRO-1: optimizer; ZeRO-2: + gradients;
# ZeRO-3/FSDP: + weights), and the parameters a GPU holds are the model's divided by TP × PP.
BYTES_PER_PARAM = {"weights": 4.0, "gradients": 4.0, "optimizer": 8.0, "activations": 8.0}
# The sharding stage from which each part is divided by the data-parallel size (never for activations).
SHARDED_FROM_STAGE = {"weights": 3, "gradients": 2, "optimizer": 1, "activations": 99}


def rule24_breakdown(total_params: float, tp, pp, dp, zero_stage) -> dict[str, np.ndarray]:
    """Bytes per GPU of each part under the 24-byte rule (arrays broadcast over layouts)."""
    tp, pp, dp, zero_stage = (np.asarray(x) for x in (tp, pp, dp, zero_stage))
    held = total_params / (tp * pp)
    return {part: held * per_param / np.where(zero_stage >= SHARDED_FROM_STAGE[part], dp, 1)
            for part, per_param in BYTES_PER_PARAM.items()}


def rule24_bytes(total_params: float, tp, pp, dp, zero_stage) -> np.ndarray:
    """Total bytes per GPU under the 24-byte rule."""
    return sum(rule24_breakdown(total_params, tp, pp, dp, zero_stage).values())

PARTS = ("weights", "gradients", "optimizer", "activations", "logits", "buffers", "reserve")


def residual_bytes(precision: str, backend) -> np.ndarray:
    """Bytes per element of the residual stream: fp32 under autocast with fp32 parameters (DDP),
    else the compute dtype."""
    mixed = precision != "fp32"
    return np.where(mixed & (np.asarray(backend) != 0), 2.0, 4.0)


def micro_batches_per_step(inputs: PlanInputs, layouts: LayoutArrays) -> np.ndarray:
    return inputs.global_batch / (layouts.dp * layouts.mb)


def stage_memory(inputs: PlanInputs, layouts: LayoutArrays, stage) -> dict[str, np.ndarray]:
    """Detailed bytes per GPU of pipeline rank `stage` (array or int) for every layout, by part
    (PARTS), plus `model_state_tensors` (parameter + gradient + optimizer tensors, what a
    measurement of one rank after a step sees). The rank holds the blocks the layout's cut gives it
    (stages.blocks_on_rank). Context parallelism divides every per-token tensor by cp."""
    spec, x = inputs.spec, layouts
    stage = np.broadcast_to(np.asarray(stage), x.dp.shape)
    blocks = blocks_on_rank(spec.n_layers, x, stage)
    held = stage_params(spec, x.tp, x.pp, stage, blocks)
    layer_held = layer_params_per_tp_rank(spec, x.tp)
    if inputs.accounting == "deepspeed":
        states = deepspeed_accounting_states(held, x.shard, x.zero, largest_layer_params(spec) / x.tp)
    else:
        states = detailed_model_states(held, x.shard, x.backend, x.zero, inputs.precision, layer_held,
                                       matmul_params_on_stage(spec, x.tp, x.pp, stage, blocks))

    act = compute_bytes(inputs.precision)
    res = residual_bytes(inputs.precision, x.backend)
    n_micro = micro_batches_per_step(inputs, x)
    in_flight = micro_batches_in_flight(stage, x.pp, n_micro, x.schedule, x.vpp)
    first, last = stage == 0, stage == x.pp - 1
    logits_held = np.where((x.schedule == 0) & (x.pp > 1), n_micro, 1.0)  # GPipe: all m at the end

    if inputs.accounting == "megatron":
        layer = korthikanti_layer_bytes(spec, x.mb, x.tp, x.sp, x.recompute, x.cp)
    else:
        layer = layer_activation_bytes(spec, x.mb, x.tp, x.sp, x.recompute, act, res, inputs.attention,
                                       x.cp, x.lean_sp)
    local_sequences = x.mb / x.cp   # the tokens a rank holds, in sequences: each holds 1/cp of them
    activations = (in_flight * blocks * layer["stored"] + layer["recompute_peak"]
                   + np.where(first, in_flight * embedding_bytes(spec, local_sequences), 0.0)
                   + np.where(last, logits_held * head_bytes(spec, local_sequences, x.tp, x.sp, act, res,
                                                             x.lean_sp), 0.0))
    logits = logits_bytes(spec, local_sequences, x.tp, act)
    logits_total = np.where(last, logits_held * logits["saved"] + logits["transient"], 0.0)

    tokens = local_sequences * spec.seq_len
    tp_buffer = np.where(x.tp > 1, tokens * spec.d_model * act, 0.0)      # gathered layer input
    pp_buffer = np.where(x.pp > 1, 2 * tokens * spec.d_model * act / np.where(x.sp, x.tp, 1), 0.0)
    parts = {
        "weights": states["params"] + states["compute_copies"],
        "gradients": states["gradients"],
        "optimizer": states["optimizer"],
        "activations": activations,
        "logits": logits_total,
        "buffers": states["buffers"] + tp_buffer + pp_buffer,
    }
    allocated = sum(parts.values())
    parts["reserve"] = inputs.context_bytes + inputs.fragmentation * allocated
    parts["model_state_tensors"] = states["params"] + states["gradients"] + states["optimizer"]
    return parts


def total(parts: dict[str, np.ndarray]) -> np.ndarray:
    return sum(parts[name] for name in PARTS)


def evaluate_memory(inputs: PlanInputs, layouts: LayoutArrays) -> dict[str, object]:
    """Per layout: `detailed` (peak over stages), `rule24`, `peak_stage`, `breakdown` (the peak
    stage's PARTS), `rule24_breakdown`, and `fits` under the model `inputs.memory_model` picks."""
    stages = [(ranks, stage_memory(inputs, layouts, ranks))
              for ranks in peak_candidate_ranks(inputs.spec.n_layers, layouts)]
    totals = np.stack([total(parts) for _, parts in stages])
    peak = np.argmax(totals, axis=0)   # ties: the earliest candidate (rank 0 before the last)
    pick = np.arange(len(layouts))
    breakdown = {name: np.stack([parts[name] for _, parts in stages])[peak, pick] for name in PARTS}
    detailed = totals[peak, pick]
    peak_stage = np.stack([ranks for ranks, _ in stages])[peak, pick]
    # Sharded states spread over the cp ranks too: they hold the same parameters.
    rule24_parts = rule24_breakdown(count_params(inputs.spec), layouts.tp, layouts.pp, layouts.dp * layouts.cp,
                                    layouts.zero)
    rule24 = sum(rule24_parts.values())
    capacity = inputs.gpu.hbm_bytes
    decides = detailed if inputs.memory_model == "detailed" else rule24
    return {
        "detailed": detailed, "rule24": rule24, "breakdown": breakdown,
        "rule24_breakdown": rule24_parts,
        "peak_stage": peak_stage,
        "fits": decides <= capacity,
        "fits_detailed": detailed <= capacity, "fits_rule24": rule24 <= capacity,
    }


def per_stage_breakdown(inputs: PlanInputs, layouts: LayoutArrays, index: int) -> list[dict[str, float]]:
    """PARTS of every pipeline stage of one layout (for the report)."""
    one = layouts.take(np.array([index]))
    return [{name: float(value[0]) for name, value in stage_memory(inputs, one, stage).items()}
            for stage in range(int(one.pp[0]))]

"""Layout search: enumerate dp × cp × tp × pp × sharding × micro-batch × recomputation × schedule,
evaluate memory and step time for all candidates at once (numpy), keep what fits, rank by
predicted throughput.

Structural constraints prune before evaluation: TP stays within a node and divides the (KV) heads,
PP is at most the layers (uneven cuts are balanced by parallel.layout.stage_layer_counts), CP (tried
for long sequences) cuts each sequence into 2 × cp chunks, the data-parallel size divides the global
batch and the micro-batch divides each rank's share of it. The layout rules the trainer applies too
(which backend runs which stage, micro-batches per pipeline schedule) are asked of
`parallel/layout.py`: what they refuse is pruned, and what only this project's trainer does not run
yet is kept, ranked, and marked (`PlanResult.refused`).
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from parallel.layout import BACKEND_STAGES, MICRO_BATCH_RULE, Layout, backend_for, micro_batch_problem
from planner.layout.cost import evaluate_cost
from planner.errors import UserError
from planner.layout.candidates import BACKENDS, RECOMPUTE, SCHEDULES, LayoutArrays
from planner.layout.memory import evaluate_memory
from planner.layout.inputs import PlanInputs
from planner.layout.layout_text import LAYOUT_KEYS, describe, parse_layout  # noqa: F401 (their old home)

MAX_MICRO_BATCH = 64
SPEED_TOLERANCE = 0.01   # predicted speeds this close rank by memory instead
VPP_CHOICES = (2, 4)
# Context parallelism is searched for long sequences only: below ~16K tokens attention is a small
# share of a layer's work and the K/V all-gather buys little (Llama 3 added CP 16 for its 128K stage).
CP_MIN_SEQ = 16384
CP_CHOICES = (2, 4, 8, 16)


@dataclass
class PlanResult:
    """Every evaluated candidate, the ranking of those that fit, and why the others were dropped."""

    inputs: PlanInputs
    layouts: LayoutArrays
    memory: dict
    cost: dict
    ranked: np.ndarray                       # indices of fitting candidates, best first
    rejected: Counter = field(default_factory=Counter)   # structural reason -> count
    n_candidates: int = 0
    refused: np.ndarray = field(init=False)   # per candidate: why this project's trainer would not run it

    def __post_init__(self) -> None:
        self.refused = self.layouts.trainer_refusals(self.inputs.spec.tie_embeddings)

    @property
    def runnable(self) -> np.ndarray:
        """Which candidates this project's trainer runs as planned."""
        return self.refused == ""

    @property
    def oom(self) -> np.ndarray:
        """Indices of evaluated candidates that do not fit, smallest memory first."""
        key = "detailed" if self.inputs.memory_model == "detailed" else "rule24"
        bad = np.flatnonzero(~self.memory["fits"])
        return bad[np.lexsort((self.memory["detailed"][bad], self.memory[key][bad]))]


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _micro_batches(local_batch: int) -> list[int]:
    return [m for m in divisors(local_batch) if m <= MAX_MICRO_BATCH]


def context_choices(inputs: PlanInputs, tp: int, rejected: Counter) -> list[int]:
    """Context-parallel sizes to try with `tp`: 1, and for sequences of CP_MIN_SEQ tokens or more
    those of CP_CHOICES that cut each sequence into 2 × cp chunks and divide the GPUs left."""
    seq = inputs.spec.seq_len
    choices = [1]
    if seq < CP_MIN_SEQ:
        return choices
    for cp in CP_CHOICES:
        if seq % (2 * cp):
            rejected[f"cp does not cut the {seq}-token sequence into 2 × cp chunks"] += 1
        elif (inputs.n_gpus // tp) % cp == 0:
            choices.append(cp)
    return choices


def enumerate_layouts(inputs: PlanInputs) -> tuple[LayoutArrays, Counter]:
    """All structurally valid candidates as arrays, and a count of what was pruned and why."""
    spec, n = inputs.spec, inputs.n_gpus
    rejected: Counter = Counter()
    recomputes = [0, 2] + ([1] if inputs.attention == "math" else [])
    stages = BACKEND_STAGES[inputs.backend]
    rows = []
    for tp in divisors(n):
        if tp > inputs.gpus_per_node:
            rejected[f"tp > {inputs.gpus_per_node} GPUs per node (TP stays within a node)"] += 1
            continue
        if spec.n_heads % tp or spec.kv_heads % tp or spec.ffn % tp:
            rejected[f"tp does not divide the {spec.n_heads} heads / {spec.kv_heads} KV heads / "
                     f"FFN width {spec.ffn}"] += 1
            continue
        for cp, pp in ((cp, pp) for cp in context_choices(inputs, tp, rejected) for pp in divisors(n // (tp * cp))):
            if pp > spec.n_layers:   # uneven cuts are fine (stage_layer_counts balances them)
                rejected[f"pp is more pipeline stages than the {spec.n_layers} layers"] += 1
                continue
            dp = n // (tp * pp * cp)
            if inputs.global_batch % dp:
                rejected[f"dp does not divide the global batch of {inputs.global_batch}"] += 1
                continue
            local = inputs.global_batch // dp
            schedules = [(1, 1)] if pp == 1 else [(0, 1), (1, 1)] + [
                (2, v) for v in VPP_CHOICES if spec.n_layers % (pp * v) == 0]
            # SP lean (memory) or keeping the gathered input (one all-gather fewer): both weighed
            sps = ((False, True), (True, True), (True, False)) if tp > 1 else ((False, True),)
            zeros = stages if dp * cp > 1 else (0,) if 0 in stages else stages[:1]
            backends = {zero: BACKENDS.index(backend_for(inputs.backend, zero, tp > 1 or pp > 1 or cp > 1))
                        for zero in zeros}
            for mb in _micro_batches(local):
                n_micro = local // mb
                for (schedule, vpp), zero, recompute, (sp, lean) in itertools.product(schedules, zeros, recomputes, sps):
                    if micro_batch_problem(pp, SCHEDULES[schedule], n_micro):
                        rejected[MICRO_BATCH_RULE] += 1
                        continue
                    rows.append((dp, tp, pp, zero, mb, recompute, sp, schedule, vpp, backends[zero], cp, lean))
    names = ("dp", "tp", "pp", "zero", "mb", "recompute", "sp", "schedule", "vpp", "backend", "cp", "lean_sp")
    if not rows:
        return LayoutArrays.from_columns(**{k: [] for k in names}), rejected
    table = np.array(rows, dtype=np.int64)
    columns = {name: table[:, i] for i, name in enumerate(names)}
    columns["sp"], columns["lean_sp"] = columns["sp"].astype(bool), columns["lean_sp"].astype(bool)
    return LayoutArrays.from_columns(**columns), rejected


def evaluate(inputs: PlanInputs, layouts: LayoutArrays, rejected: Counter | None = None) -> PlanResult:
    """Memory and cost of every candidate; fitting ones ranked by tokens/s (ties: less memory)."""
    memory = evaluate_memory(inputs, layouts)
    cost = evaluate_cost(inputs, layouts)
    fit = np.flatnonzero(memory["fits"])
    # rule24 is blind to micro-batch and schedule, so when it decides, layouts that the detailed
    # model also fits rank ahead of the ones it only lets through; speed orders within each group.
    agrees = memory["fits_detailed"][fit] if inputs.memory_model == "rule24" else np.ones(len(fit), bool)
    speed, spare = cost["tokens_per_s"][fit], memory["detailed"][fit]
    by_speed = np.lexsort((spare, -speed, ~agrees))
    groups = tie_groups(speed[by_speed], agrees[by_speed])
    order = by_speed[np.lexsort((spare[by_speed], groups))]
    return PlanResult(inputs, layouts, memory, cost, fit[order], rejected or Counter(), len(layouts))


def tie_groups(speed_desc: np.ndarray, agrees: np.ndarray) -> np.ndarray:
    """Group ids for speeds sorted best first: a group holds the layouts within SPEED_TOLERANCE of
    its fastest (the cost model is no finer than that), so that among them the one with the most
    memory to spare can rank first."""
    groups = np.empty(len(speed_desc), dtype=np.int64)
    group, leader = -1, None
    for k, (value, agree) in enumerate(zip(speed_desc.tolist(), agrees.tolist())):
        if leader is None or value < leader[0] / (1 + SPEED_TOLERANCE) or agree != leader[1]:
            group, leader = group + 1, (value, agree)
        groups[k] = group
    return groups


def search(inputs: PlanInputs) -> PlanResult:
    """Plan every layout of `inputs.n_gpus` GPUs. Raises UserError when none can run or fit."""
    layouts, rejected = enumerate_layouts(inputs)
    if len(layouts) == 0:
        reasons = "; ".join(f"{reason} ({count}×)" for reason, count in rejected.most_common(3))
        raise UserError(f"no dp × cp × tp × pp split of {inputs.n_gpus} GPUs suits this model and batch: "
                        f"{reasons}; change --gpus, --global-batch or the model shape")
    result = evaluate(inputs, layouts, rejected)
    if len(result.ranked) == 0:
        best = result.oom[0]
        need = result.memory["detailed" if inputs.memory_model == "detailed" else "rule24"][best]
        raise UserError(
            f"no layout fits: the smallest ({describe(layouts.layout(int(best)))}) needs "
            f"{need / 2**30:.1f} GiB per GPU under {inputs.memory_model}, the {inputs.gpu.id} has "
            f"{inputs.gpu.hbm_bytes / 2**30:.0f} GiB; use more GPUs (--gpus), a larger GPU (--gpu)"
            + (", --backend auto (sharded states)" if inputs.backend == "ddp" else "")
            + " or a smaller model")
    return result


def evaluate_layout(inputs: PlanInputs, layout: Layout) -> PlanResult:
    """Memory and cost of one given layout (marked where this project's trainer would not run it);
    UserError naming every reason it cannot run at all."""
    problems = layout_problems(inputs, layout)
    if problems:
        raise UserError("layout " + describe(layout) + " cannot run: " + "; ".join(problems))
    layouts = LayoutArrays.from_layouts([layout], inputs.backend)
    memory = evaluate_memory(inputs, layouts)
    cost = evaluate_cost(inputs, layouts)
    return PlanResult(inputs, layouts, memory, cost, np.array([0]), Counter(), 1)


def layout_problems(inputs: PlanInputs, layout: Layout) -> list[str]:
    """Every reason `layout` cannot run for these inputs: the layout rules the trainer applies, and
    TP within a node."""
    spec = inputs.spec
    problems = layout.problems(inputs.n_gpus, spec.n_heads, spec.kv_heads, spec.n_layers, spec.ffn,
                               backend=inputs.backend, global_batch=inputs.global_batch, seq_len=spec.seq_len)
    if layout.tp > inputs.gpus_per_node:
        problems.append(f"tp={layout.tp} spans more than one node of {inputs.gpus_per_node} GPUs")
    return problems

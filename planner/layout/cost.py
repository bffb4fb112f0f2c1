"""Step time of a layout: compute + exposed tensor- and context-parallel communication + pipeline
bubble + exposed data-parallel / ZeRO / FSDP communication + the optimizer step.

Calibrated against published runs (planner/layout/calibration_runs.py, `scaleplan plan --calibration`):
the constants below and the GPU catalog's efficiencies are shared by every run, never set per run.

- Compute: GEMM FLOPs over peak × the GPU's sustained GEMM efficiency, scaled down for small local
  dimensions (d/(d + half) per dimension, half at a fixed share of the GPU's ridge point); flash
  attention at the GPU's attention efficiency; memory-bound element-wise work as bytes over HBM
  bandwidth. Each rank computes 1/cp of every sequence (load-balanced causal chunks: equal attention
  work). The slowest pipeline stage of the real cut (head on the last) sets the pace.
- TP (Korthikanti et al. 2022): per layer and micro-batch four all-reduce volumes of b·(s/cp)·h, two
  more under full recomputation, one more with lean SP (backward all-gathers the norm output again).
- CP: K and V all-gathered in forward and their gradients reduce-scattered in backward (again
  gathered when recomputing), over NVLink while cp·tp fits a node, else the network.
- Pipeline: bubble (p − 1)/(v·m) of the slowest stage's time, plus fill-and-drain sends.
- Data parallel (Rajbhandari et al. 2020) over the dp × cp ranks that hold one stage's replica:
  DDP all-reduce per step; ZeRO-1 reduce-scatter + all-gather per step; ZeRO-2 reduce-scatter per
  micro-batch; ZeRO-3 two all-gathers and a reduce-scatter per micro-batch. Collectives run per
  layer (DeepSpeed's ZeRO-3 gathers per module; a ring's latency per call grows with its ranks),
  the first gather and the last reduce of a micro-batch have nothing to hide behind, and of the rest
  and the compute running meanwhile the shorter hides behind the longer, up to OVERLAP of the
  longer's time. Across nodes a node's k members of the group share k NICs at NETWORK_EFFICIENCY.
- Optimizer: AdamW reads and writes the fp32 states of the local parameters at HBM bandwidth.
"""
from __future__ import annotations

import numpy as np

from planner.hardware import peak_flops
from planner.layout.candidates import LayoutArrays
from planner.layout.inputs import PlanInputs
from planner.layout.memory import micro_batches_per_step
from planner.layout.model_states import compute_bytes, stage_params
from planner.layout.stages import rank_blocks
from planner.model_spec import flops_per_token, layer_matmul_params

MAX_MATMUL_EFFICIENCY = 0.80   # default best dense GEMM share of peak (each GPU in the catalog sets its own)
HALF_EFFICIENCY_DIM = 96       # a GEMM dimension this small reaches half of it (no GPU given)
# On a given GPU that dimension sits at a fixed share of its ridge point, peak FLOP/s over memory
# bandwidth: a GEMM with one dimension d does about d FLOPs per byte moved (fitted on the calibration set).
HALF_EFFICIENCY_RIDGE = 2.5
# Memory-bound element-wise work (norms, residual adds, activation functions, their backward), in
# 16-bit elements read or written per token and layer, per d_model and per MLP hidden unit.
ELEMENTWISE_PER_HIDDEN = 36.0
ELEMENTWISE_PER_FFN = 18.0
CROSS_ENTROPY_BYTES = 12.0     # per logit: 16-bit logits written, read as fp32, gradient written
OPTIMIZER_BYTES = 32.0         # per local parameter: AdamW reads and writes fp32 weight, moments, gradient
OVERLAP = 0.3                  # share of concurrent compute that hides communication (fitted on the calibration set)
LINK_LATENCY_S = 5e-6          # per ring step (NCCL's small-message latency across a hop)
NETWORK_EFFICIENCY = 0.8       # share of a NIC's line rate a ring's bus bandwidth reaches (nccl-tests on IB/RoCE)
DDP_BUCKET_BYTES = 25e6        # the last bucket is never hidden


def matmul_efficiency(*dims, best: float = MAX_MATMUL_EFFICIENCY, half: float = HALF_EFFICIENCY_DIM) -> np.ndarray:
    """Share of peak a GEMM reaches: best × Π d/(d + half) over its three dimensions."""
    eff = np.asarray(best, float)
    for dim in dims:
        dim = np.asarray(dim, float)
        eff = eff * dim / (dim + half)
    return eff


def half_efficiency_dim(gpu, peak: float) -> float:
    """The GEMM dimension at which this GPU reaches half its best matmul efficiency."""
    return HALF_EFFICIENCY_RIDGE * peak / gpu.hbm_bw


def ring_time(bytes_, ranks, bandwidth, passes: float, calls=1) -> np.ndarray:
    """Ring collective time: `passes` × (n − 1)/n × bytes over the link (all-reduce: 2 passes,
    all-gather or reduce-scatter: 1), plus a latency per ring step of each of `calls` calls."""
    ranks = np.asarray(ranks, float)
    share = (ranks - 1) / ranks
    return np.where(ranks > 1, passes * (share * bytes_ / bandwidth + calls * (ranks - 1) * LINK_LATENCY_S), 0.0)


def exposed(comm, compute, floor) -> np.ndarray:
    """Communication time left over when it runs beside `compute`: the shorter of the two hides
    behind the longer, advancing meanwhile at OVERLAP of its own speed (the two contend for the
    SMs and HBM, and each waits on the other's dependencies), so min(shorter, OVERLAP × longer) is
    hidden; never less than `floor`, the part with nothing beside it."""
    hidden = np.minimum(np.minimum(comm, compute), OVERLAP * np.maximum(comm, compute))
    return np.maximum(comm - hidden, floor)


def group_bandwidth(gpu, ranks, ranks_per_node, gpus_per_node: int) -> np.ndarray:
    """Bus bandwidth of a ring over `ranks` GPUs placed `ranks_per_node` to a node. Within a node:
    NVLink. Across nodes NCCL runs one ring per NIC, so a node's k members of the group share k
    network links at NETWORK_EFFICIENCY of line rate, at most NVLink's."""
    ranks = np.asarray(ranks)
    per_node = np.maximum(np.minimum(ranks_per_node, gpus_per_node), 1)
    across = np.minimum(per_node * gpu.network_bw * NETWORK_EFFICIENCY, gpu.intra_node_bw)
    return np.where(ranks > per_node, across, gpu.intra_node_bw)


def stage_cut(n_layers: int, x: LayoutArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocks on the first, the busiest middle and the last pipeline rank of each layout (a rank
    runs its vpp chunks), from the real cut: `pp_layers` where given, else the balanced one."""
    known: dict = {}   # a search holds thousands of layouts but few distinct cuts
    rows = []
    for key in zip(x.pp.tolist(), x.vpp.tolist(), x.pp_layers.tolist()):
        if key not in known:
            blocks = rank_blocks(n_layers, *key)
            known[key] = (blocks[0], max(blocks[1:-1], default=0), blocks[-1])
        rows.append(known[key])
    rows = np.array(rows, float).reshape(-1, 3)
    return rows[:, 0], rows[:, 1], rows[:, 2]


def layer_time_per_token(inputs: PlanInputs, tp, tokens, peak: float) -> np.ndarray:
    """Forward + backward seconds per token of one layer on one TP rank (no recomputation):
    the GEMMs at their size's efficiency, attention, and memory-bound element-wise traffic."""
    spec, gpu = inputs.spec, inputs.gpu
    h, kv_dim, f = spec.d_model, spec.kv_heads * spec.head_dim, spec.ffn
    up_matrices = 2 if spec.arch == "llama" else 1
    best, half = gpu.matmul_efficiency, half_efficiency_dim(gpu, peak)
    gemms = [  # (params of the weight on this rank, the three GEMM dimensions)
        (h * (h + 2 * kv_dim) / tp, (tokens, h, (h + 2 * kv_dim) / tp)),
        (h * h / tp, (tokens, h / tp, h)),
        (up_matrices * h * f / tp, (tokens, h, up_matrices * f / tp)),
        (h * f / tp, (tokens, f / tp, h)),
    ]
    seconds = sum(6.0 * params / (peak * matmul_efficiency(*dims, best=best, half=half)) for params, dims in gemms)
    if inputs.attention == "flash":
        # Flash kernels skip the masked half of causal attention; their efficiency counts it so.
        attention = 6.0 * spec.seq_len * h / tp / (peak * gpu.attention_efficiency)
    else:  # math: the full s×s products, and the scores written, softmaxed and read back
        attention = (12.0 * spec.seq_len * h / tp / (peak * matmul_efficiency(tokens, spec.seq_len, spec.head_dim, best=best, half=half))
                     + 3 * 3 * spec.n_heads / tp * spec.seq_len * compute_bytes(inputs.precision) / gpu.hbm_bw)
    elementwise = (ELEMENTWISE_PER_HIDDEN * h + ELEMENTWISE_PER_FFN * up_matrices * f) / tp
    return seconds + attention + elementwise * compute_bytes(inputs.precision) / gpu.hbm_bw


def evaluate_cost(inputs: PlanInputs, layouts: LayoutArrays) -> dict[str, np.ndarray]:
    """Per layout: step_time_s, tokens_per_s, mfu, hfu, and the parts of the step (seconds) with
    bubble_fraction and comm_fraction."""
    spec, gpu, x = inputs.spec, inputs.gpu, layouts
    peak = peak_flops(gpu, inputs.precision)
    act = compute_bytes(inputs.precision)
    cp, lean = x.cp, x.lean_sp.astype(bool)
    tokens_mb = x.mb * spec.seq_len / cp          # tokens one rank computes per micro-batch
    n_micro = micro_batches_per_step(inputs, x)
    full = x.recompute == 2

    # Compute: the slowest pipeline rank's time for one micro-batch, times the micro-batches.
    layer_s = layer_time_per_token(inputs, x.tp, tokens_mb, peak)
    recompute_fraction = np.select(  # extra forward work relative to one layer's forward + backward
        [full, (x.recompute == 1) & (inputs.attention == "math")],
        [1.0 / 3.0, (4.0 * spec.seq_len * spec.d_model) / (6.0 * layer_matmul_params(spec)
                                                            + 12.0 * spec.seq_len * spec.d_model)],
        0.0)
    head_s = (6.0 * spec.vocab_size * spec.d_model / x.tp / (
        peak * matmul_efficiency(tokens_mb, spec.d_model, spec.vocab_size / x.tp, best=gpu.matmul_efficiency,
                                 half=half_efficiency_dim(gpu, peak)))
        + CROSS_ENTROPY_BYTES * spec.vocab_size / x.tp / gpu.hbm_bw)
    block_s = layer_s * (1 + recompute_fraction)
    first, middle, last = stage_cut(spec.n_layers, x)
    layers_here = np.where(x.pp > 1, np.maximum.reduce([first, middle, last]), spec.n_layers)
    stage_s_per_token = np.maximum.reduce([first * block_s, middle * block_s, last * block_s + head_s])
    micro_batch_s = tokens_mb * stage_s_per_token
    compute = n_micro * micro_batch_s

    # Tensor parallel: all-reduce volumes of b·(s/cp)·h per layer and micro-batch.
    sp = x.sp.astype(bool)
    collectives = 4 + np.where(full, 2, 0) + np.where(sp & lean & ~full, 1, 0)
    tp_comm = ((1 - gpu.tp_overlap) * n_micro * layers_here * collectives
               * ring_time(tokens_mb * spec.d_model * act, x.tp, gpu.intra_node_bw, 2.0))

    # Context parallel: K and V of the whole sequences gathered, their gradients reduce-scattered.
    kv_bytes = x.mb * spec.seq_len * 2 * spec.kv_heads * spec.head_dim / x.tp * act
    cp_bw = group_bandwidth(gpu, cp, inputs.gpus_per_node // x.tp, inputs.gpus_per_node)
    cp_comm = n_micro * layers_here * np.where(full, 3, 2) * ring_time(kv_bytes, cp, cp_bw, 1.0)

    # Pipeline: bubble and fill/drain sends (stages are outermost: across nodes beyond one node).
    chunks = np.where(x.schedule == 2, x.vpp, 1)
    bubble = np.where(x.pp > 1, (x.pp - 1) / (chunks * n_micro) * compute, 0.0)
    pp_bw = np.where(x.tp * cp * x.dp >= inputs.gpus_per_node, gpu.network_bw * NETWORK_EFFICIENCY,
                     gpu.intra_node_bw)
    send = tokens_mb * spec.d_model * act / np.where(sp, x.tp, 1) / pp_bw + LINK_LATENCY_S
    p2p = np.where(x.pp > 1, 2 * (x.pp - 1) * chunks * send, 0.0)

    # Data parallel over the dp × cp ranks holding one replica of a stage (cp ranks see other tokens
    # of the same sequences); TP ranks are innermost, so a node holds gpus_per_node / tp of them.
    group = x.dp * cp
    held = stage_params(spec, x.tp, x.pp, 0) * layers_here / (spec.n_layers / x.pp)
    dp_bw = group_bandwidth(gpu, group, inputs.gpus_per_node // x.tp, inputs.gpus_per_node)
    grad_bytes = np.where(x.backend == 2, act, 4.0)          # DeepSpeed reduces 16-bit gradients
    gather_bytes = np.where(x.backend == 0, 4.0, act)
    # Each collective call pays the ring's latency across all ranks of the group. FSDP gathers and
    # reduces one flat parameter per block. DeepSpeed's ZeRO-3 gathers per module holding parameters
    # (two norms, the attention's two matrices, the MLP's two or three: its 5e7-element prefetch
    # bucket holds less than one such matrix of a large model) and reduce-scatters its 5e8-element
    # gradient buckets, about one block each.
    modules = 6 + (spec.arch == "llama") + 2 * spec.qk_norm
    gathers = layers_here * np.where((x.backend == 2) & (x.zero == 3), modules, 1)
    reduce_all = ring_time(held * grad_bytes, group, dp_bw, 2.0, layers_here)
    reduce_scatter = ring_time(held * grad_bytes, group, dp_bw, 1.0, layers_here)
    all_gather = ring_time(held * gather_bytes, group, dp_bw, 1.0, gathers)
    backward_one = micro_batch_s * 2.0 / 3.0
    # A micro-batch's first gather and last reduce have no compute beside them.
    edges = all_gather / np.maximum(gathers, 1) + reduce_scatter / np.maximum(layers_here, 1)
    hidden = np.select([x.zero == 0, x.zero == 1, x.zero == 2],
                       [exposed(reduce_all, backward_one, 0.0),
                        exposed(reduce_scatter, backward_one, 0.0) + all_gather,
                        n_micro * exposed(reduce_scatter, backward_one, edges) + all_gather],
                       n_micro * exposed(2 * all_gather + reduce_scatter, micro_batch_s, edges))
    last_bucket = ring_time(np.minimum(held * grad_bytes, DDP_BUCKET_BYTES), group, dp_bw, 2.0)
    dp_comm = np.maximum(hidden, last_bucket)

    # Optimizer step: AdamW is memory-bound over the parameters this rank updates.
    local_params = held / np.where(x.zero > 0, x.shard * cp, 1)
    optimizer = local_params * OPTIMIZER_BYTES / gpu.hbm_bw

    step = compute + tp_comm + cp_comm + bubble + p2p + dp_comm + optimizer
    tokens_per_step = inputs.tokens_per_step
    model_flops = flops_per_token(spec) * tokens_per_step
    hardware_flops = model_flops * (1 + recompute_fraction)
    gpus = x.dp * cp * x.tp * x.pp
    return {
        "step_time_s": step, "tokens_per_s": tokens_per_step / step,
        "mfu": model_flops / (step * gpus * peak), "hfu": hardware_flops / (step * gpus * peak),
        "compute_s": compute, "tp_comm_s": tp_comm, "cp_comm_s": cp_comm, "bubble_s": bubble, "p2p_s": p2p,
        "dp_comm_s": dp_comm, "optimizer_s": optimizer, "bubble_fraction": bubble / step,
        "comm_fraction": (tp_comm + cp_comm + p2p + dp_comm) / step,
    }

"""Step time of a layout: compute + exposed tensor-parallel communication + pipeline bubble +
exposed data-parallel / ZeRO / FSDP communication + the optimizer step.

Calibrated against published runs (planner/layout/calibration.py, `scaleplan plan --calibration`):
the constants below and the GPU catalog's efficiencies are shared by every run, never set per run.

- Compute: GEMM FLOPs over peak × the GPU's sustained GEMM efficiency, scaled down for small local
  dimensions (d/(d + half) per dimension, half at a fixed share of the GPU's ridge point: peak over
  HBM bandwidth); flash attention at the GPU's attention efficiency; memory-bound element-wise work
  (norms, activations, residuals, cross-entropy) as bytes over HBM bandwidth. The slowest pipeline
  stage (the last one, which also runs the output head) sets the pace.
- TP (Korthikanti et al. 2022): per layer and micro-batch two all-reduces forward and two backward
  of b·s·h (all-gather + reduce-scatter pairs with sequence parallelism: the same volume), two more
  under full recomputation; ring all-reduce over the NVLink bandwidth; not overlapped.
- Pipeline: bubble (p − 1)/m of the ideal time for GPipe and 1F1B, (p − 1)/(v·m) interleaved
  (Narayanan et al. 2021), plus the fill-and-drain point-to-point sends.
- Data parallel (Rajbhandari et al. 2020): all-reduce of gradients once per step (DDP, no_sync
  between micro-batches); ZeRO-1 reduce-scatter + all-gather per step; ZeRO-2 reduce-scatter per
  micro-batch; ZeRO-3/FSDP two all-gathers and a reduce-scatter per micro-batch. Each overlaps with
  the backward (ZeRO-3: forward and backward) compute running meanwhile, at OVERLAP efficiency.
  TP ranks are innermost; once the group leaves a node, its k members per node cross the network
  over k NICs (NCCL runs a ring per NIC), at most at NVLink speed.
- Optimizer: AdamW reads and writes the fp32 states of the local parameters at HBM bandwidth.
"""
from __future__ import annotations

import numpy as np

from planner.hardware import peak_flops
from planner.layout.candidates import LayoutArrays
from planner.layout.memory import micro_batches_per_step
from planner.layout.model_states import compute_bytes, stage_params
from planner.model_spec import flops_per_token, layer_matmul_params
from planner.layout.inputs import PlanInputs

MAX_MATMUL_EFFICIENCY = 0.80   # default best dense GEMM share of peak (each GPU in the catalog sets its own)
HALF_EFFICIENCY_DIM = 96       # a GEMM dimension this small reaches half of it (no GPU given)
# On a given GPU that dimension sits at a fixed share of its ridge point, peak FLOP/s over memory
# bandwidth: a GEMM with one dimension d does about d FLOPs per byte moved, so it stops being
# compute-bound near the ridge (A100: 153, H100: 295 FLOPs per byte).
HALF_EFFICIENCY_RIDGE = 2.5
# Memory-bound element-wise work (norms, residual adds, activation functions, their backward), in
# 16-bit elements read or written per token and layer, per d_model and per MLP hidden unit.
ELEMENTWISE_PER_HIDDEN = 36.0
ELEMENTWISE_PER_FFN = 18.0
CROSS_ENTROPY_BYTES = 12.0     # per logit: 16-bit logits written, read as fp32, gradient written
OPTIMIZER_BYTES = 32.0         # per local parameter: AdamW reads and writes fp32 weight, moments, gradient
OVERLAP = 0.3                  # share of concurrent compute that hides communication (kernels share SMs and HBM)
LINK_LATENCY_S = 5e-6          # per ring step
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


def ring_time(bytes_, ranks, bandwidth, passes: float) -> np.ndarray:
    """Ring collective time: `passes` × (n − 1)/n × bytes over the link (all-reduce: 2 passes,
    all-gather or reduce-scatter: 1), plus a latency per step."""
    ranks = np.asarray(ranks, float)
    share = (ranks - 1) / ranks
    return np.where(ranks > 1, passes * (share * bytes_ / bandwidth + (ranks - 1) * LINK_LATENCY_S), 0.0)


def group_bandwidth(gpu, ranks, ranks_per_node, gpus_per_node: int) -> np.ndarray:
    """Bus bandwidth of a ring over `ranks` GPUs placed `ranks_per_node` to a node. Within a node:
    NVLink. Across nodes NCCL runs one ring per NIC, so a node's k members of the group share k
    network links: k × the per-GPU network bandwidth, at most NVLink's."""
    ranks = np.asarray(ranks)
    per_node = np.maximum(np.minimum(ranks_per_node, gpus_per_node), 1)
    across = np.minimum(per_node * gpu.network_bw, gpu.intra_node_bw)
    return np.where(ranks > per_node, across, gpu.intra_node_bw)


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
    tokens_mb = x.mb * spec.seq_len
    n_micro = micro_batches_per_step(inputs, x)
    layers_here = spec.n_layers / x.pp

    # Compute: the slowest stage's time for one micro-batch, times the micro-batches.
    layer_s = layer_time_per_token(inputs, x.tp, tokens_mb, peak)
    recompute_fraction = np.select(  # extra forward work relative to one layer's forward + backward
        [x.recompute == 2, (x.recompute == 1) & (inputs.attention == "math")],
        [1.0 / 3.0, (4.0 * spec.seq_len * spec.d_model) / (6.0 * layer_matmul_params(spec)
                                                            + 12.0 * spec.seq_len * spec.d_model)],
        0.0)
    head_s = (6.0 * spec.vocab_size * spec.d_model / x.tp / (
        peak * matmul_efficiency(tokens_mb, spec.d_model, spec.vocab_size / x.tp, best=gpu.matmul_efficiency,
                                 half=half_efficiency_dim(gpu, peak)))
        + CROSS_ENTROPY_BYTES * spec.vocab_size / x.tp / gpu.hbm_bw)
    stage_s_per_token = layers_here * layer_s * (1 + recompute_fraction) + head_s
    micro_batch_s = tokens_mb * stage_s_per_token
    compute = n_micro * micro_batch_s

    # Tensor parallel: 4 all-reduces of b·s·h per layer and micro-batch (6 with full recompute).
    collectives = np.where(x.recompute == 2, 6, 4)
    tp_comm = (n_micro * layers_here * collectives
               * ring_time(tokens_mb * spec.d_model * act, x.tp, gpu.intra_node_bw, 2.0))

    # Pipeline: bubble and fill/drain sends (stages are outermost: across nodes beyond one node).
    chunks = np.where(x.schedule == 2, x.vpp, 1)
    bubble = np.where(x.pp > 1, (x.pp - 1) / (chunks * n_micro) * compute, 0.0)
    pp_bw = np.where(x.tp * x.dp >= inputs.gpus_per_node, gpu.network_bw, gpu.intra_node_bw)
    send = tokens_mb * spec.d_model * act / np.where(x.sp, x.tp, 1) / pp_bw + LINK_LATENCY_S
    p2p = np.where(x.pp > 1, 2 * (x.pp - 1) * chunks * send, 0.0)

    # Data parallel: volume per step by sharding stage, and the compute that can hide it. TP ranks
    # are innermost, so a node holds gpus_per_node / tp members of each data-parallel group.
    held = stage_params(spec, x.tp, x.pp, 0)
    dp_bw = group_bandwidth(gpu, x.dp, inputs.gpus_per_node // x.tp, inputs.gpus_per_node)
    grad_bytes = np.where(x.backend == 2, act, 4.0)          # DeepSpeed reduces 16-bit gradients
    gather_bytes = np.where(x.backend == 2, act, np.where(x.backend == 1, act, 4.0))
    reduce_all = ring_time(held * grad_bytes, x.dp, dp_bw, 2.0)
    reduce_scatter = ring_time(held * grad_bytes, x.dp, dp_bw, 1.0)
    all_gather = ring_time(held * gather_bytes, x.dp, dp_bw, 1.0)
    backward_one = micro_batch_s * 2.0 / 3.0
    hidden = np.select([x.zero == 0, x.zero == 1, x.zero == 2],
                       [np.maximum(reduce_all - OVERLAP * backward_one, 0.0),
                        np.maximum(reduce_scatter - OVERLAP * backward_one, 0.0) + all_gather,
                        n_micro * np.maximum(reduce_scatter - OVERLAP * backward_one, 0.0) + all_gather],
                       n_micro * np.maximum(2 * all_gather + reduce_scatter - OVERLAP * micro_batch_s, 0.0))
    last_bucket = ring_time(np.minimum(held * grad_bytes, DDP_BUCKET_BYTES), x.dp, dp_bw, 2.0)
    dp_comm = np.maximum(hidden, last_bucket)

    # Optimizer step: AdamW is memory-bound over the parameters this rank updates.
    local_params = held / np.where(x.zero > 0, x.shard, 1)
    optimizer = local_params * OPTIMIZER_BYTES / gpu.hbm_bw

    step = compute + tp_comm + bubble + p2p + dp_comm + optimizer
    tokens_per_step = inputs.tokens_per_step
    model_flops = flops_per_token(spec) * tokens_per_step
    hardware_flops = model_flops * (1 + recompute_fraction)
    gpus = x.dp * x.tp * x.pp
    return {
        "step_time_s": step, "tokens_per_s": tokens_per_step / step,
        "mfu": model_flops / (step * gpus * peak), "hfu": hardware_flops / (step * gpus * peak),
        "compute_s": compute, "tp_comm_s": tp_comm, "bubble_s": bubble, "p2p_s": p2p,
        "dp_comm_s": dp_comm, "optimizer_s": optimizer, "bubble_fraction": bubble / step,
        "comm_fraction": (tp_comm + p2p + dp_comm) / step,
    }

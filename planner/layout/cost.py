"""Step time of a layout: compute + exposed tensor-parallel communication + pipeline bubble +
exposed data-parallel / ZeRO / FSDP communication.

- Compute: FLOPs per GPU (model FLOPs plus recomputation) over peak × a matmul efficiency that
  grows with the local matrix sizes (small GEMMs, e.g. d_model / tp of a few hundred, do not fill
  the tensor cores), plus a share for memory-bound element-wise work (norms, activations, softmax).
  The slowest pipeline stage (the last one, which also runs the output head) sets the pace.
- TP (Korthikanti et al. 2022): per layer and micro-batch two all-reduces forward and two backward
  of b·s·h (all-gather + reduce-scatter pairs with sequence parallelism: the same volume), two more
  under full recomputation; ring all-reduce over the NVLink bandwidth; not overlapped.
- Pipeline: bubble (p − 1)/m of the ideal time for GPipe and 1F1B, (p − 1)/(v·m) interleaved
  (Narayanan et al. 2021), plus the fill-and-drain point-to-point sends.
- Data parallel (Rajbhandari et al. 2020): all-reduce of gradients once per step (DDP, no_sync
  between micro-batches); ZeRO-1 reduce-scatter + all-gather per step; ZeRO-2 reduce-scatter per
  micro-batch; ZeRO-3/FSDP two all-gathers and a reduce-scatter per micro-batch. Each overlaps with
  the backward (ZeRO-3: forward and backward) compute running meanwhile, at OVERLAP efficiency.
  The group crosses nodes (network bandwidth per GPU) once tp × dp exceeds a node, since TP ranks
  are innermost.
"""
from __future__ import annotations

import numpy as np

from planner.hardware import peak_flops
from planner.layout.candidates import LayoutArrays
from planner.layout.memory import micro_batches_per_step
from planner.layout.model_states import compute_bytes, stage_params
from planner.model_spec import flops_per_token, layer_matmul_params
from planner.layout.inputs import PlanInputs

MAX_MATMUL_EFFICIENCY = 0.80   # best dense GEMM share of peak on A100/H100-class tensor cores
HALF_EFFICIENCY_DIM = 96       # a GEMM dimension this small reaches half of it
ELEMENTWISE_OVERHEAD = 0.10    # memory-bound work, as a share of matmul time
OVERLAP = 0.8                  # share of concurrent compute that hides communication
LINK_LATENCY_S = 5e-6          # per ring step
DDP_BUCKET_BYTES = 25e6        # the last bucket is never hidden


def matmul_efficiency(*dims) -> np.ndarray:
    """Share of peak a GEMM reaches: MAX × Π d/(d + HALF) over its three dimensions."""
    eff = np.asarray(MAX_MATMUL_EFFICIENCY, float)
    for dim in dims:
        dim = np.asarray(dim, float)
        eff = eff * dim / (dim + HALF_EFFICIENCY_DIM)
    return eff


def ring_time(bytes_, ranks, bandwidth, passes: float) -> np.ndarray:
    """Ring collective time: `passes` × (n − 1)/n × bytes over the link (all-reduce: 2 passes,
    all-gather or reduce-scatter: 1), plus a latency per step."""
    ranks = np.asarray(ranks, float)
    share = (ranks - 1) / ranks
    return np.where(ranks > 1, passes * (share * bytes_ / bandwidth + (ranks - 1) * LINK_LATENCY_S), 0.0)


def layer_time_per_token(inputs: PlanInputs, tp, tokens, peak: float) -> np.ndarray:
    """Forward + backward seconds per token of one layer on one TP rank (no recomputation)."""
    spec = inputs.spec
    h, kv_dim, f = spec.d_model, spec.kv_heads * spec.head_dim, spec.ffn
    up_matrices = 2 if spec.arch == "llama" else 1
    gemms = [  # (params of the weight on this rank, the three GEMM dimensions)
        (h * (h + 2 * kv_dim) / tp, (tokens, h, (h + 2 * kv_dim) / tp)),
        (h * h / tp, (tokens, h / tp, h)),
        (up_matrices * h * f / tp, (tokens, h, up_matrices * f / tp)),
        (h * f / tp, (tokens, f / tp, h)),
    ]
    seconds = sum(6.0 * params / (peak * matmul_efficiency(*dims)) for params, dims in gemms)
    attention = 12.0 * spec.seq_len * h / tp       # PaLM's attention FLOPs, split over heads
    return seconds + attention / (peak * matmul_efficiency(tokens, spec.seq_len, spec.head_dim))


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
    head_s = 6.0 * spec.vocab_size * spec.d_model / x.tp / (
        peak * matmul_efficiency(tokens_mb, spec.d_model, spec.vocab_size / x.tp))
    stage_s_per_token = layers_here * layer_s * (1 + recompute_fraction) + head_s
    micro_batch_s = tokens_mb * stage_s_per_token * (1 + ELEMENTWISE_OVERHEAD)
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

    # Data parallel: volume per step by sharding stage, and the compute that can hide it.
    held = stage_params(spec, x.tp, x.pp, 0)
    dp_bw = np.where(x.tp * x.dp > inputs.gpus_per_node, gpu.network_bw, gpu.intra_node_bw)
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

    step = compute + tp_comm + bubble + p2p + dp_comm
    tokens_per_step = inputs.tokens_per_step
    model_flops = flops_per_token(spec) * tokens_per_step
    hardware_flops = model_flops * (1 + recompute_fraction)
    gpus = x.dp * x.tp * x.pp
    return {
        "step_time_s": step, "tokens_per_s": tokens_per_step / step,
        "mfu": model_flops / (step * gpus * peak), "hfu": hardware_flops / (step * gpus * peak),
        "compute_s": compute, "tp_comm_s": tp_comm, "bubble_s": bubble, "p2p_s": p2p,
        "dp_comm_s": dp_comm, "bubble_fraction": bubble / step,
        "comm_fraction": (tp_comm + p2p + dp_comm) / step,
    }

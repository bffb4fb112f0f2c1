"""Model states per GPU: weights, gradients and optimizer states as each backend stores them.

`detailed` accounting follows what the code really allocates, per precision:

- DDP (the trainer's `parallel/ddp.py`): fp32 parameters, fp32 gradients and fp32 AdamW moments in
  every precision, since autocast casts per operation; under bf16/fp16 autocast also caches a
  16-bit copy of each weight from the forward until its backward. Gradients are views into DDP's
  buckets (`gradient_as_bucket_view=True`), so the buckets add nothing.
- FSDP2 (`fully_shard`, mixed precision param_dtype=bf16, reduce_dtype=fp32): fp32 parameter,
  gradient and moment shards; ZeRO-3 all-gathers the current and the prefetched block in the compute
  dtype, ZeRO-2 (`reshard_after_forward=False`) keeps the whole stage unsharded in the compute dtype;
  ZeRO-1 too, and it reduces gradients only on a step's last micro-batch, so whole fp32 gradients
  of every held parameter accumulate until then: a buffer (gone by the optimizer step, where the
  gradients are shards), counted whole, the worst case.
- DeepSpeed ZeRO (Rajbhandari et al. 2020), as DeepSpeed 0.19 allocates it under the trainer
  (measured on CPU through the trainer's own engine in tests/test_model_states_per_rank.py):
  weights in the compute dtype, fp32 master weights (a separate copy even in fp32) and moments
  sharded from stage 1, gradients reduced into a per-rank partition in the compute dtype from stage
  1 on, and an fp32 copy of it made for the step; with the trainer's two parameter groups (decay,
  no decay) both are alive at the first group's step: 6 bytes / N in bf16, as DeepSpeed's own
  estimator counts (2 + 18/N at stage 2). Its default reduce bucket
  (5e8 elements) and, at stage 3, the gathered blocks are buffers.

`deepspeed` accounting reproduces DeepSpeed's own estimators instead
(`estimate_zero2/3_model_states_mem_needs`); for stages 0 and 1, which DeepSpeed does not estimate,
it uses the ZeRO paper's (2 + 2 + K)Ψ with K = 12.
"""
from __future__ import annotations

import numpy as np

from planner.model_spec import ModelSpec, final_norm_params, layer_params

DEEPSPEED_BUCKET_ELEMENTS = 5e8   # DeepSpeed's default reduce_bucket_size / allgather_bucket_size
DEEPSPEED_BUFFER_FACTOR = 1.5     # DeepSpeed's additional_buffer_factor (CPU side only)


def compute_bytes(precision: str) -> int:
    """Bytes per element of the compute dtype."""
    return 4 if precision == "fp32" else 2


def layer_params_per_tp_rank(spec: ModelSpec, tp) -> np.ndarray:
    """One block's parameters on one TP rank: matrices and column-parallel biases are split, norms
    and row-parallel biases (output projection, MLP down projection) are replicated."""
    norms = 2 * spec.d_model * (2 if spec.bias and spec.arch == "gpt" else 1)
    row_parallel_biases = 2 * spec.d_model if spec.bias else 0
    total = layer_params(spec)
    split = total - norms - row_parallel_biases
    return split / np.asarray(tp) + (total - split)


def stage_params(spec: ModelSpec, tp, pp, stage, blocks=None) -> np.ndarray:
    """Parameters held by one GPU of pipeline stage `stage` (0-based; arrays broadcast).

    `blocks`: the layers on that stage (an even split when None); the first stage holds the token
    (vocab-parallel over TP) and position embeddings, the last the final norm and the output head (also when tied, if pp > 1: Megatron
    keeps a copy of the tied embedding on the last stage).
    """
    tp, pp, stage = (np.asarray(x) for x in (tp, pp, stage))
    d, vocab = spec.d_model, spec.vocab_size
    layers = (spec.n_layers / pp if blocks is None else np.asarray(blocks)) * layer_params_per_tp_rank(spec, tp)
    first, last = stage == 0, stage == pp - 1
    positions = spec.seq_len * d if spec.arch == "gpt" else 0
    embedding = np.where(first, vocab * d / tp + positions, 0.0)
    head_held = np.where(spec.tie_embeddings & (pp == 1), 0.0, vocab * d / tp)
    head = np.where(last, head_held + final_norm_params(spec), 0.0)
    return layers + embedding + head


def matmul_params_on_stage(spec: ModelSpec, tp, pp, stage, blocks=None) -> np.ndarray:
    """Parameters of the Linear layers (weights and biases) one GPU of stage `stage` holds: what
    autocast casts to 16 bits and caches. Embeddings and norms are not cast; the output head is,
    on the last stage, also when tied to the embedding."""
    tp, pp, stage = (np.asarray(x) for x in (tp, pp, stage))
    norms = 2 * spec.d_model * (2 if spec.bias and spec.arch == "gpt" else 1)
    per_layer = layer_params_per_tp_rank(spec, tp) - norms
    head = np.where(stage == pp - 1, spec.vocab_size * spec.d_model / tp, 0.0)
    return (spec.n_layers / pp if blocks is None else np.asarray(blocks)) * per_layer + head


def largest_layer_params(spec: ModelSpec) -> int:
    """Parameters of the largest single module (DeepSpeed's `largest_layer_params`): the embedding
    or output head, or one MLP / attention matrix."""
    kv_dim = spec.kv_heads * spec.head_dim
    return max(spec.vocab_size * spec.d_model, spec.d_model * spec.ffn, spec.d_model * kv_dim,
               spec.d_model * spec.d_model)


def detailed_model_states(held, shard, backend: np.ndarray, zero, precision: str,
                          layer_held, cast_held=None) -> dict[str, np.ndarray]:
    """Bytes per GPU: persistent parameter tensors (`params`), 16-bit working copies
    (`compute_copies`), `gradients`, `optimizer` and communication `buffers`.

    held: parameters this GPU's stage holds (before sharding); shard: ranks sharing the sharded
    states; backend: codes of candidates.BACKENDS (0 ddp, 1 fsdp, 2 deepspeed); layer_held: one
    block's parameters on this TP rank; cast_held: the Linear parameters autocast copies under DDP
    (default: all of `held`).
    """
    cast_held = held if cast_held is None else cast_held
    held, shard, zero, layer_held, backend, cast_held = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (held, shard, zero, layer_held, backend, cast_held)))
    c = compute_bytes(precision)
    mixed = precision != "fp32"
    ddp, fsdp = backend == 0, backend == 1
    bucket = np.minimum(DEEPSPEED_BUCKET_ELEMENTS, held) * c

    def per(stage_min):   # divide by the shard group from this ZeRO stage on
        return np.where(zero >= stage_min, shard, 1.0)

    fp32_states = {  # DDP and FSDP keep fp32 parameters, gradients and moments in every precision
        "params": 4 * held / np.where(fsdp, shard, 1.0),
        "gradients": 4 * held / np.where(fsdp, shard, 1.0),
        "optimizer": 8 * held / np.where(fsdp, shard, 1.0),
    }
    ddp_copies = (2 * cast_held) if mixed else np.zeros_like(held)
    fsdp_copies = np.where(zero >= 3, 0.0, c * held)            # ZeRO-2 style: unsharded all stage
    fsdp_buffers = np.where(zero >= 3, 2 * layer_held * c, 0.0) + 4 * layer_held + np.where(zero == 1, 4 * held, 0.0)

    # ZeRO-1..3 keep the module's weights in the compute dtype (sharded at stage 3) and, even in
    # fp32, a separate fp32 master partition; gradients are reduced into a compute-dtype partition
    # and copied to fp32 for the step, both alive then (c + 4 bytes / N). Stage 0 (BF16_Optimizer
    # in mixed precision) keeps 16-bit gradients and an fp32 accumulator for all parameters.
    ds_params = c * held / per(3)
    ds_grads = np.where(zero >= 1, (c + 4) * held / shard, (2 + 4 if mixed else 4) * held)
    ds_optim = np.where(zero >= 1, (4 + 8) * held / shard, (4 + 8 if mixed else 8) * held)
    ds_buffers = np.where(zero >= 1, bucket, 0.0) + np.where(zero >= 3, 2 * layer_held * c, 0.0)

    return {
        "params": np.select([ddp, fsdp], [fp32_states["params"]] * 2, ds_params),
        "compute_copies": np.select([ddp, fsdp], [ddp_copies, fsdp_copies], 0.0),
        "gradients": np.select([ddp, fsdp], [fp32_states["gradients"]] * 2, ds_grads),
        "optimizer": np.select([ddp, fsdp], [fp32_states["optimizer"]] * 2, ds_optim),
        "buffers": np.select([ddp, fsdp], [np.zeros_like(held), fsdp_buffers], ds_buffers),
    }


def deepspeed_accounting_states(held, shard, zero, largest_layer_held) -> dict[str, np.ndarray]:
    """Model states per GPU as DeepSpeed's estimators count them (no offload), split into parts.

    Stage 2: 2Ψ + 18Ψ/N (16-bit weights; 16-bit and fp32 gradients, fp32 master, moments sharded);
    stage 3: 4·largest layer + 18Ψ/N; stages 0/1 from the ZeRO paper with K = 12.
    """
    held, shard, zero, largest = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (held, shard, zero, largest_layer_held)))
    sharded18 = np.floor(18 * held / shard)      # DeepSpeed truncates with int()
    optimizer = np.select([zero >= 1], [12 * held / shard], 12 * held)
    weights = np.where(zero >= 3, 2 * largest, 2 * held)
    gradients = np.select([zero >= 3, zero == 2], [2 * largest + sharded18 - optimizer,
                                                   sharded18 - optimizer], 2 * held)
    zeros = np.zeros_like(held)
    return {"params": weights, "compute_copies": zeros, "gradients": gradients,
            "optimizer": optimizer, "buffers": zeros}


def deepspeed_model_states(total_params: int, largest_layer: int, gpus_per_node: int, nodes: int,
                           stage: int, cpu_offload: bool = False, cpu_offload_params: bool = False,
                           zero_init: bool = True,
                           buffer_factor: float = DEEPSPEED_BUFFER_FACTOR) -> tuple[int, int]:
    """(CPU bytes, GPU bytes) of model states for ZeRO-2 or ZeRO-3 with DeepSpeed's offload options,
    following the arithmetic of DeepSpeed's `estimate_zero{2,3}_model_states_mem_needs`."""
    gpus = gpus_per_node * nodes
    if stage == 2:
        if cpu_offload:
            return int(total_params * max(4 * gpus, 16) * buffer_factor), int(2 * total_params)
        return (int(total_params * 4 * gpus_per_node * buffer_factor),
                int(2 * total_params + int(18 * total_params / gpus)))
    if stage != 3:
        raise ValueError("DeepSpeed estimates model states for stages 2 and 3 only")
    per_node = 1 / nodes
    largest_bytes = 4 * largest_layer
    if cpu_offload and cpu_offload_params:
        host = 18 * per_node if zero_init else max(4 * gpus_per_node, 18 * per_node)
        return int(total_params * host * buffer_factor), int(largest_bytes)
    if cpu_offload:
        host = 16 * per_node if zero_init else max(4 * gpus_per_node, 16 * per_node)
        return (int(total_params * host * buffer_factor),
                int(largest_bytes + int(2 * total_params / gpus)))
    host = largest_layer * 4 * gpus_per_node if zero_init else total_params * 4 * gpus_per_node
    return int(host * buffer_factor), int(largest_bytes + int(18 * total_params / gpus))

"""Tensor parallelism (Megatron-style, Shoeybi et al. 2019) with DTensor, optionally with sequence
parallelism (Korthikanti et al. 2022).

Per block: the fused QKV and the MLP's input projections are split by output columns, the output
projections by input rows, so each block needs one all-reduce in forward and one in backward per
sub-layer (a reduce-scatter / all-gather pair with sequence parallelism, which also splits the
norms' work and activations along the sequence). The embedding is split by vocabulary and the head
by vocabulary columns, and the loss is computed on those shards (`loss_parallel`), so the full
logits are never gathered.

Every parameter becomes a DTensor on the tensor-parallel mesh, the norms' replicated ones included,
so that clipping, the optimizer and FSDP see one kind of tensor.

With sequence parallelism, `lean_sp` (the default) has the column-parallel matmuls save their
input as this rank's sequence shard and all-gather it again in backward (parallel/lean_sequence.py):
1/tp of the norm outputs' bytes for one more all-gather per module input. `lean_sp=False` keeps
the gathered copy, as torch's ColwiseParallel does.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import (ColwiseParallel, ParallelStyle, PrepareModuleInput, RowwiseParallel,
                                               SequenceParallel, loss_parallel, parallelize_module)

from parallel.lean_sequence import LeanColwise, lean_plan


class Replicated(ParallelStyle):
    """A module every tensor-parallel rank runs whole on the same input (a norm without sequence
    parallelism, the position embedding): its parameters become replicated DTensors and its output
    a local tensor, optionally only this rank's slice along `output_shard_dim`."""

    def __init__(self, output_shard_dim: int | None = None):
        super().__init__()
        self.output_shard_dim = output_shard_dim

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def replicate_params(name, mod, mesh):
            for key, param in list(mod.named_parameters(recurse=False)):
                mod.register_parameter(key, nn.Parameter(distribute_tensor(param, mesh, [Replicate()])))

        def as_replicated(mod, inputs, mesh):
            return tuple(DTensor.from_local(x, mesh, [Replicate()], run_check=False)
                         if isinstance(x, torch.Tensor) and not isinstance(x, DTensor) else x
                         for x in inputs)

        def to_local(mod, output, mesh):
            if self.output_shard_dim is not None:
                output = output.redistribute(mesh, [Shard(self.output_shard_dim)])
            return output.to_local()

        return distribute_module(module, device_mesh, replicate_params, as_replicated, to_local)


def _norm(sp: bool, sequence_dim: int = 1) -> ParallelStyle:
    return SequenceParallel(sequence_dim=sequence_dim, use_local_output=True) if sp else Replicated()


def apply_tensor_parallel(model: nn.Module, mesh: DeviceMesh, sequence_parallel: bool,
                          lean_sp: bool = True) -> nn.Module:
    """Split `model` (the trainer's Transformer, or one pipeline stage of it) over the 1-D `mesh`
    in place. Between blocks the residual stream is a local tensor: whole (replicated) without
    sequence parallelism, this rank's slice of the sequence with it; `lean_sp` (with sequence
    parallelism only) saves the matmuls' inputs as that slice."""
    sp = sequence_parallel
    lean = sp and lean_sp
    stream: Placement = Shard(1) if sp else Replicate()
    plan: dict[str, ParallelStyle] = {}
    if model.tok_embeddings is not None:
        plan["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=stream)
        if model.pos_embeddings is not None:   # positions for this rank's slice of the sequence
            plan["pos_embeddings"] = Replicated(output_shard_dim=0 if sp else None)
    if model.output is not None:
        plan["norm"] = _norm(sp)
        plan["output"] = (LeanColwise(local_output=False) if lean else
                          ColwiseParallel(input_layouts=stream, output_layouts=Shard(-1), use_local_output=False))
    for name, block in model.layers.items():
        prefix = f"layers.{name}"
        plan.update({
            f"{prefix}.attn_norm": _norm(sp),
            f"{prefix}.attn": PrepareModuleInput(input_layouts=(stream, None), desired_input_layouts=(Replicate(), None)),
            f"{prefix}.attn.wqkv": ColwiseParallel(),
            f"{prefix}.attn.wo": RowwiseParallel(output_layouts=stream),
            f"{prefix}.mlp_norm": _norm(sp),
            f"{prefix}.mlp": PrepareModuleInput(input_layouts=(stream,), desired_input_layouts=(Replicate(),)),
            f"{prefix}.mlp.w_in": ColwiseParallel(),
            f"{prefix}.mlp.w_out": RowwiseParallel(output_layouts=stream),
        })
        if block.mlp.w_gate is not None:
            plan[f"{prefix}.mlp.w_gate"] = ColwiseParallel()
        if lean:   # the same splits, gathering each module's input once and saving only its shard
            plan.update(lean_plan(f"{prefix}.attn", ["wqkv"]))
            plan.update(lean_plan(f"{prefix}.mlp", ["w_in"] + (["w_gate"] if block.mlp.w_gate is not None else [])))
        if block.attn.q_norm is not None:   # per head: this rank's heads are a shard of dim 1 of (B, N, T, H)
            plan[f"{prefix}.attn.q_norm"] = SequenceParallel(sequence_dim=1, use_local_output=True)
            plan[f"{prefix}.attn.k_norm"] = SequenceParallel(sequence_dim=1, use_local_output=True)
    parallelize_module(model, mesh, plan)
    if model.cfg.tie_embeddings and model.tok_embeddings is not None and model.output is not None:
        # Both are split by vocabulary rows (Shard(0)): the tie survives as one DTensor.
        model.output.weight = model.tok_embeddings.weight
    return model


def loss_context(tensor_parallel: bool) -> ContextManager:
    """Where the loss is computed and differentiated: on vocabulary shards under tensor parallelism."""
    return loss_parallel() if tensor_parallel else contextlib.nullcontext()

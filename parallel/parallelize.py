"""Compose the parallelisms in one fixed order.

PP split -> TP -> activation checkpointing -> compile -> FSDP/DDP. Each technique lives in its own
file as `apply_x(model, mesh, ...)`; the order matters because later wrappers must see the modules
earlier ones produced (TP turns parameters into DTensors that FSDP then shards on a 2-D mesh, FSDP
must shard the recomputing, compiled blocks, DDP must wrap the final module). DeepSpeed, which owns
the optimizer and the step as well, is not applied here: `parallel/zero.py` builds its engine from
the module this returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh

from parallel.context import ContextParallel, apply_context_parallel
from parallel.ddp import apply_ddp
from parallel.fsdp import apply_fsdp
from parallel.layout import Layout
from parallel.mesh import data_parallel_mesh
from parallel.pipeline import keep_local_stages
from parallel.recompute import apply_compile, apply_recompute
from parallel.tensor import apply_tensor_parallel


@dataclass
class Parallelized:
    module: nn.Module                  # every parameter this rank holds, under its full name
    stages: list[nn.Module] = field(default_factory=list)   # this rank's pipeline stages (pp > 1)
    average_over: Optional[dist.ProcessGroup] = None        # data-parallel group to average gradients over by hand
    pipeline_group: Optional[dist.ProcessGroup] = None       # stages of one pipeline: gradient norms add up over it
    context: Optional[ContextParallel] = None                # cp > 1: feeds this rank's chunks of each sequence


def parallelize(model: nn.Module, layout: Layout, backend: str, mesh: DeviceMesh, device: torch.device,
                compute_dtype: torch.dtype = torch.float32, bucket_mb: int = 25, cpu_offload: bool = False,
                blocks: str = "layers", compile_blocks: bool = False) -> Parallelized:
    """The model prepared for `layout` under `backend` (ddp, fsdp or deepspeed); `model` holds its
    initial weights (on `device` for DDP; anywhere for FSDP, which moves its shards there)."""
    stages = [model]
    if layout.pp > 1:
        model, stages = keep_local_stages(model, mesh["pp"].get_local_rank(), layout.pp, layout.vpp,
                                          layout.pp_layers)
    if layout.tp > 1:
        apply_tensor_parallel(model, mesh["tp"], layout.sequence_parallel, lean_sp=layout.lean_sp)
    # context parallelism swaps each attention core, before recomputation wraps it
    context = apply_context_parallel(model, mesh["cp"], blocks) if layout.cp > 1 else None
    apply_recompute(model, blocks, layout.recompute)
    if compile_blocks:
        apply_compile(model, blocks)
    result = Parallelized(model, stages if layout.pp > 1 else [],
                          pipeline_group=mesh["pp"].get_group() if layout.pp > 1 else None, context=context)
    if backend == "fsdp":
        apply_fsdp(model, stages, data_parallel_mesh(mesh, layout), blocks, compute_dtype,
                   reshard_after_forward=layout.zero_stage >= 3, cpu_offload=cpu_offload)
    elif backend == "ddp" and layout.tp == 1 and layout.pp == 1:
        result.module = apply_ddp(model, data_parallel_mesh(mesh, layout), device, bucket_mb)
    elif backend == "ddp" and layout.dp * layout.cp > 1:
        # DDP cannot wrap DTensor parameters or a pipeline stage: the engine averages gradients itself
        # (over dp_replicate: the ddp backend shards nothing).
        result.average_over = data_parallel_mesh(mesh, layout).get_group()
    return result

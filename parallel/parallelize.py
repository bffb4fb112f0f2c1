"""Compose the parallelisms in one fixed order.

PP split -> TP -> activation checkpointing -> compile -> FSDP/DDP. Each technique lives in its own
file as `apply_x(model, mesh, ...)`; the order matters because later wrappers must see the modules
earlier ones produced (FSDP must shard the recomputing blocks, DDP must wrap the final module).
DeepSpeed, which owns the optimizer and the step as well, is not applied here: `parallel/zero.py`
builds its engine from the module this returns.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh

from parallel.ddp import apply_ddp
from parallel.fsdp import apply_fsdp
from parallel.layout import Layout
from parallel.mesh import data_parallel_mesh
from parallel.recompute import apply_recompute


def parallelize(model: nn.Module, layout: Layout, backend: str, mesh: DeviceMesh, device: torch.device,
                compute_dtype: torch.dtype = torch.float32, bucket_mb: int = 25, cpu_offload: bool = False,
                blocks: str = "layers") -> nn.Module:
    """Return the model prepared for `layout` under `backend` (ddp, fsdp or deepspeed); `model`
    holds its initial weights (on `device` for DDP; anywhere for FSDP, which moves its shards there)."""
    # Pipeline split and tensor parallelism go first, as they land.
    model = apply_recompute(model, blocks, layout.recompute)
    # torch.compile of blocks goes here.
    if backend == "fsdp":
        return apply_fsdp(model, data_parallel_mesh(mesh, layout), blocks, compute_dtype,
                          reshard_after_forward=layout.zero_stage >= 3, cpu_offload=cpu_offload)
    if backend == "ddp":
        return apply_ddp(model, data_parallel_mesh(mesh, layout), device, bucket_mb)
    return model

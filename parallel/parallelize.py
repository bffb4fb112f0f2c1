"""Compose the parallelisms in one fixed order.

PP split -> TP -> activation checkpointing -> compile -> FSDP/DDP. Each technique lives in its own
file as `apply_x(model, mesh, ...)`; the order matters because later wrappers must see the modules
earlier ones produced (e.g. DDP must wrap the final, tensor-parallel module).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh

from parallel.ddp import apply_ddp
from parallel.layout import Layout


def parallelize(model: nn.Module, layout: Layout, mesh: DeviceMesh, device: torch.device,
                bucket_mb: int = 25) -> nn.Module:
    """Return the model wrapped for `layout`; `model` must already hold its weights on `device`."""
    # Pipeline split, tensor parallelism, activation checkpointing and compile go here, in that
    # order, as they land; data parallelism always comes last.
    return apply_ddp(model, mesh, device, bucket_mb)

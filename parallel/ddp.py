"""Replicated data parallelism: DistributedDataParallel over the data-parallel mesh."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.nn.parallel import DistributedDataParallel


def apply_ddp(model: nn.Module, mesh: DeviceMesh, device: torch.device, bucket_mb: int = 25) -> nn.Module:
    """Wrap `model` (already materialized on `device`); parameters are broadcast from rank 0."""
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        process_group=mesh.get_group(),
        bucket_cap_mb=bucket_mb,
        # Views of gradients into the buckets: saves one gradient-sized copy per step.
        gradient_as_bucket_view=True,
    )

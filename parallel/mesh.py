"""Layout -> DeviceMesh: the only place that turns layout factors into process groups."""
from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from parallel.layout import MESH_DIMS, Layout

DATA_PARALLEL_DIMS = ("dp_replicate", "dp_shard")


def build_mesh(layout: Layout, device: torch.device) -> DeviceMesh:
    """A 4-D mesh (pp, dp_replicate, dp_shard, tp), size 1 where unused. Tensor parallelism is
    innermost, so its ranks (one all-reduce per sub-layer) are neighbours on one node; pipeline
    stages, which only pass activations to the next stage, are outermost."""
    return init_device_mesh(device.type, layout.mesh_shape, mesh_dim_names=MESH_DIMS)


def data_parallel_mesh(mesh: DeviceMesh, layout: Layout) -> DeviceMesh:
    """The sub-mesh a data-parallel wrapper works over: both dimensions for HSDP (replicate ×
    shard), else the one that is larger than 1 (shard when neither is)."""
    if layout.dp_replicate > 1 and layout.dp_shard > 1:
        return mesh[DATA_PARALLEL_DIMS]
    return mesh["dp_replicate"] if layout.dp_replicate > 1 else mesh["dp_shard"]


def data_parallel_rank(mesh: DeviceMesh, layout: Layout) -> int:
    """This rank's index among the data-parallel ranks: which slice of each batch it reads."""
    return mesh["dp_replicate"].get_local_rank() * layout.dp_shard + mesh["dp_shard"].get_local_rank()

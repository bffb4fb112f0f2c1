"""Layout -> DeviceMesh: the only place that turns layout factors into process groups."""
from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from parallel.layout import Layout

DATA_PARALLEL_DIMS = ("dp_replicate", "dp_shard")


def build_mesh(layout: Layout, device: torch.device) -> DeviceMesh:
    """A mesh with one named dimension per data-parallel factor (size 1 where unused): replicas
    outermost, so the ranks of one shard group are neighbours (the same node, where it fits).
    Tensor and pipeline parallelism add their named dimensions here."""
    if layout.tp != 1 or layout.pp != 1:
        raise ValueError(f"tensor/pipeline parallelism is not available yet (tp={layout.tp}, pp={layout.pp})")
    return init_device_mesh(device.type, (layout.dp_replicate, layout.dp_shard), mesh_dim_names=DATA_PARALLEL_DIMS)


def data_parallel_mesh(mesh: DeviceMesh, layout: Layout) -> DeviceMesh:
    """The sub-mesh a data-parallel wrapper works over: both dimensions for HSDP (replicate ×
    shard), else the one that is larger than 1 (shard when neither is)."""
    if layout.dp_replicate > 1 and layout.dp_shard > 1:
        return mesh[DATA_PARALLEL_DIMS]
    return mesh["dp_replicate"] if layout.dp_replicate > 1 else mesh["dp_shard"]

"""Layout -> DeviceMesh: the only place that turns layout factors into process groups."""
from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from parallel.layout import MESH_DIMS, Layout

DATA_PARALLEL_DIMS = ("dp_replicate", "dp_shard")
# Context-parallel ranks hold the same parameters, as data-parallel ones do: the wrappers shard and
# average over them too, through these flattened dimensions of the one mesh.
SHARD_CP, REPLICATE_CP = "dp_shard_cp", "dp_cp"


def build_mesh(layout: Layout, device: torch.device) -> DeviceMesh:
    """A 5-D mesh (pp, dp_replicate, dp_shard, cp, tp), size 1 where unused. Tensor parallelism is
    innermost, so its ranks (one all-reduce per sub-layer) are neighbours on one node, and context
    parallelism (one K/V all-gather per layer) next to it; pipeline stages, which only pass
    activations to the next stage, are outermost. With cp > 1 it also names dp_shard × cp
    (SHARD_CP: what FSDP shards over) and dp_replicate × dp_shard × cp (REPLICATE_CP: what DDP
    averages over)."""
    mesh = init_device_mesh(device.type, layout.mesh_shape, mesh_dim_names=MESH_DIMS)
    if layout.cp > 1:
        mesh[("dp_shard", "cp")]._flatten(SHARD_CP)
        mesh[("dp_replicate", "dp_shard", "cp")]._flatten(REPLICATE_CP)
    return mesh


def data_parallel_mesh(mesh: DeviceMesh, layout: Layout) -> DeviceMesh:
    """The sub-mesh a data-parallel wrapper works over: both dimensions for HSDP (replicate ×
    shard), else the one that is larger than 1 (shard when neither is). Context-parallel ranks join
    it: FSDP shards over dp_shard × cp (HSDP: dp_replicate × (dp_shard × cp)); nothing sharded
    (zero_stage 0: DDP, or gradients averaged by hand) is one group over dp × cp."""
    if layout.cp > 1:
        if layout.zero_stage == 0:
            return mesh[REPLICATE_CP]
        return mesh[("dp_replicate", SHARD_CP)] if layout.dp_replicate > 1 else mesh[SHARD_CP]
    if layout.dp_replicate > 1 and layout.dp_shard > 1:
        return mesh[DATA_PARALLEL_DIMS]
    return mesh["dp_replicate"] if layout.dp_replicate > 1 else mesh["dp_shard"]


def data_parallel_rank(mesh: DeviceMesh, layout: Layout) -> int:
    """This rank's index among the data-parallel ranks: which slice of each batch it reads (the
    context-parallel ranks of one replica read the same sequences, each its own chunks of them)."""
    return mesh["dp_replicate"].get_local_rank() * layout.dp_shard + mesh["dp_shard"].get_local_rank()

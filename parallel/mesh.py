"""Layout -> DeviceMesh: the only place that turns layout factors into process groups."""
from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from parallel.layout import Layout


def build_mesh(layout: Layout, device: torch.device) -> DeviceMesh:
    """A mesh with one named dimension per parallelism in use; `dp` always exists."""
    # Only data parallelism runs today, so the mesh is 1-D; TP/PP add named dimensions here.
    if layout.tp != 1 or layout.pp != 1:
        raise ValueError(f"tensor/pipeline parallelism is not available yet (tp={layout.tp}, pp={layout.pp})")
    return init_device_mesh(device.type, (layout.dp,), mesh_dim_names=("dp",))

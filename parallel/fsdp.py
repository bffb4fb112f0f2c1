"""Fully sharded data parallelism with FSDP2 (`fully_shard`): ZeRO stages 1, 2 and 3, and HSDP.

Each block is its own unit (all-gathered just before it runs, so only one or two blocks are whole at
a time), then each root takes what is left: embeddings, final norm and head. A root is the whole
model, or each pipeline stage (its forward is what the schedule calls). On a 2-D mesh (dp_replicate
× dp_shard) states are sharded within a replica group and gradients all-reduced across groups: HSDP.
Tensor-parallel DTensor parameters are sharded again over the data-parallel mesh (2-D FSDP × TP).

The three ZeRO stages are three settings of the same wrapper (parallel/layout.py's BACKEND_STAGES):
optimizer states and the fp32 master weights are always sharded; stage 3 frees each block's gathered
weights after its forward and its backward; stages 1 and 2 keep them gathered from the first forward
of a step to its last backward (one all-gather per step, as ZeRO-1/2 keep whole weights). Stage 2
reduce-scatters gradients after every micro-batch, so only shards accumulate; stage 1 accumulates
whole gradients and reduces them once, on the step's last micro-batch. This is how ZeRO-1/2 compose
with tensor, pipeline and context parallelism here, where DeepSpeed's engine runs data parallelism only.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard


def apply_fsdp(model: nn.Module, stages: list[nn.Module], mesh: DeviceMesh, blocks: str,
               compute_dtype: torch.dtype, reshard_after_forward: bool, cpu_offload: bool = False) -> nn.Module:
    """Shard `model` in place; `blocks` names its dict of transformer blocks; `stages`: this rank's
    pipeline stages (empty without pipeline parallelism), each a root.

    reshard_after_forward=True frees each block's gathered weights after its forward (ZeRO-3);
    False keeps them until its backward, trading memory for one all-gather fewer (ZeRO-1/2).
    Parameters stay fp32 shards; they are cast to `compute_dtype` when gathered and gradients are
    reduced in fp32, which is what autocast would do, without its per-op casts.
    """
    mixed = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    # pinned host memory needs a GPU to pin for
    offload = CPUOffloadPolicy(pin_memory=mesh.device_type == "cuda") if cpu_offload else OffloadPolicy()
    options = dict(mesh=mesh, mp_policy=mixed, reshard_after_forward=reshard_after_forward, offload_policy=offload)
    for block in model.get_submodule(blocks).values():
        fully_shard(block, **options)
    for root in stages or [model]:
        fully_shard(root, **options)
    return model


def sync_micro_batch(module: nn.Module, zero_stage: int, last: bool) -> None:
    """Set how FSDP2 treats the next backward of a step's micro-batches (`module`: a root, the model
    or a pipeline stage; `last`: the step's last micro-batch). Gradients are reduced every micro-batch
    from stage 2 on, else only on the last; gathered weights are kept between micro-batches below
    stage 3 and freed after the last backward, before the optimizer updates the shards."""
    module.set_requires_gradient_sync(last or zero_stage >= 2)
    module.set_reshard_after_backward(last or zero_stage >= 3)
    module.set_is_last_backward(last)

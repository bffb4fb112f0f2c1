"""Pipeline parallelism with `torch.distributed.pipelining`: the model cut into stages by layers,
and the schedule that runs micro-batches through them.

The cut (blocks per stage) is parallel/layout.py's, even or balanced, so the planner counts the same.
Stages are assigned round-robin (Narayanan et al. 2021's interleaving): with pp ranks and vpp
stages per rank, rank r runs stages r, r + pp, r + 2·pp, ... Each stage is a view of the same
module (`Transformer` with its other layers removed), so every parameter keeps its name and a
checkpoint reshards between pipeline and non-pipeline layouts.

Under FSDP2 each stage is a root. torch's stage runs every micro-batch's backward without reducing
and reduces once after the last: ZeRO-1's way. Stages 2 and 3 reduce-scatter in each micro-batch's
backward instead (`_ShardedGradientStage`), so only gradient shards accumulate; under zero_bubble,
whose weight gradients come apart from the input gradients, every stage reduces once at the end and
keeps its weights gathered from a micro-batch's backward to the step's end.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining._backward import stage_backward
from torch.distributed.pipelining.schedules import (Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B,
                                                    ScheduleInterleavedZeroBubble, _PipelineSchedule)

from parallel.fsdp import sync_micro_batch
from parallel.stage_cut import stage_layers

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B, "interleaved": ScheduleInterleaved1F1B,
             "zero_bubble": ScheduleInterleavedZeroBubble}
MULTI_STAGE = ("interleaved", "zero_bubble")   # schedules that take a list of stages per rank
SPLIT_BACKWARD = ("zero_bubble",)   # schedules that compute weight gradients apart from input gradients


def stage_ids(pp_rank: int, pp: int, vpp: int) -> list[int]:
    return [pp_rank + chunk * pp for chunk in range(vpp)]


def keep_local_stages(model: nn.Module, pp_rank: int, pp: int, vpp: int,
                      pp_layers: Optional[tuple[int, ...]] = None) -> tuple[nn.Module, list[nn.Module]]:
    """Remove from `model` (in place) what no stage of this rank runs; return it, holding all of this
    rank's parameters under their full names, and one module per local stage sharing its parts.
    `pp_layers`: blocks per stage (parallel/layout.py's stage_layer_counts balances them when None)."""
    n_stages, n_layers = pp * vpp, len(model.layers)
    mine = stage_ids(pp_rank, pp, vpp)
    kept = {str(i) for stage in mine for i in stage_layers(n_layers, n_stages, stage, pp_layers)}
    for name in [name for name in model.layers if name not in kept]:
        del model.layers[name]
    if 0 not in mine:
        model.tok_embeddings, model.pos_embeddings = None, None
    if n_stages - 1 not in mine:
        model.norm, model.output = None, None
    stages = []
    for stage in mine:
        part = copy.copy(model)             # shares parameters and buffers; its own list of children
        part._modules = dict(model._modules)
        part.layers = nn.ModuleDict({str(i): model.layers[str(i)]
                                     for i in stage_layers(n_layers, n_stages, stage, pp_layers)})
        if stage != 0:
            part.tok_embeddings, part.pos_embeddings = None, None
        if stage != n_stages - 1:
            part.norm, part.output = None, None
        stages.append(part)
    return model, stages


class _ShardedGradientStage(PipelineStage):
    """A stage whose FSDP2 root reduce-scatters gradients in each micro-batch's full backward (ZeRO
    stage 2 keeping its gathered weights until the step's end, stage 3 freeing them each time). The
    schedule's closing reduction (`perform_reduce_grad`) then finds no whole gradients left, reshards
    and waits for the reductions in flight. Not for SPLIT_BACKWARD schedules: a reduction or reshard
    between a micro-batch's input and weight gradients would lose the latter."""

    def __init__(self, *args, zero_stage: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.zero_stage = zero_stage

    def backward_maybe_with_nosync(self, backward_type, bwd_kwargs: dict, last_backward: bool = False):
        if backward_type != "full" or not isinstance(self.submod, FSDPModule):
            return super().backward_maybe_with_nosync(backward_type, bwd_kwargs, last_backward)
        sync_micro_batch(self.submod, self.zero_stage, last=False)   # the closing reduction finishes the step
        grads = stage_backward(bwd_kwargs["stage_output"], bwd_kwargs["output_grads"], bwd_kwargs["input_values"])
        return grads, None


def build_schedule(stages: list[nn.Module], pp_rank: int, pp: int, vpp: int, mesh: DeviceMesh,
                   device: torch.device, schedule: str, n_micro: int,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   zero_stage: int = 0) -> _PipelineSchedule:
    """The schedule over this rank's stages; `loss_fn(output, target)` on the last stage, per
    micro-batch (gradients are averaged over the `n_micro` micro-batches). `zero_stage` 2 or 3 of an
    FSDP2 model: gradients reduce-scattered every micro-batch, except under SPLIT_BACKWARD schedules."""
    group = mesh.get_group()
    per_micro_batch = zero_stage >= 2 and schedule not in SPLIT_BACKWARD
    kind = _ShardedGradientStage if per_micro_batch else PipelineStage
    options = {"zero_stage": zero_stage} if per_micro_batch else {}
    pipeline_stages = [kind(module, stage, pp * vpp, device, group=group, **options)
                       for module, stage in zip(stages, stage_ids(pp_rank, pp, vpp))]
    kind = SCHEDULES[schedule]
    if schedule in MULTI_STAGE:
        return kind(pipeline_stages, n_microbatches=n_micro, loss_fn=loss_fn, scale_grads=True)
    return kind(pipeline_stages[0], n_microbatches=n_micro, loss_fn=loss_fn, scale_grads=True)

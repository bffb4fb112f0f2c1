"""One optimizer step over a list of micro-batches: the unit the loop repeats."""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
import torch.distributed as dist

from parallel.gradients import local
from trainer.engine import Engine
from trainer.guards import SpikeGuard
from trainer.noise_scale import GradientNoiseScale

StepResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor]   # (loss on this rank, grad norm, skipped)


def train_step(engine: Engine, micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n_micro: int,
               grad_clip: float, device: torch.device, *, z_loss: float = 0.0, guard: Optional[SpikeGuard] = None,
               measure: bool = False, fault: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
               force_skip: bool = False, noise: Optional[GradientNoiseScale] = None) -> StepResult:
    """Accumulate gradients over `n_micro` micro-batches, clip, and step unless the guard skips the
    update. Returns (mean loss on this rank, global grad norm, skipped) as device tensors: no host
    synchronization here.

    The engine reduces gradients across data-parallel ranks once per step where its backend allows
    (`accumulate(last)` tells it which micro-batch is the last). `fault` (fault injection) may
    rewrite each micro-batch's loss before its backward; `force_skip` skips the update as a guard would.
    `noise` takes the first micro-batch's gradient norm on this rank and the step's (needs n_micro > 1
    and an engine with `local_gradients`).
    """
    small_sq = None
    forward_backward = getattr(engine, "forward_backward", None)   # a pipeline runs its own schedule
    if forward_backward is not None:
        loss_sum = forward_backward(micro_batches, n_micro, device, z_loss=z_loss, fault=fault)
    else:
        loss_sum = torch.zeros((), device=device)
        for index, (inputs_BT, targets_BT) in enumerate(micro_batches):
            with engine.accumulate(last=index == n_micro - 1):
                with engine.autocast():
                    loss = engine.module(inputs_BT.to(device, non_blocking=True),
                                         targets_BT.to(device, non_blocking=True), z_loss=z_loss)
                    loss = local(loss) / n_micro   # a replicated DTensor under tensor parallelism
                if fault is not None:
                    loss = fault(loss)
                engine.backward(loss)
            if noise is not None and index == 0:   # this micro-batch's gradient, divided by n_micro
                small_sq = engine.local_grad_sq() * n_micro ** 2
            loss_sum += loss.detach()
    decide = None
    if guard is not None:
        global_loss = loss_sum.clone()
        if dist.is_initialized():
            dist.all_reduce(global_loss)   # a SUM (gloo has no AVG)
            global_loss /= dist.get_world_size()
        decide = lambda grad_norm: guard.check(global_loss, grad_norm, force_skip)  # noqa: E731
    grad_norm, skipped = engine.step(grad_clip, measure, decide)
    if small_sq is not None:
        noise.observe(small_sq, grad_norm.float().square(), keep=~skipped)
    return loss_sum, grad_norm, skipped

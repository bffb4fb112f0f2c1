"""Gradient accumulation over micro-batches, for the engines whose forward and backward the loop
side drives one micro-batch at a time (torch's DDP/FSDP and DeepSpeed; a pipeline's schedule runs its own)."""
from __future__ import annotations

from typing import Callable, ContextManager, Optional

import torch

from parallel.gradients import local
from trainer.engines import Batches, StepRequest


def accumulate(batches: Batches, n_micro: int, request: StepRequest, device: torch.device, *,
               module: torch.nn.Module, accumulate_context: Callable[[bool], ContextManager],
               autocast: Callable[[], ContextManager], backward: Callable[[torch.Tensor], None],
               local_grad_sq: Optional[Callable[[], torch.Tensor]] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Forward and backward of each micro-batch, each loss divided by `n_micro` so the gradients add
    up to the step's mean. Returns (summed scaled losses, the first micro-batch's |g|² × n_micro² or None).

    `accumulate_context(last)` lets the backend reduce across ranks once, on the last micro-batch.
    """
    loss_sum, first_sq = torch.zeros((), device=device), None
    for index, (inputs_BT, targets_BT) in enumerate(batches):
        with accumulate_context(index == n_micro - 1):
            with autocast():
                loss = module(inputs_BT.to(device, non_blocking=True), targets_BT.to(device, non_blocking=True),
                              z_loss=request.z_loss)
                loss = local(loss) / n_micro   # a replicated DTensor under tensor parallelism
            if request.loss_hook is not None:
                loss = request.loss_hook(loss)
            backward(loss)
        if index == 0 and request.first_grad_sq and local_grad_sq is not None:
            first_sq = local_grad_sq() * n_micro ** 2   # this micro-batch's gradient, undivided
        loss_sum += loss.detach()
    return loss_sum, first_sq

"""Fault injection, to drill the guards and the recovery paths: what each configured fault does to a
step's loss, its gradients or the process. Only its callback (trainer/callbacks/fault_injection.py)
and tests import this module: no other code knows that drills exist."""
from __future__ import annotations

import os
import signal
from typing import Callable, Optional

import torch

from trainer.config import FaultConfig

LossHook = Callable[[torch.Tensor], torch.Tensor]


class ScaleGradient(torch.autograd.Function):
    """Identity forward, gradients ×scale backward: the gradient moves, the loss does not."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def scale_gradient(scale: float) -> LossHook:
    return lambda loss: ScaleGradient.apply(loss, scale)


poison_gradient = scale_gradient(float("nan"))   # a bad gradient on one rank


def loss_hook(faults: FaultConfig, step: int, on_fault_rank: bool) -> Optional[LossHook]:
    """The rewrite of each micro-batch's loss at optimizer step `step` (1-based, counted by the data
    read, so a rollback that skips the data skips the fault), or None."""
    if step in faults.nan_grad_steps and on_fault_rank:
        return poison_gradient
    if step in faults.spike_steps and on_fault_rank:
        return lambda loss: loss * faults.spike_scale
    if faults.grad_scale_from is not None and step >= faults.grad_scale_from:
        return scale_gradient(faults.grad_scale)   # every rank, for good
    return None


def kill(signum: int) -> None:
    """A crash (SIGKILL) or a preemption notice (SIGTERM) of this very process."""
    os.kill(os.getpid(), signum)


KILL, TERM = signal.SIGKILL, signal.SIGTERM

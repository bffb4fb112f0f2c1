"""One optimizer step over a list of micro-batches: the unit the loop repeats."""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch
import torch.nn as nn

from trainer.precision import Precision


def train_step(model: nn.Module, micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
               n_micro: int, optimizer: torch.optim.Optimizer, precision: Precision,
               grad_clip: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate gradients over `n_micro` micro-batches, clip, step. Returns (mean loss on this
    rank, global grad norm) as device tensors: no host synchronization here.

    Data-parallel wrappers all-reduce gradients only on the last micro-batch (`no_sync` before),
    so accumulation costs one all-reduce per step.
    """
    loss_sum = torch.zeros((), device=device)
    for index, (inputs_BT, targets_BT) in enumerate(micro_batches):
        last = index == n_micro - 1
        skip_sync = getattr(model, "no_sync", None)
        with (contextlib.nullcontext() if last or skip_sync is None else skip_sync()):
            with precision.autocast():
                loss = model(inputs_BT.to(device, non_blocking=True),
                             targets_BT.to(device, non_blocking=True)) / n_micro
            precision.backward(loss)
        loss_sum += loss.detach()
    precision.unscale(optimizer)
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    precision.step(optimizer)
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm

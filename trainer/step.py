"""One optimizer step over a list of micro-batches: the unit the loop repeats."""
from __future__ import annotations

from typing import Iterable

import torch

from trainer.engine import Engine


def train_step(engine: Engine, micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n_micro: int,
               grad_clip: float, device: torch.device, measure: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate gradients over `n_micro` micro-batches, clip, step. Returns (mean loss on this
    rank, global grad norm) as device tensors: no host synchronization here.

    The engine reduces gradients across data-parallel ranks once per step where its backend allows
    (`accumulate(last)` tells it which micro-batch is the last).
    """
    loss_sum = torch.zeros((), device=device)
    for index, (inputs_BT, targets_BT) in enumerate(micro_batches):
        with engine.accumulate(last=index == n_micro - 1):
            with engine.autocast():
                loss = engine.module(inputs_BT.to(device, non_blocking=True),
                                     targets_BT.to(device, non_blocking=True)) / n_micro
            engine.backward(loss)
        loss_sum += loss.detach()
    return loss_sum, engine.step(grad_clip, measure)

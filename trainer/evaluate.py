"""Validation loss over a fixed set of windows, split across ranks and summed back."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn

from trainer.precision import Precision


@torch.no_grad()
def validation_loss(model: nn.Module, windows_BT: torch.Tensor, micro_batch: int, rank: int,
                    world_size: int, precision: Precision, device: torch.device) -> float:
    """Mean next-token loss over all windows; each rank scores every world_size-th window.

    Every rank runs the same number of forwards (a rank short of windows scores a copy with weight
    0), since a sharded model's forward is a collective.
    """
    model.eval()
    totals = torch.zeros(2, device=device, dtype=torch.float64)  # (sum of losses, tokens)
    mine_BT = windows_BT[rank::world_size]
    forwards = math.ceil(math.ceil(len(windows_BT) / world_size) / micro_batch)
    for index in range(forwards):
        chunk_BT = mine_BT[index * micro_batch:(index + 1) * micro_batch]
        weight = 1.0 if len(chunk_BT) else 0.0
        chunk_BT = (chunk_BT if len(chunk_BT) else windows_BT[:1]).to(device)
        with precision.autocast():
            loss = model(chunk_BT[:, :-1], chunk_BT[:, 1:])
        tokens = weight * chunk_BT[:, 1:].numel()
        totals += torch.stack([loss.double() * tokens, torch.tensor(tokens, device=device, dtype=torch.float64)])
    dist.all_reduce(totals)
    model.train()
    return (totals[0] / totals[1]).item()

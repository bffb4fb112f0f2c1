"""Validation loss over a fixed set of windows, split across ranks and summed back."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from trainer.precision import Precision


@torch.no_grad()
def validation_loss(model: nn.Module, windows_BT: torch.Tensor, micro_batch: int, rank: int,
                    world_size: int, precision: Precision, device: torch.device) -> float:
    """Mean next-token loss over all windows; each rank scores every world_size-th window."""
    model.eval()
    totals = torch.zeros(2, device=device, dtype=torch.float64)  # (sum of losses, tokens)
    mine_BT = windows_BT[rank::world_size]
    for chunk_BT in mine_BT.split(micro_batch):
        chunk_BT = chunk_BT.to(device)
        with precision.autocast():
            loss = model(chunk_BT[:, :-1], chunk_BT[:, 1:])
        tokens = chunk_BT[:, 1:].numel()
        totals += torch.stack([loss.double() * tokens, torch.tensor(tokens, device=device, dtype=torch.float64)])
    dist.all_reduce(totals)
    model.train()
    return (totals[0] / totals[1]).item()

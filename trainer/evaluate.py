"""Validation loss over a fixed set of windows, split across data-parallel ranks and summed back."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from trainer.engines import Engine


def validation_loss(engine: Engine, windows_BT: torch.Tensor, dp_rank: int, dp_size: int,
                    device: torch.device) -> float:
    """Mean next-token loss over all windows; each data-parallel rank scores every dp_size-th window
    (the ranks of one model replica, tensor or pipeline parallel, score the same ones together).

    Every rank runs the same number of forwards, each of `engine.eval_batch` windows (padded with
    targets of -100, which count for nothing), since a sharded model's forward is a collective.
    """
    engine.module.eval()
    batch = engine.eval_batch
    totals = torch.zeros(2, device=device, dtype=torch.float64)  # (sum of losses, tokens)
    mine_BT = windows_BT[dp_rank::dp_size]
    forwards = math.ceil(math.ceil(len(windows_BT) / dp_size) / batch)
    for index in range(forwards):
        chunk_BT = mine_BT[index * batch:(index + 1) * batch]
        pad = batch - len(chunk_BT)
        inputs_BT = torch.cat([chunk_BT[:, :-1], windows_BT[:1, :-1].expand(pad, -1)]).to(device)
        targets_BT = torch.cat([chunk_BT[:, 1:], torch.full_like(windows_BT[:1, 1:], -100).expand(pad, -1)]).to(device)
        loss_sum = engine.score(inputs_BT, targets_BT)
        tokens = (targets_BT != -100).sum()
        totals += torch.stack([loss_sum.double(), tokens.double()])
    # every rank of a replica holds the same sums: count each replica once
    totals *= dp_size / dist.get_world_size()
    dist.all_reduce(totals)
    engine.module.train()
    return (totals[0] / totals[1]).item()

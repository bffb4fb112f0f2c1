"""Where this process runs: its rank, the world, and its device. Built by launch/ from the
environment torchrun sets, so nothing under trainer/ reads environment variables."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from planner.errors import UserError


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    restart_count: int = 0   # how often torchrun has restarted the job (faults fire in the first launch only)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str, local_rank: int) -> torch.device:
    """'auto' takes this rank's GPU when CUDA is present, else the CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA GPU is visible: use train.device=auto or cpu")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")

"""Engines: the one object the loop talks to for a backend. Each owns micro-batching and the
optimizer step (`train_step(batches, request)`), evaluation forwards (`score`) and its state dicts.

One implementation per kind, side by side:
  torch_engine.py      DDP and FSDP2 (with or without tensor parallelism), a torch optimizer, our Precision
  pipeline_engine.py   a pipeline rank: the schedule runs forward and backward of all micro-batches
  deepspeed_engine.py  DeepSpeed ZeRO-1/2/3, which owns clipping, accumulation and the step (lazy import)
The loop never asks which it has.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Protocol

import torch
import torch.nn as nn

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]   # (inputs_BT, targets_BT) per micro-batch
# Given this rank's summed micro-batch losses and the global gradient norm (device tensors), whether to
# skip the update (a bool device tensor). Collective: every rank calls it with its own loss.
Decide = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossHook = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StepRequest:
    """What one optimizer step is asked to do besides reading its batches. Callbacks may fill in the
    optional fields before the step (the guard its decision, a drill its loss hook)."""

    grad_clip: float = 0.0
    z_loss: float = 0.0
    measure: bool = False                 # a log step: count model-state bytes at the step's peak
    decide: Optional[Decide] = None       # skip the update where it says so (on device)
    loss_hook: Optional[LossHook] = None  # rewrites each micro-batch's loss before its backward
    force_skip: bool = False              # skip whatever the guard says (a drill's reference run)
    first_grad_sq: bool = False           # return the first micro-batch's local squared gradient norm


@dataclass
class StepResult:
    """Device tensors: no host synchronization in a step."""

    loss: torch.Tensor                    # the mean micro-batch loss on this rank
    grad_norm: torch.Tensor               # the global gradient norm before clipping
    skipped: torch.Tensor                 # bool: the update was not applied
    first_grad_sq: Optional[torch.Tensor] = None   # |g_micro|² × n_micro², where asked and measurable


class Engine(Protocol):
    module: nn.Module      # what forward runs on: evaluation and sampling (collective when sharded)
    eval_batch: int        # sequences `score` takes at once
    model_state_bytes: int   # parameters + gradients + optimizer states held by this rank, at the last measured step
    local_gradients: bool    # a micro-batch's whole, unreduced gradient is readable (the noise scale's small batch)

    def train_step(self, batches: Batches, request: StepRequest) -> StepResult: ...
    def set_lr(self, lr: float) -> None: ...
    def state_dict(self, for_loading: bool = False) -> tuple[dict, dict]: ...
    def load_state_dict(self, model_state: dict, optim_state: dict) -> None: ...
    def score(self, inputs_BT: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor: ...


def no_skip(device: torch.device) -> torch.Tensor:
    return torch.zeros((), dtype=torch.bool, device=device)

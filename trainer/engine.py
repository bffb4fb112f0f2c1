"""The one object the loop talks to for a backend: forward module, backward, step, state dicts.

`TorchEngine` runs DDP and FSDP2 with a torch optimizer and our `Precision`; DeepSpeed's engine
(`parallel/zero.py`) has the same methods. The loop never asks which backend it has.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Optional, Protocol

import torch
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

from parallel.held_memory import storage_bytes
from trainer.precision import Precision


# Given the global gradient norm (device tensor), whether to skip this update (bool device tensor).
Decide = Callable[[torch.Tensor], torch.Tensor]


class Engine(Protocol):
    module: nn.Module   # what forward runs on: training, evaluation and sampling (collective when sharded)

    def accumulate(self, last: bool) -> ContextManager: ...
    def autocast(self) -> ContextManager: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self, grad_clip: float, measure: bool = False,
             decide: Optional[Decide] = None) -> tuple[torch.Tensor, torch.Tensor]: ...
    def set_lr(self, lr: float) -> None: ...
    def state_dict(self, for_loading: bool = False) -> tuple[dict, dict]: ...
    def load_state_dict(self, model_state: dict, optim_state: dict) -> None: ...
    model_state_bytes: int   # parameters + gradients + optimizer states held by this rank, at the last measured step


class TorchEngine:
    """DDP or FSDP2 over a torch optimizer.

    Gradient accumulation: DDP all-reduces only on the last micro-batch (`no_sync` before). FSDP2 at
    ZeRO-2 (`reshard_after_forward=False`) likewise accumulates unsharded gradients and reduce-scatters
    once; at ZeRO-3 it reduce-scatters every micro-batch, so gradients stay sharded, as ZeRO-3 promises.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
                 reduce_every_micro_batch: bool = False):
        self.module, self.optimizer, self.precision = model, optimizer, precision
        self.reduce_every_micro_batch = reduce_every_micro_batch
        self.model_state_bytes = 0

    def accumulate(self, last: bool) -> ContextManager:
        if hasattr(self.module, "set_requires_gradient_sync"):      # FSDP2
            self.module.set_requires_gradient_sync(last or self.reduce_every_micro_batch)
            return contextlib.nullcontext()
        no_sync = getattr(self.module, "no_sync", None)              # DDP
        return contextlib.nullcontext() if last or no_sync is None else no_sync()

    def autocast(self) -> ContextManager:
        return self.precision.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        self.precision.backward(loss)

    def step(self, grad_clip: float, measure: bool = False,
             decide: Optional[Decide] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscale, clip, step unless `decide` says skip, zero gradients; returns the global gradient
        norm before clipping and the skip flag, on device. `measure`: count the model-state bytes
        while gradients and optimizer states are both alive (the step's peak)."""
        self.precision.unscale(self.optimizer)
        max_norm = grad_clip if grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
        if isinstance(grad_norm, DTensor):
            grad_norm = grad_norm.full_tensor()
        skip = decide(grad_norm) if decide is not None else torch.zeros((), dtype=torch.bool, device=grad_norm.device)
        if decide is None:
            self.precision.step(self.optimizer)
        elif self.precision.scaler is not None:
            # fp16: the loss scaler reads its overflow flag back anyway; a skipped step only updates the scale
            if bool(skip):
                self.precision.scaler.update()
            else:
                self.precision.step(self.optimizer)
        elif self.optimizer.defaults.get("fused"):
            # The fused AdamW leaves weights, moments and step count untouched where found_inf is
            # set: a skip without reading anything back to the host.
            self.optimizer.found_inf = skip.to(torch.float32)
            self.optimizer.step()
        elif not bool(skip):   # other optimizers: one host read
            self.optimizer.step()
        if measure:
            self.model_state_bytes = self.held_bytes()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, skip

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self, for_loading: bool = False) -> tuple[dict, dict]:
        """Model and optimizer state keyed by parameter name, wrappers' prefixes removed: the same
        keys under every layout, so torch.distributed.checkpoint can reshard between them. (Before
        the first step the optimizer's states are created empty, so there is something to load into.)"""
        return get_state_dict(self.module, self.optimizer)

    def load_state_dict(self, model_state: dict, optim_state: dict) -> None:
        set_state_dict(self.module, self.optimizer, model_state_dict=model_state, optim_state_dict=optim_state)

    def held_bytes(self) -> int:
        """Bytes of parameters, gradients and optimizer states this rank holds (its shards)."""
        params = list(self.module.parameters())
        states = [v for s in self.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
        return storage_bytes(params + [p.grad for p in params] + states)

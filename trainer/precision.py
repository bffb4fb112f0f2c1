"""Mixed precision: bf16 autocast, fp16 autocast with dynamic loss scaling, or plain fp32.

Parameters, gradients and optimizer states stay fp32 in every mode (autocast casts per operation;
under FSDP2 its MixedPrecisionPolicy casts the gathered weights instead, and autocast is off), so a
checkpoint is the same whatever the compute dtype.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from trainer.config import PrecisionConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    def __init__(self, cfg: PrecisionConfig, device_type: str, autocast: bool = True, sharded: bool = False):
        """autocast=False: the backend casts by itself (FSDP2's mixed-precision policy); sharded:
        gradients are shards, so an overflow found on one rank must skip the step on all."""
        self.dtype = DTYPES[cfg.dtype]
        self.device_type = device_type
        self.casts = autocast and self.dtype != torch.float32
        # fp16 has 5 exponent bits: small gradients underflow without a loss scale.
        self.scaler = None
        if cfg.dtype == "fp16":
            if sharded:
                from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

                self.scaler = ShardedGradScaler(device_type, init_scale=cfg.initial_loss_scale)
            else:
                self.scaler = torch.amp.GradScaler(device_type, init_scale=cfg.initial_loss_scale)

    def autocast(self) -> ContextManager:
        if not self.casts:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients back to their true size before clipping and measuring their norm."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step(); with a loss scale, skipped when gradients overflowed (scale then halves)."""
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)

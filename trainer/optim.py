"""AdamW with decoupled weight decay on matrices only, and the learning-rate schedules."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from trainer.config import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; norms, biases and other 1-D parameters get no weight decay (it would pull gains to 0)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # Fused on every device: one kernel per step, and it can skip an update flagged on device
    # (`found_inf`) without a host sync, which the stability guards rely on.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=True)


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then the chosen shape
    down to min_lr_ratio × lr. WSD holds the peak and decays linearly over the last
    `decay_fraction` of steps (Hu et al. 2024, MiniCPM)."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))
    decay_steps = max(1, round(cfg.decay_fraction * total_steps))
    decay_start = max(cfg.warmup_steps, total_steps - decay_steps)
    if step < decay_start:
        return peak
    progress = (step - decay_start) / max(1, total_steps - decay_start)
    return peak - (peak - floor) * min(1.0, progress)


"""AdamW with decoupled weight decay on matrices only, µP's per-group learning rates, and the
learning-rate schedules."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from trainer.config import OptimConfig
from trainer.model import Transformer


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; norms, biases and other 1-D parameters get no weight decay (it would pull gains to 0).

    Every group holds `lr_scale`, the multiple of the schedule's learning rate it runs at (engines'
    `set_lr` apply it). Under µP (the model's `mup`, Yang et al. 2022, Table 8's Adam rule) the hidden
    matrices run at lr / width_mult with weight decay × width_mult (torch's AdamW shrinks by lr × decay
    per step: that product stays as tuned); embeddings, the head (its logits carry the 1/width_mult
    multiplier instead) and vectors keep lr.
    """
    transformers = [m for m in model.modules() if isinstance(m, Transformer)]   # inside DDP, FSDP, compile
    width_mult = transformers[0].cfg.width_mult if transformers else 1.0
    ends = {id(p) for m in transformers for end in (m.tok_embeddings, m.pos_embeddings, m.output)
            if end is not None for p in end.parameters()}
    hidden, ends_2d, vectors = [], [], []
    for param in model.parameters():
        if param.requires_grad:
            if param.dim() < 2:
                vectors.append(param)
            else:
                (ends_2d if id(param) in ends or width_mult == 1.0 else hidden).append(param)
    groups = [{"params": ends_2d, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
              {"params": vectors, "weight_decay": 0.0, "lr_scale": 1.0}]
    if hidden:
        groups.append({"params": hidden, "weight_decay": cfg.weight_decay * width_mult,
                       "lr_scale": 1.0 / width_mult})
    groups = [group for group in groups if group["params"]]   # a middle pipeline stage has no ends
    for group in groups:
        group["lr"] = cfg.lr * group["lr_scale"]
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


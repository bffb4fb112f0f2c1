"""Stability guards: whether an update is applied, decided on device before the optimizer step.

A step is skipped when its loss or gradient norm is not finite, or jumps above the rolling mean by
more than `spike_sigma` standard deviations of the last `spike_window` accepted steps (after
`spike_min_history` of them) and by at least `spike_min_loss_jump` / `spike_min_norm_jump` of the
mean, relatively (a flat curve's tiny deviation would otherwise flag noise). Inputs are the global mean loss and the global gradient norm, the same
on every rank, and the flag is all-reduced anyway, so no rank ever applies an update another skips.
Nothing here reads a value back to the host: the step is skipped inside the fused optimizer
(`found_inf`). The window is part of the checkpoint, so a resumed run is guarded from its first step.

A new level is not a spike: when `level_shift_steps` steps in a row are all finite and all above the
limit, the rise has held, so it is taken as the new level. The last of them is applied, and the
window's history of the quantity that rose is rescaled by the ratio of the held values' mean to
the window's mean, so the window keeps its length and its relative spread at the new level and
training goes on without further skips. A lone spike or a non-finite step breaks the run of rises.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from trainer.config import GuardConfig


class SpikeGuard:
    """Rolling statistics of accepted steps (loss, grad norm) and the skip decision."""

    def __init__(self, cfg: GuardConfig, device: torch.device):
        self.cfg = cfg
        self.history = torch.zeros(2, cfg.spike_window, device=device, dtype=torch.float64)
        self.count = torch.zeros((), device=device, dtype=torch.long)      # accepted steps seen
        self.skipped = torch.zeros((), device=device, dtype=torch.long)    # skipped steps, in total
        # 1 where a recent step was skipped: `rollback_after` of the last `rollback_window` -> roll back
        self.recent = torch.zeros(max(1, cfg.rollback_window), device=device, dtype=torch.long)
        self.steps = torch.zeros((), device=device, dtype=torch.long)      # decisions made
        # the finite values of the current run of consecutive rises above the limit (a level shift?)
        self.rises = torch.zeros(2, max(1, cfg.level_shift_steps), device=device, dtype=torch.float64)
        self.rise_count = torch.zeros((), device=device, dtype=torch.long)

    def _window_stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean per quantity, the spike limit per quantity, whether enough history is held)."""
        window = self.history.shape[1]
        n = self.count.clamp(max=window)
        held = (torch.arange(window, device=self.history.device) < n).to(self.history.dtype)
        mean = (self.history * held).sum(1) / n.clamp(min=1)
        var = ((self.history - mean[:, None]) ** 2 * held).sum(1) / (n - 1).clamp(min=1)
        jump = torch.tensor([self.cfg.spike_min_loss_jump, self.cfg.spike_min_norm_jump], device=mean.device,
                            dtype=mean.dtype)
        limit = torch.maximum(mean + self.cfg.spike_sigma * var.sqrt(), mean * (1 + jump))
        return mean, limit, n >= self.cfg.spike_min_history

    def is_spike(self, values: torch.Tensor) -> torch.Tensor:
        """values: (loss, grad norm). True where either is far above its window's mean."""
        if self.cfg.spike_sigma <= 0:
            return torch.zeros((), dtype=torch.bool, device=values.device)
        _, limit, ready = self._window_stats()
        return ready & (values > limit).any()

    def _level_shift(self, values: torch.Tensor, rise: torch.Tensor) -> torch.Tensor:
        """Note this step in the run of finite rises; True (and the history rescaled to the new
        level) when the run has lasted `level_shift_steps` steps."""
        steps = self.cfg.level_shift_steps
        if steps <= 0:
            return torch.zeros((), dtype=torch.bool, device=values.device)
        slot = (self.rise_count % steps).view(1)
        self.rises.index_copy_(1, slot, values.view(2, 1))
        self.rise_count.copy_(torch.where(rise, self.rise_count + 1, torch.zeros_like(self.rise_count)))
        shifted = self.rise_count >= steps
        mean, _, _ = self._window_stats()
        ratio = torch.where(mean > 0, self.rises.mean(1) / mean.clamp(min=1e-30), torch.ones_like(mean))
        self.history.mul_(torch.where(shifted, ratio, torch.ones_like(ratio))[:, None])
        self.rise_count.masked_fill_(shifted, 0)
        return shifted

    def check(self, loss: torch.Tensor, grad_norm: torch.Tensor, force: bool = False) -> torch.Tensor:
        """The skip flag (bool, on device) for this step; records the step in the window if applied."""
        values = torch.stack([loss.detach().to(self.history.dtype), grad_norm.detach().to(self.history.dtype)])
        finite = torch.isfinite(values).all()
        spike = self.is_spike(values)
        # a run of finite rises that has held is a new level, not a spike
        spike = spike & ~self._level_shift(values, spike & finite)
        skip = ~finite | spike | force
        if dist.is_initialized() and dist.get_world_size() > 1:
            flag = skip.to(torch.float32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            skip = flag > 0
        slot = (self.count % self.history.shape[1]).view(1)
        kept = torch.where(skip, self.history.index_select(1, slot).view(2), values)
        self.history.index_copy_(1, slot, kept.view(2, 1))
        self.count += (~skip).long()
        self.skipped += skip.long()
        self.recent.index_fill_(0, (self.steps % self.recent.numel()).view(1), 0)
        self.recent.index_add_(0, (self.steps % self.recent.numel()).view(1), skip.long().view(1))
        self.steps += 1
        return skip

    def wants_rollback(self) -> bool:
        """Host read (call it on log steps): too many recent steps were skipped."""
        return self.cfg.rollback_after > 0 and int(self.recent.sum()) >= self.cfg.rollback_after

    def clear_recent(self) -> None:
        self.recent.zero_()

    def state_dict(self) -> dict:
        return {"history": self.history.cpu(), "count": self.count.cpu(), "skipped": self.skipped.cpu(),
                "recent": self.recent.cpu(), "steps": self.steps.cpu(), "rises": self.rises.cpu(),
                "rise_count": self.rise_count.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if state["history"].shape != self.history.shape or state["recent"].shape != self.recent.shape:
            # the window's size changed: keep the newest values that fit, oldest first
            return self._load_resized(state)
        for name in ("history", "count", "skipped", "recent", "steps"):
            getattr(self, name).copy_(state[name])
        if state["rises"].shape == self.rises.shape:   # else a run of rises starts afresh
            self.rises.copy_(state["rises"])
            self.rise_count.copy_(state["rise_count"])

    def _load_resized(self, state: dict) -> None:
        old, count = state["history"], int(state["count"])
        ordered = torch.cat([old[:, count % old.shape[1]:], old[:, :count % old.shape[1]]], 1) \
            if count >= old.shape[1] else old[:, :count]
        keep = ordered[:, -self.history.shape[1]:]
        self.history.zero_()
        self.history[:, :keep.shape[1]] = keep.to(self.history.device)
        self.count.fill_(keep.shape[1])
        self.skipped.copy_(state["skipped"])

"""The gradient noise scale, measured while training: the batch size beyond which a larger batch
stops buying fewer steps (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training").

Their "simple" noise scale B = tr(Σ) / |G|², with Σ the per-example gradient covariance and G the true
gradient, from two gradient norms of different batch sizes that a step computes anyway (their
Appendix A.1): one micro-batch on one rank (B_small) and the whole step (B_big, all micro-batches on
all ranks). For the expected squared norm of a batch-b mean gradient, E|G_b|² = |G|² + tr(Σ)/b, so

    |G|²  ≈ (B_big·|G_big|² − B_small·|G_small|²) / (B_big − B_small)
    tr(Σ) ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)

each averaged over steps (an exponential moving average) before the ratio is taken, since either
estimate alone is noisy and can be negative. Batches count tokens.
"""
from __future__ import annotations

from typing import Optional

import torch


class GradientNoiseScale:
    def __init__(self, small_batch: float, big_batch: float, device: torch.device, decay: float = 0.95):
        if big_batch <= small_batch:
            raise ValueError(f"the step's batch ({big_batch:g}) must be larger than one micro-batch ({small_batch:g})")
        self.small, self.big, self.decay = float(small_batch), float(big_batch), decay
        self.sums = torch.zeros(2, device=device, dtype=torch.float64)   # EMA of (|G|², tr Σ)
        self.weight = torch.zeros((), device=device, dtype=torch.float64)

    def observe(self, small_sq: torch.Tensor, big_sq: torch.Tensor, keep: torch.Tensor | bool = True) -> None:
        """One step's squared norms (device tensors; no host sync). `keep`=False ignores the step
        (a skipped update: its gradient is not the distribution's)."""
        small_sq, big_sq = small_sq.double(), big_sq.double()
        g2 = (self.big * big_sq - self.small * small_sq) / (self.big - self.small)
        trace = (small_sq - big_sq) / (1.0 / self.small - 1.0 / self.big)
        keep = torch.as_tensor(keep, device=self.sums.device) & torch.isfinite(g2) & torch.isfinite(trace)
        decay = torch.where(keep, torch.tensor(self.decay, device=self.sums.device, dtype=torch.float64), 1.0)
        step = torch.where(keep, torch.stack([g2, trace]), 0.0)   # never 0 × NaN
        self.sums.mul_(decay).add_((1 - decay) * step)
        self.weight.mul_(decay).add_(1 - decay)

    def averages(self) -> torch.Tensor:
        """(|G|², tr Σ) averaged over the steps seen (bias-corrected), on device."""
        return self.sums / self.weight.clamp_min(1e-12)

    @staticmethod
    def ratio(averages: torch.Tensor) -> Optional[float]:
        """B_simple = tr Σ / |G|² in tokens, or None while |G|² is not yet positive (host read)."""
        g2, trace = (float(x) for x in averages)
        return trace / g2 if g2 > 0 and trace > 0 else None

    def value(self) -> Optional[float]:
        return self.ratio(self.averages())

    def state_dict(self) -> dict:
        return {"sums": self.sums.cpu(), "weight": self.weight.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.sums.copy_(state["sums"])
        self.weight.copy_(state["weight"])

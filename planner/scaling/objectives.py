"""Fit objectives on log residuals r = log L - log L̂, with their analytic gradients.

All three are *sums* over runs, never means: Hoffmann et al. 2022 (App. D.2) minimise the summed
Huber loss, and averaging shrinks the objective so much that L-BFGS's relative stopping test ends
the search early (the bug Besiroglu et al. 2024 found in the original replication attempts).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.errors import UserError

OBJECTIVES = ("huber", "asymmetric", "mse-log")
HUBER_DELTA = 1e-3          # Hoffmann et al. 2022, App. D.2
ASYMMETRIC_WEIGHT = 10.0    # over-predictions cost 10x: the chinchilla library's asymmetric MAE default


@dataclass(frozen=True)
class Objective:
    """`huber`: Huber(delta) of r. `asymmetric`: r^2, times `weight` where the law over-predicts
    (r < 0), so the fit hugs the lower envelope of the runs. `mse-log`: r^2."""

    kind: str = "huber"
    delta: float = HUBER_DELTA
    weight: float = ASYMMETRIC_WEIGHT

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise UserError(f"unknown objective '{self.kind}': choose one of {', '.join(OBJECTIVES)}")
        if self.delta <= 0 or self.weight <= 0:
            raise UserError("objective delta and weight must be positive")

    def pointwise(self, r: np.ndarray) -> np.ndarray:
        """Per-run contribution."""
        if self.kind == "huber":
            size = np.abs(r)
            clipped = np.minimum(size, self.delta)
            return clipped * (size - 0.5 * clipped)
        squared = r * r
        if self.kind == "asymmetric":
            return np.where(r < 0, self.weight * squared, squared)
        return squared

    def derivative(self, r: np.ndarray) -> np.ndarray:
        """d pointwise / d r."""
        if self.kind == "huber":
            return np.clip(r, -self.delta, self.delta)
        if self.kind == "asymmetric":
            return np.where(r < 0, 2.0 * self.weight * r, 2.0 * r)
        return 2.0 * r

    def summed_over_last_axis(self, r: np.ndarray) -> np.ndarray:
        """Sum of `pointwise` over the last axis, overwriting `r`: the grid kernel calls this on
        ~10^5-element blocks, so it makes as few passes over memory as it can and no temporaries."""
        if self.kind == "huber":
            # huber(r) = delta (|r| - delta/2) + max(delta - |r|, 0)^2 / 2, which holds on both branches.
            np.abs(r, out=r)
            total = self.delta * r.sum(axis=-1) - r.shape[-1] * 0.5 * self.delta ** 2
            np.subtract(self.delta, r, out=r)
            np.maximum(r, 0.0, out=r)
            np.multiply(r, r, out=r)
            return total + 0.5 * r.sum(axis=-1)
        if self.kind == "mse-log":
            np.multiply(r, r, out=r)
            return r.sum(axis=-1)
        # asymmetric: max(r, 0)^2 + weight * min(r, 0)^2
        over = np.minimum(r, 0.0)                   # over-predictions (r < 0)
        np.maximum(r, 0.0, out=r)
        np.multiply(r, r, out=r)
        np.multiply(over, over, out=over)
        return r.sum(axis=-1) + self.weight * over.sum(axis=-1)


def log_prediction(theta: np.ndarray, log_N: np.ndarray, log_D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log L̂ and the shares E/L̂, (A/N^alpha)/L̂, (B/D^beta)/L̂ (the gradient of log L̂ w.r.t. the
    three log terms). Non-finite where a trial point overflows; callers treat that as +inf."""
    log_E, log_A, log_B, alpha, beta = theta
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        N_term = np.exp(log_A - alpha * log_N)
        D_term = np.exp(log_B - beta * log_D)
        prediction = np.exp(log_E) + N_term + D_term
        shares = np.empty((3, len(log_N)))
        np.divide(np.exp(log_E), prediction, out=shares[0])
        np.divide(N_term, prediction, out=shares[1])
        np.divide(D_term, prediction, out=shares[2])
        return np.log(prediction), shares


def value_and_gradient(theta: np.ndarray, log_N: np.ndarray, log_D: np.ndarray, log_loss: np.ndarray,
                       objective: Objective) -> tuple[float, np.ndarray]:
    """Objective at theta = (log E, log A, log B, alpha, beta) and its exact gradient. Trial points
    that overflow give non-finite values, which the optimiser treats as +inf (no warnings)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _value_and_gradient(theta, log_N, log_D, log_loss, objective)


def _value_and_gradient(theta: np.ndarray, log_N: np.ndarray, log_D: np.ndarray, log_loss: np.ndarray,
                        objective: Objective) -> tuple[float, np.ndarray]:
    log_pred, shares = log_prediction(theta, log_N, log_D)
    residual = log_loss - log_pred
    # d r / d theta = -d log L̂ / d theta; d log L̂ / d alpha = -log N · share_A (and alike for beta).
    slope = -objective.derivative(residual)
    weighted = shares @ slope
    gradient = np.array([weighted[0], weighted[1], weighted[2],
                         -(slope * log_N) @ shares[1], -(slope * log_D) @ shares[2]])
    return float(objective.pointwise(residual).sum()), gradient

"""Honest intervals: the bootstrap's spread widened by what the law's form misses.

A bootstrap over runs measures noise in the runs the law was fitted to; it says nothing about
whether the form carries to 100x the compute. Two measured stand-ins for that, both in log space,
are added to the bootstrap's half-widths in quadrature:

- the jackknife spread of refits that each leave one whole budget out, sqrt((K-1)/K Σ (q_k - q̄)^2):
  how much the forecast moves when the law sees one budget fewer (a form that fits the budgets it
  has only by bending moves a lot);
- the disagreement between the two approaches, |ln q_parametric - ln q_isoFLOP|: when Approach 2
  and Approach 3 read the same runs differently, the truth is not better known than that.

    half-width = sqrt(bootstrap^2 + (z · jackknife)^2 + disagreement^2)

with z the normal quantile of the interval's level (1.645 at 90 %).
"""
from __future__ import annotations

import numpy as np


def z_value(confidence: float) -> float:
    from statistics import NormalDist   # not scipy.stats: that takes seconds to import

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def jackknife(left_out: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Jackknife standard deviation over the leave-one-budget-out values (..., K, q) of the
    active budgets (..., K); nan rows (a refit that failed) are left out."""
    values = np.log(left_out)
    use = active[..., None] & np.isfinite(values)
    count = use.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(use, values, 0).sum(-2) / count
        spread = np.where(use, (values - mean[..., None, :]) ** 2, 0).sum(-2)
        sd = np.sqrt((count - 1) / count * spread)
    return np.where(count >= 2, sd, 0.0)


def honest(point: np.ndarray, draws: np.ndarray, left_out: np.ndarray, active: np.ndarray,
           disagreement: np.ndarray, extrapolation: np.ndarray, confidence: float) -> dict[str, np.ndarray]:
    """point (P, q); draws (P, S, q); left_out (P, K, q); active (P, K); disagreement (P, q) and
    extrapolation (P, q: the inner backtest's error rate times the e-folds to the target) in log.
    Returns the interval and its parts, all (P, q), in the quantity's units (parts in log)."""
    tail = 100.0 * (1.0 - confidence) / 2.0
    log_point = np.log(point)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_draws = np.log(draws)
        low_q = np.nanpercentile(np.where(np.isfinite(log_draws), log_draws, np.nan), tail, axis=1)
        high_q = np.nanpercentile(np.where(np.isfinite(log_draws), log_draws, np.nan), 100 - tail, axis=1)
    boot_low = np.nan_to_num(np.maximum(log_point - low_q, 0.0))
    boot_high = np.nan_to_num(np.maximum(high_q - log_point, 0.0))
    z = z_value(confidence)
    spread = z * jackknife(left_out, active)
    disagreement = np.nan_to_num(disagreement)
    trend = z * np.nan_to_num(extrapolation)
    model = spread ** 2 + disagreement ** 2 + trend ** 2
    low, high = np.sqrt(boot_low ** 2 + model), np.sqrt(boot_high ** 2 + model)
    return {"point": point, "low": np.exp(log_point - low), "high": np.exp(log_point + high),
            "bootstrap": (boot_low + boot_high) / 2, "jackknife": spread, "disagreement": disagreement,
            "extrapolation": trend}

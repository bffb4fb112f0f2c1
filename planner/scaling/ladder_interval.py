"""How well a fitted ladder predicts: diverged runs, run-to-run noise, leave-one-out prediction
errors and the interval one new run's loss should land in."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from planner.scaling.batched import fit_many
from planner.scaling.law import ScalingLaw
from planner.scaling.objectives import Objective


def diverged(loss: float, ceiling: float) -> bool:
    """A final loss that is not finite or no better than `ceiling` (a uniform guess: log vocab)."""
    return not math.isfinite(loss) or loss >= ceiling


def residual_noise(law: ScalingLaw, N: np.ndarray, D: np.ndarray, loss: np.ndarray) -> float:
    """Run-to-run noise of log loss around the fit: a robust standard deviation (1.4826 x MAD)."""
    residual = np.log(loss) - np.log(law.predict(N, D))
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))))


def leave_one_out_errors(N: np.ndarray, D: np.ndarray, loss: np.ndarray,
                         starts: Optional[Sequence[np.ndarray]] = None,
                         objective: Objective = Objective()) -> np.ndarray:
    """log(measured / predicted) of each run by the law fitted to all the others (all n fits at once;
    variable projection's starts, and `starts` too, e.g. the full fit's optima, the best kept).

    Unlike the residuals of the full fit, which a robust (Huber) fit pulls to zero for all but the
    runs it treats as outliers, these are errors of predicting a run the fit has not seen: run noise,
    the fit's own uncertainty, and whatever the law's form misses at these sizes, together."""
    logs = [np.log(np.asarray(a, float)) for a in (N, D, loss)]
    n = len(logs[2])
    others = ~np.eye(n, dtype=bool)
    rows = [np.stack([a[keep] for keep in others]) for a in logs]          # (n, n - 1) each
    best = fit_many(*rows, objective)
    theta, value = best.theta.copy(), best.objective.copy()
    if starts:
        warm = fit_many(*rows, objective, starts)
        better = warm.objective < value
        theta[better], value[better] = warm.theta[better], warm.objective[better]
    log_E, log_A, log_B, alpha, beta = theta.T
    with np.errstate(all="ignore"):
        predicted = np.exp(log_E) + np.exp(log_A - alpha * logs[0]) + np.exp(log_B - beta * logs[1])
        return np.where(np.isfinite(value), logs[2] - np.log(predicted), np.nan)


def prediction_error(loo_errors: np.ndarray) -> float:
    """The scale of leave-one-out errors as a log-normal std: their root mean square (not a robust
    spread: the runs the law fits worst are exactly the evidence of what it misses)."""
    finite = loo_errors[np.isfinite(loo_errors)]
    return float(np.sqrt(np.mean(finite ** 2))) if len(finite) else float("nan")


def predictive_interval(params: np.ndarray, N: float, D: float, noise: float, confidence: float = 0.9,
                        seed: int = 0) -> tuple[float, float]:
    """Where one run's measured loss at (N, D) should land: each bootstrap law's prediction (rows of
    E, A, B, alpha, beta) times log-normal noise of std `noise` (the ladder uses its runs'
    leave-one-out prediction error, `prediction_error`), at `confidence`."""
    E, A, B, alpha, beta = params.T
    with np.errstate(all="ignore"):
        predicted = E + A * N ** -alpha + B * D ** -beta
    predicted = predicted[np.isfinite(predicted)]
    draws = predicted * np.exp(np.random.default_rng(seed).normal(0.0, noise, predicted.shape))
    tail = 100.0 * (1.0 - confidence) / 2.0
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100.0 - tail))

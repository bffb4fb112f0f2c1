"""Many fits of any law form at once: Levenberg-Marquardt on the summed Huber of log residuals,
each problem weighting the runs its own way (0 leaves a run out, a fraction down-weights it).

Huber's gradient is Σ w clip(r, ±delta) ∇r = Σ w min(1, delta/|r|) r ∇r, so each step is a weighted
Gauss-Newton step with those iteratively re-weighted least-squares weights (the usual IRLS view of
Huber). Problems are rows of (R, n) arrays: the backtest's leave-budgets-out refits, its remedies and
the synthetic repetitions all go through one call per law form.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from planner.scaling.batched import fit_many
from planner.scaling.law_forms import LawForm
from planner.scaling.objectives import HUBER_DELTA, Objective

MAX_ITERATIONS = 60   # Huber with most residuals past delta is L1-like: the last digits come slowly and do not matter
STEP_TOLERANCE = 1e-9
RELATIVE_IMPROVEMENT = 1e-7   # an accepted step that gains less than this share of the objective ends a fit
EXPONENT_FLOOR = 1e-3


@dataclass(frozen=True)
class FormFits:
    form: LawForm
    theta: np.ndarray        # (R, k)
    objective: np.ndarray    # (R,)
    noise: np.ndarray        # (R,) robust residual scale (log loss) of each fit
    covariance: np.ndarray   # (R, k, k) Gauss-Newton covariance of theta


def _evaluate(form: LawForm, theta, log_N, log_D, log_loss, weights, delta):
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        u, J = form.log_jacobian(theta, log_N, log_D)
        r = log_loss - u
        size = np.abs(r)
        clipped = np.minimum(size, delta)
        value = (weights * clipped * (size - 0.5 * clipped)).sum(axis=1)
        irls = weights * np.where(size > delta, delta / np.maximum(size, 1e-300), 1.0)
    return np.where(np.isfinite(value), value, np.inf), r, J, irls


def refine(form: LawForm, theta0: np.ndarray, log_N, log_D, log_loss, weights, delta: float = HUBER_DELTA):
    theta = np.array(theta0, float)
    value, r, J, irls = _evaluate(form, theta, log_N, log_D, log_loss, weights, delta)
    damping = np.full(len(theta), 1e-3)
    active = np.isfinite(value)
    for _ in range(MAX_ITERATIONS):
        index = np.flatnonzero(active)
        if index.size == 0:
            break
        Ji, wi, ri = J[index], irls[index], r[index]
        weighted = Ji * wi[:, :, None]
        H = np.matmul(weighted.transpose(0, 2, 1), Ji)
        g = np.matmul((wi * ri)[:, None, :], Ji)[:, 0, :]
        scale = np.maximum(np.diagonal(H, axis1=1, axis2=2), 1e-12)
        with np.errstate(all="ignore"):
            step = np.linalg.solve(H + damping[index, None, None] * scale[:, :, None] * np.eye(H.shape[1]),
                                   g[:, :, None])[:, :, 0]
        trial = theta[index] + np.nan_to_num(step)
        for k in form.exponents:
            trial[:, k] = np.maximum(trial[:, k], EXPONENT_FLOOR)
        t_value, t_r, t_J, t_irls = _evaluate(form, trial, log_N[index], log_D[index], log_loss[index],
                                              weights[index], delta)
        accept = np.isfinite(t_value) & (t_value <= value[index])
        flat = accept & (value[index] - t_value <= RELATIVE_IMPROVEMENT * value[index])
        took = index[accept]
        theta[took], value[took], r[took], J[took], irls[took] = (trial[accept], t_value[accept], t_r[accept],
                                                                   t_J[accept], t_irls[accept])
        damping[took] = np.maximum(damping[took] / 3.0, 1e-12)
        damping[index[~accept]] *= 4.0
        small = np.max(np.abs(np.nan_to_num(step, nan=1.0)), axis=1) < STEP_TOLERANCE
        active[index[(accept & (small | flat)) | (damping[index] > 1e12)]] = False
    return theta, value, r, J


def fit_forms(form: LawForm, log_N, log_D, log_loss, weights: Optional[np.ndarray] = None,
              starts: Optional[np.ndarray] = None, delta: float = HUBER_DELTA) -> FormFits:
    """Fit R problems (rows of (R, n) arrays, or (n,) shared) and keep each one's best start.
    Starts (R, S, k), default: the Chinchilla form's variable-projection starts, refined by
    `batched.fit_many` and mapped into this form."""
    log_loss = np.atleast_2d(np.asarray(log_loss, float))
    weights = np.ones_like(log_loss) if weights is None else np.atleast_2d(np.asarray(weights, float))
    R, n = max(log_loss.shape[0], weights.shape[0]), log_loss.shape[1]
    log_N, log_D, log_loss, weights = (np.broadcast_to(np.atleast_2d(np.asarray(a, float)), (R, n))
                                       for a in (log_N, log_D, log_loss, weights))
    if starts is None:
        # Weights of 0 drop runs; the starts come from the unweighted problem, which is close enough.
        base = fit_many(log_N, log_D, log_loss, Objective("huber", delta)).theta
        starts = np.stack([form.from_chinchilla(base)], axis=1)
    S = starts.shape[1]
    flat = starts.reshape(R * S, -1)
    theta, value, r, J = refine(form, flat, *(np.repeat(a, S, axis=0) for a in (log_N, log_D, log_loss, weights)),
                                delta=delta)
    best = np.argmin(value.reshape(R, S), axis=1)
    pick = np.arange(R) * S + best
    theta, value, r, J = theta[pick], value[pick], r[pick], J[pick]
    used = weights > 0
    # Noise: the residuals' robust spread; covariance: sigma^2 (J^T W J)^-1 on the weighted runs.
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        masked = np.where(used, r, np.nan)
        mad = np.nanmedian(np.abs(masked - np.nanmedian(masked, axis=1, keepdims=True)), axis=1)
    noise = np.maximum(1.4826 * mad, 1e-5)
    k = theta.shape[1]
    H = np.matmul((J * weights[:, :, None]).transpose(0, 2, 1), J) + 1e-12 * np.eye(k)
    dof = used.sum(1) / np.maximum(used.sum(1) - k, 1)
    covariance = np.linalg.pinv(H) * (noise ** 2 * dof)[:, None, None]
    return FormFits(form=form, theta=theta, objective=value, noise=noise, covariance=covariance)


def sample_thetas(fits: FormFits, row: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` parameter draws from the Gauss-Newton normal approximation around one fit."""
    rng = np.random.default_rng(seed)
    cov = (fits.covariance[row] + fits.covariance[row].T) / 2
    values, vectors = np.linalg.eigh(cov)
    root = vectors * np.sqrt(np.clip(values, 0, None))
    draws = fits.theta[row] + rng.standard_normal((count, len(values))) @ root.T
    for k in fits.form.exponents:
        draws[:, k] = np.maximum(draws[:, k], EXPONENT_FLOOR)
    return draws

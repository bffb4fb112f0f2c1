"""What the literature says about the law's exponents, and fits that listen to it.

Nine runs at three compute levels leave L = E + A/N^alpha + B/D^beta nearly unidentified: a fit may
send alpha to 36 (the N term becomes a step that only the smallest model feels) or trade E against
beta along a ridge. Two things hold the exponents where published fits put them:

- the plausible range, hard bounds on alpha and beta: [0.05, 1.0]. Published fits of this form lie
  at 0.28-0.37 (Hoffmann et al. 2022, Approach 3: alpha 0.339, beta 0.285; Besiroglu et al. 2024,
  their replication: alpha 0.348, beta 0.366); Kaplan et al. 2020's power laws without an
  irreducible term, which bias exponents low, give the smallest published values (0.076 for N,
  0.095 for D). No published language-model fit comes near 1.
- a weak prior, a normal distribution on each exponent centred on those two fits' mean with a
  standard deviation of 0.15 (Kaplan's values and twice the published ones lie 2 deviations off):
  it decides only where the runs cannot, along the ridges, and costs as much as the runs' own misfit
  would at the user's stated run-to-run noise (see `ExponentPrior.strength`).

Every fit here is the batched damped Newton of `batched.py` on the same objective plus the prior's
penalty, with alpha and beta projected into the range: one code path for the fit, the bootstrap and
the leave-one-out refits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from planner.errors import UserError
from planner.scaling.batched import (DAMPING_DOWN, DAMPING_MAX, DAMPING_START, DAMPING_UP, E_FLOOR,
                                     GRADIENT_TOLERANCE, MAX_ITERATIONS, STEP_TOLERANCE, BatchFit, evaluate,
                                     varpro_starts)
from planner.scaling.objectives import Objective

HOFFMANN_2022 = (0.33917, 0.28491)      # alpha, beta (Approach 3, unrounded as Besiroglu et al. quote them)
BESIROGLU_2024 = (0.3478, 0.3659)
PLAUSIBLE_RANGE = (0.05, 1.0)
PRIOR_CENTRE = tuple(round((a + b) / 2, 3) for a, b in zip(HOFFMANN_2022, BESIROGLU_2024))   # (0.343, 0.325)
PRIOR_WIDTH = 0.15
DEFAULT_NOISE = 0.01
EXPONENTS = (3, 4)                      # alpha's and beta's places in theta
START_PAIRS = 12                        # variable projection's best exponent pairs refined per problem


@dataclass(frozen=True)
class ExponentPrior:
    """Bounds and a normal prior on (alpha, beta); `noise`: the runs' run-to-run noise (log-normal
    std), which sets how much the prior weighs against them (0: not at all, the range only)."""

    centre: tuple[float, float] = PRIOR_CENTRE
    width: float = PRIOR_WIDTH
    bounds: tuple[float, float] = PLAUSIBLE_RANGE
    noise: float = DEFAULT_NOISE

    def __post_init__(self) -> None:
        low, high = self.bounds
        if not (0 < low < high and all(low <= c <= high for c in self.centre)):
            raise UserError(f"exponent range {self.bounds} must be positive, increasing and hold the prior's centre "
                            f"{self.centre}")
        if not (self.width > 0 and self.noise >= 0 and math.isfinite(self.width * self.noise)):
            raise UserError(f"the prior's width ({self.width}) must be positive and the runs' noise ({self.noise}) "
                            f"not negative")

    def strength(self, objective: Objective) -> float:
        """The prior's negative log density, (z_alpha^2 + z_beta^2) / 2, in the objective's units.

        The objective is the runs' negative log-likelihood up to a factor: squared log residuals are a
        normal one's times 2 noise^2; Huber(delta) residuals past delta, delta |r|, are a Laplace one's
        (scale noise / sqrt 2, the same standard deviation) times delta noise / sqrt 2."""
        if objective.kind == "huber":
            return objective.delta * self.noise / math.sqrt(2.0)
        return 2.0 * self.noise ** 2

    def to_json(self) -> dict:
        return {"bounds": list(self.bounds), "centre": {"alpha": self.centre[0], "beta": self.centre[1]},
                "width": self.width, "noise": self.noise,
                "sources": ["Hoffmann et al. 2022 (Approach 3)", "Besiroglu et al. 2024", "Kaplan et al. 2020"]}

    def describe(self) -> str:
        return (f"alpha, beta in [{self.bounds[0]:g}, {self.bounds[1]:g}], prior normal around "
                f"({self.centre[0]:g}, {self.centre[1]:g}), sd {self.width:g} (Hoffmann et al. 2022, Besiroglu "
                f"et al. 2024), weighed against {100 * self.noise:g} % run noise")


@dataclass(frozen=True)
class PriorFit(BatchFit):
    """A batch of fits under the prior, with the steps each took."""

    iterations: np.ndarray   # (R,)


def objective_with_prior(theta: np.ndarray, logs: tuple, weights: np.ndarray, objective: Objective,
                          prior: ExponentPrior) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The objective plus the prior's penalty, its gradient and Hessian, at theta (R, 5) with E itself
    first (not log E), on `logs` (log N, log D, log loss), each (R, n)."""
    value, gradient, H = evaluate(theta, *logs, weights, objective, linear_E=True)
    strength, precision = prior.strength(objective), 1.0 / prior.width ** 2
    for k, centre in zip(EXPONENTS, prior.centre):
        z = theta[:, k] - centre
        value = value + 0.5 * strength * precision * z * z
        gradient[:, k] += strength * precision * z
        H[:, k, k] += strength * precision
    return value, gradient, H


def pinned(theta: np.ndarray, gradient: np.ndarray, floor: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """(R, 5): parameters on a bound with the gradient pushing them past it (held there)."""
    low, high = bounds
    held = np.zeros_like(theta, dtype=bool)
    held[:, 0] = (theta[:, 0] <= floor * (1 + 1e-9)) & (gradient[:, 0] > 0)
    for k in EXPONENTS:
        held[:, k] = ((theta[:, k] <= low) & (gradient[:, k] > 0)) | ((theta[:, k] >= high) & (gradient[:, k] < 0))
    return held


def refine_with_prior(theta0: np.ndarray, log_N: np.ndarray, log_D: np.ndarray, log_loss: np.ndarray,
                      weights: Optional[np.ndarray], objective: Objective, prior: ExponentPrior) -> PriorFit:
    """`batched.refine`'s damped Newton on R problems (theta0 (R, 5); arrays (R, n) or (n,)) with the
    prior's penalty added and a projected step: E above its floor, alpha and beta inside the range."""
    theta = np.array(theta0, dtype=float, copy=True)
    theta[:, 0] = np.exp(theta[:, 0])
    R = theta.shape[0]
    logs = tuple(np.broadcast_to(np.atleast_2d(a), (R, np.shape(a)[-1])) for a in (log_N, log_D, log_loss))
    weights = np.ones_like(logs[2]) if weights is None else np.broadcast_to(weights, logs[2].shape)
    floor = E_FLOOR * np.exp(logs[2].min(axis=1))
    theta[:, 0] = np.maximum(theta[:, 0], floor)
    theta[:, 3:] = np.clip(theta[:, 3:], *prior.bounds)
    value, gradient, H = objective_with_prior(theta, logs, weights, objective, prior)
    value = np.where(np.isfinite(value), value, np.inf)
    damping = np.full(R, DAMPING_START)
    gradient_floor = GRADIENT_TOLERANCE * np.where(np.isfinite(value) & (value > 0), value, 1.0)
    active, converged = np.isfinite(value), np.zeros(R, dtype=bool)
    iterations = np.zeros(R, dtype=int)
    for _ in range(MAX_ITERATIONS):
        index = np.flatnonzero(active)
        if index.size == 0:
            break
        iterations[index] += 1
        Hi, gi = H[index].copy(), gradient[index].copy()
        held = pinned(theta[index], gi, floor[index], prior.bounds)
        Hi[np.repeat(held[:, :, None], 5, axis=2) | np.repeat(held[:, None, :], 5, axis=1)] = 0.0
        Hi[:, np.arange(5), np.arange(5)] = np.where(held, 1.0, np.diagonal(Hi, axis1=1, axis2=2))
        gi[held] = 0.0
        scale = np.maximum(np.abs(np.diagonal(Hi, axis1=1, axis2=2)), 1e-12)
        damped = Hi + damping[index, None, None] * scale[:, :, None] * np.eye(5)
        with np.errstate(all="ignore"):
            step = -np.linalg.solve(damped, gi[:, :, None])[:, :, 0]
        trial = theta[index] + step
        trial[:, 0] = np.maximum(trial[:, 0], floor[index])
        trial[:, 3:] = np.clip(trial[:, 3:], *prior.bounds)
        t_value, t_gradient, t_H = objective_with_prior(trial, tuple(a[index] for a in logs), weights[index],
                                                         objective, prior)
        accept = np.isfinite(t_value) & np.all(np.isfinite(step), axis=1) & (t_value <= value[index])
        took = index[accept]
        theta[took], value[took], gradient[took], H[took] = (trial[accept], t_value[accept], t_gradient[accept],
                                                             t_H[accept])
        damping[took] = np.maximum(damping[took] / DAMPING_DOWN, 1e-12)
        damping[index[~accept]] *= DAMPING_UP
        small = np.max(np.abs(step), axis=1) < STEP_TOLERANCE
        projected = np.where(pinned(theta[index], gradient[index], floor[index], prior.bounds), 0.0, gradient[index])
        flat = np.max(np.abs(projected), axis=1) < gradient_floor[index]
        settled = (accept & (small | flat)) | (~accept & (damping[index] > DAMPING_MAX))
        converged[index[settled]] = True
        active[index[settled]] = False
    theta[:, 0] = np.log(theta[:, 0])
    return PriorFit(theta=theta, objective=value, converged=converged, iterations=iterations)


def fit_many_with_prior(log_N: np.ndarray, log_D: np.ndarray, log_loss: np.ndarray, prior: ExponentPrior,
                        objective: Objective = Objective(), starts: Optional[np.ndarray] = None,
                        weights: Optional[np.ndarray] = None, search: bool = True) -> tuple[PriorFit, PriorFit]:
    """Fit R problems (rows of (R, n) arrays, `weights` (R, n) on their runs) under the prior, from
    `starts` (k, 5) shared by all and, with `search`, variable projection's best exponent pairs of each
    (moved into the range by the first step). Returns each problem's best fit, and every start's
    optimum as (R, k) arrays."""
    log_N, log_D, log_loss = (np.atleast_2d(np.asarray(a, float)) for a in (log_N, log_D, log_loss))
    R = max(len(a) for a in (log_N, log_D, log_loss, np.atleast_2d(weights if weights is not None else log_loss)))
    log_N, log_D, log_loss = (np.broadcast_to(a, (R, a.shape[-1])) for a in (log_N, log_D, log_loss))
    parts = [np.broadcast_to(np.asarray(starts, float)[None], (R, len(starts), 5))] if starts is not None else []
    if search or not parts:
        parts.append(varpro_starts(log_N, log_D, log_loss, objective, count=START_PAIRS))
    initial = np.concatenate(parts, axis=1)
    k = initial.shape[1]

    def repeat(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.broadcast_to(np.atleast_2d(a), (R, np.shape(a)[-1])), k, axis=0)

    result = refine_with_prior(initial.reshape(R * k, 5), repeat(log_N), repeat(log_D), repeat(log_loss),
                               None if weights is None else repeat(weights), objective, prior)
    every = PriorFit(theta=result.theta.reshape(R, k, 5), converged=result.converged.reshape(R, k),
                     objective=np.where(np.isfinite(result.objective), result.objective, np.inf).reshape(R, k),
                     iterations=result.iterations.reshape(R, k))
    best = np.argmin(every.objective, axis=1)
    rows = np.arange(R)
    return PriorFit(theta=every.theta[rows, best], objective=every.objective[rows, best],
                    converged=every.converged[rows, best], iterations=every.iterations[rows, best]), every

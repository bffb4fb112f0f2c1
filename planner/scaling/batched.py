"""Many fits of the law at once: a damped Newton (Levenberg-Marquardt) step on every problem of a
batch per numpy call, on the exact gradient and Hessian of the same summed objective `fit.py` uses.

What the bootstrap and the ladder's design search spend their time on is thousands of small fits
(20-ish runs, 5 parameters). One scipy BFGS per fit pays ~100 µs of Python per iteration; here one
iteration of 4000 fits costs about that. Two uses:

- the bootstrap: resample i is the full runs weighted by how often each was drawn (`weights`), warm
  started from the full fit's optima;
- simulations: each problem has its own runs; starts come from variable projection, where for fixed
  (alpha, beta) the law is linear in (E, A, B): a weighted least-squares solve per exponent pair
  (relative error, ≈ the log residual) ranks a grid of pairs, and the best few are refined.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from planner.scaling.grid import EXPONENT_RANGE
from planner.scaling.objectives import Objective

MAX_ITERATIONS = 1000
STEP_TOLERANCE = 1e-10       # a step this small (in theta) ends that problem's iterations ...
GRADIENT_TOLERANCE = 1e-7    # ... and so does a gradient this small relative to the starting objective
                             # (the scipy path's test: gtol on the objective rescaled to 1 at the start)
DAMPING_START = 1e-3
DAMPING_UP, DAMPING_DOWN = 4.0, 3.0
DAMPING_MAX = 1e12
E_FLOOR = 1e-12              # E's lower bound, relative to the lowest loss (the scipy path ends near it)
VARPRO_EXPONENTS = 16        # alpha and beta values each of the variable-projection grid
VARPRO_STARTS = 3            # best exponent pairs refined per problem


@dataclass(frozen=True)
class BatchFit:
    theta: np.ndarray        # (R, 5): log E, log A, log B, alpha, beta
    objective: np.ndarray    # (R,)
    converged: np.ndarray    # (R,) bool


def _second_derivative(objective: Objective, r: np.ndarray) -> np.ndarray:
    if objective.kind == "huber":
        return (np.abs(r) < objective.delta).astype(float)
    if objective.kind == "asymmetric":
        return np.where(r < 0, 2.0 * objective.weight, 2.0)
    return np.full_like(r, 2.0)


def evaluate(theta: np.ndarray, log_N: np.ndarray, log_D: np.ndarray, log_loss: np.ndarray,
             weights: np.ndarray, objective: Objective, hessian: bool = True, linear_E: bool = False
             ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Summed objective (R,), gradient (R, 5) and Hessian (R, 5, 5) of R problems at theta
    (log E, log A, log B, alpha, beta), or (E, log A, ...) when `linear_E`.

    With u = log L̂ and r = log L - u: grad f = -Σ c ρ'(r) ∇u and
    ∇²f = Σ c [ρ''(r) ∇u ∇uᵀ - ρ'(r) ∇²u], where ∇²u = Σ_k s_k v_k v_kᵀ - ∇u ∇uᵀ for the three
    terms t_k = exp(v_k · theta) of L̂ with shares s_k = t_k / L̂ (E itself is linear: ∂u/∂E = 1/L̂).
    """
    first, log_A, log_B, alpha, beta = (theta[:, i:i + 1] for i in range(5))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        t0 = (first if linear_E else np.exp(first)) * np.ones_like(log_N * log_D)
        t1 = np.exp(log_A - alpha * log_N)
        t2 = np.exp(log_B - beta * log_D)
        total = t0 + t1 + t2
        s0, s1, s2 = t0 / total, t1 / total, t2 / total
        r = log_loss - np.log(total)
        value = (weights * objective.pointwise(r)).sum(axis=1)
        slope = weights * objective.derivative(r)                  # c ρ'(r)
        g = np.stack([1.0 / total if linear_E else s0, s1, s2, -log_N * s1, -log_D * s2], axis=2)   # ∇u
        gradient = -np.einsum("rn,rnk->rk", slope, g)
        if not hessian:
            return value, gradient, None
        curvature = weights * _second_derivative(objective, r) + slope   # c (ρ'' + ρ')
        H = np.matmul(g.transpose(0, 2, 1) * curvature[:, None, :], g)
        b1, b2 = slope * s1, slope * s2
        if not linear_E:
            H[:, 0, 0] -= (slope * s0).sum(axis=1)
        H[:, 1, 1] -= b1.sum(axis=1)
        H[:, 2, 2] -= b2.sum(axis=1)
        cross_N, cross_D = (b1 * log_N).sum(axis=1), (b2 * log_D).sum(axis=1)
        H[:, 1, 3] += cross_N
        H[:, 3, 1] += cross_N
        H[:, 2, 4] += cross_D
        H[:, 4, 2] += cross_D
        H[:, 3, 3] -= (b1 * log_N * log_N).sum(axis=1)
        H[:, 4, 4] -= (b2 * log_D * log_D).sum(axis=1)
    return value, gradient, H


def refine(theta0: np.ndarray, log_N: np.ndarray, log_D: np.ndarray, log_loss: np.ndarray,
           weights: Optional[np.ndarray] = None, objective: Objective = Objective(),
           max_iterations: int = MAX_ITERATIONS) -> BatchFit:
    """Levenberg-Marquardt from theta0 (R, 5) on R problems. log_N, log_D, log_loss: (R, n), or (n,)
    shared by all; weights (R, n) multiply each run's term (resample counts), default 1.

    E is iterated as itself, bounded below by E_FLOOR x the lowest loss: in log E a fit whose data
    prefer E -> 0 walks towards -inf one Newton step at a time; here it lands on the bound."""
    theta = np.array(theta0, dtype=float, copy=True)
    theta[:, 0] = np.exp(theta[:, 0])
    R = theta.shape[0]
    log_N, log_D, log_loss = (np.broadcast_to(np.atleast_2d(a), (R, np.shape(a)[-1])) for a in (log_N, log_D, log_loss))
    weights = np.ones_like(log_loss) if weights is None else np.broadcast_to(weights, log_loss.shape)
    floor = E_FLOOR * np.exp(log_loss.min(axis=1))
    theta[:, 0] = np.maximum(theta[:, 0], floor)
    value, gradient, H = evaluate(theta, log_N, log_D, log_loss, weights, objective, linear_E=True)
    value = np.where(np.isfinite(value), value, np.inf)
    damping = np.full(R, DAMPING_START)
    gradient_floor = GRADIENT_TOLERANCE * np.where(np.isfinite(value) & (value > 0), value, 1.0)
    active = np.isfinite(value)
    converged = np.zeros(R, dtype=bool)
    eye = np.eye(5)
    for _ in range(max_iterations):
        index = np.flatnonzero(active)
        if index.size == 0:
            break
        Hi, gi = H[index].copy(), gradient[index].copy()
        # E on its bound with the gradient pushing it below: hold it there, step in the rest.
        pinned = (theta[index, 0] <= floor[index] * (1 + 1e-9)) & (gi[:, 0] > 0)
        Hi[pinned, 0, :] = 0.0
        Hi[pinned, :, 0] = 0.0
        Hi[pinned, 0, 0] = 1.0
        gi[pinned, 0] = 0.0
        scale = np.maximum(np.abs(np.diagonal(Hi, axis1=1, axis2=2)), 1e-12)
        damped = Hi + damping[index, None, None] * scale[:, :, None] * eye
        with np.errstate(all="ignore"):
            try:
                step = -np.linalg.solve(damped, gi[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                step = np.stack([_solve_or_zero(m, -v) for m, v in zip(damped, gi)])
        trial = theta[index] + step
        trial[:, 0] = np.maximum(trial[:, 0], floor[index])
        t_value, t_gradient, t_H = evaluate(trial, log_N[index], log_D[index], log_loss[index], weights[index],
                                            objective, linear_E=True)
        accept = np.isfinite(t_value) & np.all(np.isfinite(step), axis=1) & (t_value <= value[index])
        took = index[accept]
        theta[took], value[took], gradient[took], H[took] = trial[accept], t_value[accept], t_gradient[accept], \
            t_H[accept]
        damping[took] = np.maximum(damping[took] / DAMPING_DOWN, 1e-12)
        damping[index[~accept]] *= DAMPING_UP
        small = np.max(np.abs(step), axis=1) < STEP_TOLERANCE
        projected = gradient[index].copy()
        projected[(theta[index, 0] <= floor[index] * (1 + 1e-9)) & (projected[:, 0] > 0), 0] = 0.0
        flat = np.max(np.abs(projected), axis=1) < gradient_floor[index]
        settled = (accept & (small | flat)) | (~accept & (damping[index] > DAMPING_MAX))
        converged[index[settled]] = True
        active[index[settled]] = False
    theta[:, 0] = np.log(theta[:, 0])
    return BatchFit(theta=theta, objective=value, converged=converged)


def _solve_or_zero(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(matrix, vector)
    except np.linalg.LinAlgError:
        return np.full_like(vector, np.nan)


def varpro_starts(log_N: np.ndarray, log_D: np.ndarray, log_loss: np.ndarray, objective: Objective = Objective(),
                  exponents: int = VARPRO_EXPONENTS, count: int = VARPRO_STARTS) -> np.ndarray:
    """(R, count, 5) starting points: for each (alpha, beta) of a grid, the (E, A, B) of the weighted
    linear least-squares fit of L = E + A N^-alpha + B D^-beta (weights 1/L, so residuals are
    relative, ≈ log residuals); pairs with a non-positive coefficient are left out; the `count` pairs
    with the lowest objective on log loss come first."""
    log_N, log_D, log_loss = (np.atleast_2d(a) for a in (log_N, log_D, log_loss))
    R, n = log_loss.shape
    values = np.linspace(*EXPONENT_RANGE, exponents)
    alpha, beta = (v.ravel() for v in np.meshgrid(values, values, indexing="ij"))
    P = alpha.size
    loss = np.exp(log_loss)                                          # (R, n)
    x = np.exp(-alpha[None, :, None] * log_N[:, None, :])            # (R, P, n)
    y = np.exp(-beta[None, :, None] * log_D[:, None, :])
    columns = np.stack([np.ones_like(x), x, y], axis=3) / loss[:, None, :, None]    # (R, P, n, 3)
    norms = np.sqrt((columns ** 2).sum(axis=2))                      # column scaling for conditioning
    scaled = columns / norms[:, :, None, :]
    normal = np.einsum("rpnk,rpnl->rpkl", scaled, scaled) + 1e-12 * np.eye(3)
    rhs = scaled.sum(axis=2)                                         # target: L / L = 1 per run
    with np.errstate(all="ignore"):
        coefficients = np.linalg.solve(normal, rhs[..., None])[..., 0] / norms
        ok = np.all(coefficients > 0, axis=2)
        logs = np.log(np.where(ok[..., None], coefficients, 1.0))
        thetas = np.concatenate([logs, np.broadcast_to(alpha[None, :, None], (R, P, 1)),
                                 np.broadcast_to(beta[None, :, None], (R, P, 1))], axis=2)
        flat = thetas.reshape(R * P, 5)
        value, _, _ = evaluate(flat, np.repeat(log_N, P, axis=0), np.repeat(log_D, P, axis=0),
                               np.repeat(log_loss, P, axis=0), np.ones((R * P, n)), objective, hessian=False)
    value = np.where(ok.ravel() & np.isfinite(value), value, np.inf).reshape(R, P)
    order = np.argsort(value, axis=1)[:, :count]
    return np.take_along_axis(thetas, order[:, :, None], axis=1)


def fit_many(log_N: np.ndarray, log_D: np.ndarray, log_loss: np.ndarray, objective: Objective = Objective(),
             starts: Optional[Sequence[np.ndarray]] = None) -> BatchFit:
    """Fit R independent problems (rows of the (R, n) arrays), keeping each one's best refined start.
    Starts: the same few thetas for every problem, or (default) variable projection's best pairs."""
    log_N, log_D, log_loss = (np.atleast_2d(np.asarray(a, float)) for a in (log_N, log_D, log_loss))
    R = log_loss.shape[0]
    if starts is None:
        initial = varpro_starts(log_N, log_D, log_loss, objective)
    else:
        initial = np.broadcast_to(np.asarray(starts, float)[None], (R, len(starts), 5))
    k = initial.shape[1]
    result = refine(initial.reshape(R * k, 5), np.repeat(log_N, k, axis=0), np.repeat(log_D, k, axis=0),
                    np.repeat(log_loss, k, axis=0), objective=objective)
    values = result.objective.reshape(R, k)
    best = np.argmin(values, axis=1)
    pick = np.arange(R) * k + best
    return BatchFit(theta=result.theta[pick], objective=result.objective[pick], converged=result.converged[pick])

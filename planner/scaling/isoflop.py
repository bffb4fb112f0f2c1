"""Chinchilla's Approach 2 (Hoffmann et al. 2022, §3.2): at each compute budget, a parabola of loss
in log N locates that budget's optimum; power laws through the optima give N_opt ∝ C^a (and
D_opt = C / 6 N_opt), L_opt(C) = E + G C^-g, and the parabolas' curvature k = exp(q) (C^p, p = 0), so
that the loss of any run is L_opt(C) + k(C) (ln N - ln N_opt(C))^2 with C = 6 N D.

Everything is closed-form least squares, written over R replicates at once (arrays (R, budgets)):
one fit is R = 1, and the bootstrap (residuals of the parabolas resampled) is R = thousands in a
few numpy calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from planner.errors import UserError
from planner.scaling.budgets import budget_of
from planner.scaling.law import FLOPS_PER_PARAM_TOKEN
from planner.scaling.runs import Runs
from planner.scaling.slices import Slices, build

MIN_SIZES = 3        # a parabola needs three model sizes
EDGE = 0.05          # a minimum may lie this fraction of the sampled log-N range past its edge (it must lie inside)
PARABOLA_REACH = 1.5   # e-folds of N either side of the optimum that a slice typically samples
E_FRACTIONS = np.linspace(0.0, 0.98, 25)   # L_opt's floor E, as a fraction of the lowest optimum loss


@dataclass(frozen=True)
class IsoflopLaw:
    """The three power laws; every field has shape (R,) (R replicates; 1 for a single fit)."""

    a: np.ndarray
    c: np.ndarray
    E: np.ndarray
    G: np.ndarray
    g: np.ndarray
    p: np.ndarray
    q: np.ndarray

    def optimal_allocation(self, C) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt), each (R, len(C))."""
        log_C = np.log(np.atleast_1d(np.asarray(C, float)))[None, :]
        N = np.exp(self.c[:, None] + self.a[:, None] * log_C)
        return N, np.exp(log_C) / (FLOPS_PER_PARAM_TOKEN * N)

    def loss_opt(self, C) -> np.ndarray:
        log_C = np.log(np.atleast_1d(np.asarray(C, float)))[None, :]
        return self.E[:, None] + self.G[:, None] * np.exp(-self.g[:, None] * log_C)

    def predict(self, N, D) -> np.ndarray:
        """Loss (R, m) of runs (N, D): the optimum at their compute plus the parabola's rise."""
        N, D = np.atleast_1d(np.asarray(N, float)), np.atleast_1d(np.asarray(D, float))
        C = FLOPS_PER_PARAM_TOKEN * N * D
        N_opt, _ = self.optimal_allocation(C)
        curvature = np.exp(self.q[:, None] + self.p[:, None] * np.log(C)[None, :])
        # The parabola is measured near the optimum only: past PARABOLA_REACH e-folds it goes on
        # as a straight line (same slope), not as a square that nothing measured.
        gap = np.abs(np.log(N)[None, :] - np.log(N_opt))
        rise = np.where(gap <= PARABOLA_REACH, gap ** 2, PARABOLA_REACH * (2 * gap - PARABOLA_REACH))
        return self.loss_opt(C) + curvature * rise

    def to_json(self) -> dict:
        return {"N_opt": {"exponent": float(self.a[0]), "log_coefficient": float(self.c[0])},
                "loss_opt": {"E": float(self.E[0]), "G": float(self.G[0]), "g": float(self.g[0])},
                "curvature": {"exponent": float(self.p[0]), "log_coefficient": float(self.q[0])}}


@dataclass
class IsoflopFit:
    law: IsoflopLaw
    budgets: np.ndarray          # the budgets whose parabola located an optimum
    N_opt: np.ndarray
    loss_opt: np.ndarray
    warnings: list[str] = field(default_factory=list)
    runs: Optional[Runs] = None
    fitted: Optional[np.ndarray] = None      # each slice point's loss on its parabola (nan: unused)
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slices: Optional[Slices] = None
    points: Optional[np.ndarray] = None      # each slice point's loss

    def to_json(self) -> dict:
        return dict(self.law.to_json(), budgets=[{"C": float(c), "N_opt": float(n), "loss_opt": float(l)}
                                                 for c, n, l in zip(self.budgets, self.N_opt, self.loss_opt)],
                    warnings=list(self.warnings))


def parabola_minima(log_N: np.ndarray, Y: np.ndarray, groups: list[np.ndarray]):
    """Per group, fit Y = c0 + c1 u + c2 u^2 (u: log N centred and scaled) on every row of Y (R, n).
    Returns ln N_opt, L_opt, curvature in (ln N)^2 (each (R, K)), validity (R, K), fitted values."""
    R, K = Y.shape[0], len(groups)
    x_min, y_min, curv = np.full((R, K), np.nan), np.full((R, K), np.nan), np.full((R, K), np.nan)
    valid = np.zeros((R, K), bool)
    fitted = np.full(Y.shape, np.nan)
    for k, index in enumerate(groups):
        x = log_N[index]
        if len(np.unique(np.round(x, 9))) < MIN_SIZES:
            continue
        centre, scale = x.mean(), max(np.ptp(x) / 2, 1e-12)
        u = (x - centre) / scale
        X = np.column_stack([np.ones_like(u), u, u * u])
        c0, c1, c2 = (Y[:, index] @ np.linalg.pinv(X).T).T
        fitted[:, index] = np.column_stack([c0, c1, c2]) @ X.T
        with np.errstate(divide="ignore", invalid="ignore"):
            u_star = -c1 / (2 * c2)
        inside = (c2 > 0) & (u_star >= u.min() - 2 * EDGE) & (u_star <= u.max() + 2 * EDGE)
        valid[:, k] = inside
        x_min[:, k] = np.where(inside, centre + scale * u_star, np.nan)
        y_min[:, k] = np.where(inside, c0 - c1 * c1 / (4 * c2), np.nan)
        curv[:, k] = np.where(inside, c2 / scale ** 2, np.nan)
    return x_min, y_min, curv, valid, fitted


def _regress(x: np.ndarray, Y: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted line Y = slope x + intercept per row (x: (K,) or (R, K)); nan where < 2 budgets."""
    X = np.broadcast_to(x, Y.shape)
    Y = np.where(W > 0, Y, 0.0)
    total = W.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_bar, y_bar = (W * X).sum(-1) / total, (W * Y).sum(-1) / total
        dx = X - x_bar[..., None]
        slope = (W * dx * (Y - y_bar[..., None])).sum(-1) / (W * dx * dx).sum(-1)
    slope = np.where((W > 0).sum(-1) >= 2, slope, np.nan)
    return slope, y_bar - slope * x_bar


def laws_from_minima(log_C: np.ndarray, x_min, y_min, curv, valid, weights: Optional[np.ndarray] = None
                     ) -> IsoflopLaw:
    """The power laws through R sets of per-budget optima (invalid budgets left out per row)."""
    W = valid.astype(float) * (1.0 if weights is None else weights)
    a, c = _regress(log_C, np.nan_to_num(x_min), W)
    # L_opt = E + G C^-g: for each candidate floor E the rest is a line in log-log; keep the best E.
    y = np.where(valid, y_min, np.inf)
    with np.errstate(invalid="ignore"):   # a row with no valid budget: nan, and the row stays nan
        E = E_FRACTIONS[None, :, None] * np.min(y, axis=1)[:, None, None]                # (R, F, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.log(np.maximum(np.nan_to_num(y_min, nan=1.0)[:, None, :] - E, 1e-300))
        slope, intercept = _regress(log_C, gap, np.broadcast_to(W[:, None, :], gap.shape))
        predicted = E + np.exp(intercept[..., None] + slope[..., None] * log_C)
        error = (W[:, None, :] * (np.log(np.nan_to_num(y_min, nan=1.0))[:, None, :] - np.log(predicted)) ** 2).sum(-1)
    error = np.where(np.isfinite(error) & (slope <= 0), error, np.inf)
    best = np.argmin(error, axis=1)
    pick = (np.arange(len(best)), best)
    # Curvature: the slices' mean log curvature, no trend in C (p = 0). A trend fitted to a few
    # noisy curvatures, extrapolated 100x, predicted losses far off the optimum wildly.
    positive = W * (np.nan_to_num(curv) > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = (positive * np.log(np.where(positive > 0, curv, 1.0))).sum(-1) / positive.sum(-1)
    p = np.zeros_like(q)
    return IsoflopLaw(a=a, c=c, E=E[pick][:, 0], G=np.exp(intercept[pick]), g=-slope[pick],
                      p=np.nan_to_num(p), q=np.where(np.isfinite(q), q, np.log(np.nanmedian(np.abs(curv)) + 1e-12)))


def fit_isoflop(runs: Runs) -> IsoflopFit:
    """Approach 2 on a runs table, through its slices (slices.py); levels whose sizes do not bracket
    a minimum are skipped with a warning, and fewer than 2 left is an error."""
    slices = build(runs.N, runs.D, budget_of(runs), runs.budget is not None)
    log_N = np.log(slices.N)
    points = np.exp(slices.log_loss(np.log(runs.loss)[None, :]))
    x_min, y_min, curv, valid, fitted = parabola_minima(log_N, points, slices.groups)
    warnings = [f"isoFLOP: the sizes at {level:.3g} FLOPs do not bracket the loss minimum: skipped"
                for level, ok in zip(slices.levels, valid[0]) if not ok]
    if valid.sum() < 2:
        raise UserError(f"isoFLOP: {int(valid.sum())} budget(s) locate an optimum; Approach 2 needs at least 2 "
                        f"budgets with {MIN_SIZES}+ model sizes that bracket the minimum")
    law = laws_from_minima(np.log(slices.levels), x_min, y_min, curv, valid)
    keep = valid[0]
    residuals = []
    for k in np.flatnonzero(keep):
        members = slices.groups[k]
        n = len(members)
        if n > MIN_SIZES:   # a 3-size parabola fits exactly: no residual to learn the noise from
            residuals.append((points[0, members] - fitted[0, members]) * np.sqrt(n / (n - MIN_SIZES)))
    return IsoflopFit(law=law, budgets=slices.levels[keep], N_opt=np.exp(x_min[0, keep]), loss_opt=y_min[0, keep],
                      warnings=warnings, runs=runs, fitted=fitted[0],
                      residuals=np.concatenate(residuals) if residuals else np.zeros(0), slices=slices,
                      points=points[0])


def bootstrap_isoflop(fit: IsoflopFit, n_resamples: int, seed: int = 0) -> IsoflopLaw:
    """R = n_resamples laws refitted on slice losses = the parabolas' fitted values + resampled residuals."""
    slices = fit.slices
    rng = np.random.default_rng(seed)
    base = np.where(np.isfinite(fit.fitted), fit.fitted, fit.points)
    noise = (rng.choice(fit.residuals, size=(n_resamples, len(base))) if len(fit.residuals)
             else np.zeros((n_resamples, len(base))))
    x_min, y_min, curv, valid, _ = parabola_minima(np.log(slices.N), base[None, :] + noise, slices.groups)
    return laws_from_minima(np.log(slices.levels), x_min, y_min, curv, valid)

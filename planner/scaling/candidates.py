"""Every way of forecasting from a runs table, evaluated together: each law form (parametric,
Approach 3) and Approach 2 (isoFLOP), each under each small-scale remedy (none, leave the flagged
budgets out, down-weight them), each refitted on the whole table, with each budget left out in
turn (the spread that measures what the form misses), and at inner cuts that hold out the largest
fitted budgets (the user's own backtest, which the default method chooses by).

All of it runs over P repetitions that share one design (N, D, budgets) and differ in losses: a
runs table is P = 1; the synthetic check is P = 100 in the same calls. Variants are rows of weights
over runs or budgets, so each law form is one batched fit (`form_fit.py`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from planner.scaling.batched import fit_many
from planner.scaling.deviation import DOWN_WEIGHT, Deviation, detect
from planner.scaling.form_fit import fit_forms
from planner.scaling.isoflop import laws_from_minima, parabola_minima
from planner.scaling.law_forms import FORMS, LawForm
from planner.scaling.objectives import Objective
from planner.scaling.slices import Slices, build

REMEDIES = ("none", "drop-small")   # the default chooses between these; --small-weight asks for down-weighting
INNER_FACTORS = (4.0, 16.0)   # inner cuts hold out the fitted budgets above 1/4 and 1/16 of the largest
MIN_INNER_BUDGETS = 3         # ... keeping at least this many
EFOLD_FLOOR = np.log(2.0)     # extrapolation distances below 2x count as 2x (noise, not trend, rules there)


@dataclass(frozen=True)
class Design:
    """Runs shared by P repetitions: N, D, budget label (n,), budgets (K,), log losses (P, n), and
    their isoFLOP slices (`named`: the table gave the budgets)."""

    N: np.ndarray
    D: np.ndarray
    label: np.ndarray
    found: np.ndarray
    log_loss: np.ndarray
    named: bool = True

    @property
    def index(self) -> np.ndarray:
        return np.searchsorted(self.found, self.label)

    @property
    def slices(self) -> Slices:
        if "_slices" not in self.__dict__:
            object.__setattr__(self, "_slices", build(self.N, self.D, self.label, self.named))
        return self.__dict__["_slices"]

    def minima(self, log_loss: np.ndarray = None):
        """Parabola minima of every slice, for each row of (R, n) run log losses."""
        s = self.slices
        rows = self.log_loss if log_loss is None else log_loss
        return parabola_minima(np.log(s.N), np.exp(s.log_loss(rows)), s.groups)


@dataclass
class Candidate:
    """One forecasting method's numbers, shaped (P, remedies, variants, ...); variants are
    [whole table, budget 1 left out, ..., budget K left out, inner cut 1, inner cut 2]."""

    name: str
    N_opt: np.ndarray        # (P, Rm, V, m) at the target budgets
    loss_opt: np.ndarray     # (P, Rm, V, m)
    loss: np.ndarray         # (P, Rm, V, p) at the target points
    error_N: np.ndarray      # (P, Rm) inner-backtest mean |ln N_opt error| (inf: none measurable)
    error_loss: np.ndarray   # (P, Rm) inner-backtest mean |ln loss error|
    rate_N: np.ndarray       # (P, Rm) inner-backtest RMS ln N_opt error per e-fold of extrapolation
    rate_loss: np.ndarray
    budget_weights: np.ndarray   # (P, Rm, V, K)
    theta: Optional[np.ndarray] = None        # parametric: (P, Rm, V, k)
    covariance: Optional[np.ndarray] = None   # parametric: (P, Rm, k, k) of the whole-table fit
    remedies: tuple[str, ...] = REMEDIES


def variant_masks(found: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(V, K) budget masks: all, each left out, the inner cuts; and the inner cuts' holdouts (how
    many of the largest budgets each holds out). Cuts by compute, not by count, so that a table of
    many close budgets is held to a real extrapolation too."""
    K = len(found)
    holdouts = sorted({max(1, int(np.sum(found > found.max() / factor))) for factor in INNER_FACTORS})
    holdouts = [h for h in holdouts if K - h >= MIN_INNER_BUDGETS] or ([1] if K > MIN_INNER_BUDGETS else [])
    masks = [np.ones(K)] + [np.arange(K) != k for k in range(K)] + [np.arange(K) < K - h for h in holdouts]
    return np.array(masks, float), holdouts


def remedy_weights(deviation: Deviation, remedies: tuple[str, ...], small_weight: float) -> np.ndarray:
    """(P, Rm, K) budget weights of each remedy."""
    flagged = deviation.flagged
    table = {"none": np.ones_like(flagged, float), "drop-small": 1.0 - flagged,
             "down-weight": np.where(flagged, small_weight, 1.0)}
    return np.stack([table[name] for name in remedies], axis=1)


def _inner_errors(design: Design, predicted_N, predicted_loss, holdouts, measured, valid):
    """Over the inner cuts' held-out slice levels (N_opt, predicted_N (P, Rm, I, L)) and runs (loss),
    each (P, Rm): the mean |ln error| (what choices are made by) and the RMS of ln error per e-fold
    of extrapolation past the inner cut's largest budget (what widens intervals). A level is held
    out when every run it is made of is."""
    K, shape = len(design.found), predicted_N.shape[:2]
    sums = {key: [np.zeros(shape) for _ in range(3)] for key in ("N", "L")}   # |error|, rate^2, count
    for j, h in enumerate(holdouts):
        held_runs = (np.arange(K) >= K - h)[design.index]
        held = design.slices.level_weights(held_runs[None, :].astype(float))[0] > 0
        inner_max = design.found[K - h - 1]
        run_C = 6.0 * design.N * design.D
        for key, error, use, distance in (
                ("N", np.log(predicted_N[..., j, :]) - measured[:, None, :], (valid & held)[:, None, :],
                 np.log(design.slices.levels / inner_max)),
                ("L", np.log(predicted_loss[..., j, :]) - design.log_loss[:, None, :],
                 np.broadcast_to(held_runs, predicted_loss[..., j, :].shape), np.log(run_C / inner_max))):
            use = use & np.isfinite(error)
            error = np.where(use, error, 0.0)
            sums[key][0] += np.abs(error).sum(-1)
            sums[key][1] += ((error / np.maximum(distance, EFOLD_FLOOR)) ** 2).sum(-1)
            sums[key][2] += use.sum(-1)
    out = []
    for key in ("N", "L"):
        total, squares, count = sums[key]
        with np.errstate(invalid="ignore", divide="ignore"):
            out += [np.where(count > 0, total / count, np.inf), np.where(count > 0, np.sqrt(squares / count), 0.0)]
    return tuple(out)


def parametric(design: Design, form: LawForm, weights: np.ndarray, holdouts, start: np.ndarray,
               targets: np.ndarray, points: tuple[np.ndarray, np.ndarray], measured, valid) -> Candidate:
    """All variants of one law form: weights (P, Rm, V, K) over budgets; start (P, 5) Chinchilla thetas."""
    P, Rm, V, K = weights.shape
    run_weights = weights[..., design.index].reshape(P * Rm * V, -1)
    rows = np.repeat(np.arange(P), Rm * V)
    starts = form.from_chinchilla(start)[rows][:, None, :]
    fits = fit_forms(form, np.log(design.N), np.log(design.D), design.log_loss[rows], run_weights, starts)
    theta = fits.theta
    k = theta.shape[1]
    N_opt, D_opt = form.optimal_allocation(theta, targets)
    loss_opt = form.predict_rows(theta, N_opt, D_opt)
    loss = form.predict(theta, *points)
    N_at_budgets, _ = form.optimal_allocation(theta, design.slices.levels) if len(design.slices.levels) else \
        (np.full((len(theta), 0), np.nan), None)
    loss_at_runs = form.predict(theta, design.N, design.D)
    # A variant left with fewer runs than parameters + 2 has no fit worth the name.
    short = (run_weights > 0).sum(1) < k + 2
    for array in (N_opt, loss_opt, loss, N_at_budgets, loss_at_runs):
        array[short] = np.nan
    shape = (P, Rm, V)
    inner = slice(1 + K, V)
    errors = _inner_errors(design, N_at_budgets.reshape(*shape, -1)[:, :, inner],
                           loss_at_runs.reshape(*shape, -1)[:, :, inner], holdouts, measured, valid)
    covariance = fits.covariance.reshape(*shape, k, k)[:, :, 0]
    return Candidate(form.name, N_opt.reshape(*shape, -1), loss_opt.reshape(*shape, -1), loss.reshape(*shape, -1),
                     errors[0], errors[2], errors[1], errors[3], weights, theta.reshape(*shape, k), covariance)


def isoflop(design: Design, weights: np.ndarray, holdouts, targets, points, minima) -> Candidate:
    """All variants of Approach 2, from one set of per-slice parabola minima; a slice weighs as
    much as the least-weighted run it is made of."""
    P, Rm, V, K = weights.shape
    x_min, y_min, curv, valid, _ = minima
    rows = np.repeat(np.arange(P), Rm * V)
    levels = design.slices.levels
    level_weights = design.slices.level_weights(weights[..., design.index].reshape(P * Rm * V, -1))
    law = laws_from_minima(np.log(levels), x_min[rows], y_min[rows], curv[rows], valid[rows], level_weights)
    N_opt, _ = law.optimal_allocation(targets)
    shape = (P, Rm, V)
    inner = slice(1 + K, V)
    N_at_budgets, _ = law.optimal_allocation(levels)
    loss_at_runs = law.predict(design.N, design.D)
    errors = _inner_errors(design, N_at_budgets.reshape(*shape, -1)[:, :, inner],
                           loss_at_runs.reshape(*shape, -1)[:, :, inner], holdouts, x_min, valid)
    return Candidate("isoflop", N_opt.reshape(*shape, -1), law.loss_opt(targets).reshape(*shape, -1),
                     law.predict(*points).reshape(*shape, -1), errors[0], errors[2], errors[1], errors[3], weights)


def evaluate(design: Design, forms: list[str], with_isoflop: bool, targets: np.ndarray,
             points: tuple[np.ndarray, np.ndarray], remedies: tuple[str, ...] = REMEDIES,
             small_weight: float = DOWN_WEIGHT) -> tuple[dict[str, Candidate], Deviation, tuple]:
    """Every candidate named in `forms` (and isoFLOP) with all its variants."""
    minima = design.minima()
    shape = design.log_loss.shape
    start = fit_many(np.broadcast_to(np.log(design.N), shape), np.broadcast_to(np.log(design.D), shape),
                     design.log_loss, Objective("huber")).theta
    deviation = detect(np.log(design.N), np.log(design.D), design.log_loss, design.label, design.found, start)
    masks, holdouts = variant_masks(design.found)
    weights = remedy_weights(deviation, remedies, small_weight)[:, :, None, :] * masks[None, None]
    candidates: dict[str, Candidate] = {}
    if forms:
        for name in forms:
            candidates[name] = parametric(design, FORMS[name], weights, holdouts, start, targets, points,
                                          np.where(minima[3], minima[0], np.nan), minima[3])
    if with_isoflop and minima[3].sum(axis=1).min() >= 2:
        candidates["isoflop"] = isoflop(design, weights, holdouts, targets, points, minima)
    for candidate in candidates.values():
        candidate.remedies = remedies
    return candidates, deviation, minima

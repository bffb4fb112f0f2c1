"""Forecasts with honest intervals from the candidates of `candidates.py`, by method:

- `parametric`: the law form (and small-scale remedy) with the lowest inner-backtest error;
- `isoflop`: Approach 2 (with the remedy of lowest inner-backtest error);
- `auto` (the default): the parametric choice, unless isoFLOP's inner-backtest error on the user's
  own runs is lower by MARGIN: N_opt by the error at locating held-out budgets' optima, losses by
  the error at predicting held-out runs' losses (isoFLOP only for losses at a budget's optimum).

Draws for the bootstrap part: parametric forms from the Gauss-Newton normal approximation of each
fit (no refits: cheap over many repetitions); isoFLOP by resampling its parabolas' residuals.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from planner.scaling.candidates import EFOLD_FLOOR, Candidate, Design
from planner.scaling.form_fit import EXPONENT_FLOOR
from planner.scaling.intervals import honest
from planner.scaling.isoflop import MIN_SIZES, laws_from_minima, parabola_minima
from planner.scaling.law_forms import FORMS

METHODS = ("auto", "parametric", "isoflop")
MARGIN = 0.5    # a non-default law form, remedy or approach must halve the inner-backtest error: inner errors are noisy


@dataclass
class Forecast:
    method: str
    chosen_N: list[str]                  # (P,) "form/remedy" behind the N_opt forecast
    chosen_loss: list[str]
    N_opt: dict[str, np.ndarray]         # honest() dicts, (P, m)
    loss_opt: dict[str, np.ndarray]      # (P, m)
    loss: dict[str, np.ndarray]          # (P, p)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)   # rep 0: candidate -> inner errors


def _choose(candidates: dict[str, Candidate], names: list[str], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per repetition, the (candidate index into names, remedy index) of lowest inner error; a
    choice other than the first form without a remedy must beat it by MARGIN (inner errors are
    noisy, and every extra candidate is one more chance to pick a lucky one)."""
    errors = np.stack([getattr(candidates[n], key) for n in names], axis=1)       # (P, C, Rm)
    if key == "error_N":   # no held-out budget locates an optimum: fall back on loss errors
        fallback = np.stack([candidates[n].error_loss for n in names], axis=1)
        errors = np.where(np.isinf(errors).all(axis=(1, 2), keepdims=True), fallback, errors)
    errors = np.where(np.isfinite(errors), errors, np.inf)
    flat = np.argmin(errors.reshape(len(errors), -1), axis=1)
    best = np.take_along_axis(errors.reshape(len(errors), -1), flat[:, None], axis=1)[:, 0]
    flat = np.where(best < MARGIN * errors[:, 0, 0], flat, 0)
    return flat // errors.shape[2], flat % errors.shape[2]


def _parametric_draws(candidate: Candidate, reps, remedy, count, seed, targets, points):
    form = FORMS[candidate.name]
    rng = np.random.default_rng(seed)
    theta = candidate.theta[reps, remedy, 0]                          # (r, k)
    cov = candidate.covariance[reps, remedy]
    values, vectors = np.linalg.eigh((cov + np.swapaxes(cov, 1, 2)) / 2)
    root = vectors * np.sqrt(np.clip(values, 0, None))[:, None, :]
    draws = theta[:, None, :] + np.einsum("rkl,rsl->rsk", root, rng.standard_normal((len(reps), count, theta.shape[1])))
    for k in form.exponents:
        draws[..., k] = np.maximum(draws[..., k], EXPONENT_FLOOR)
    flat = draws.reshape(-1, theta.shape[1])
    N, D = form.optimal_allocation(flat, targets)
    shape = (len(reps), count, -1)
    return (N.reshape(shape), form.predict_rows(flat, N, D).reshape(shape),
            form.predict(flat, *points).reshape(shape))


def _isoflop_draws(design: Design, minima, weights, reps, remedy, count, seed, targets, points):
    """Slice-point losses = each parabola's fitted values + residuals resampled from the slices with
    more than 3 sizes (inflated by sqrt(n / (n - 3)) for the parabola's 3 fitted coefficients)."""
    rng = np.random.default_rng(seed)
    slices = design.slices
    fitted = minima[4][reps]                                           # (r, q)
    observed = np.exp(slices.log_loss(design.log_loss[reps]))
    pooled = [k for k, g in enumerate(slices.groups) if len(g) > MIN_SIZES]
    noise = np.zeros((len(reps), count, len(slices.N)))
    if pooled:
        members = np.concatenate([slices.groups[k] for k in pooled])
        sizes = np.concatenate([np.full(len(slices.groups[k]), len(slices.groups[k])) for k in pooled])
        residual = (observed[:, members] - fitted[:, members]) * np.sqrt(sizes / (sizes - MIN_SIZES))
        pick = rng.integers(0, len(members), (len(reps), count, len(slices.N)))
        spread = np.broadcast_to(residual[:, None, :], (len(reps), count, len(members)))
        noise = np.take_along_axis(spread, pick, axis=2)
    base = np.where(np.isfinite(fitted), fitted, observed)
    Y = (base[:, None, :] + noise).reshape(len(reps) * count, -1)
    x_min, y_min, curv, valid, _ = parabola_minima(np.log(slices.N), Y, slices.groups)
    run_weights = weights[reps, remedy, 0][:, design.index]
    W = np.repeat(slices.level_weights(run_weights), count, axis=0)
    law = laws_from_minima(np.log(slices.levels), x_min, y_min, curv, valid, W)
    shape = (len(reps), count, -1)
    return (law.optimal_allocation(targets)[0].reshape(shape), law.loss_opt(targets).reshape(shape),
            law.predict(*points).reshape(shape))


def _family(design, candidates, minima, names, quantity, key, count, seed, targets, points) -> dict:
    """One approach's chosen forecast per repetition: point, draws, leave-one-budget-out values, and
    the inner-backtest error (`key`) it was chosen by."""
    P, K = design.log_loss.shape[0], len(design.found)
    pick, remedy = _choose(candidates, names, key)
    width = getattr(candidates[names[0]], quantity).shape[-1]
    out = {"point": np.full((P, width), np.nan), "left_out": np.full((P, K, width), np.nan),
           "draws": np.full((P, count, width), np.nan), "active": np.zeros((P, K), bool),
           "drift": np.zeros((P, width)), "error": np.zeros(P), "rate": np.zeros(P), "chosen": [""] * P}
    for c, name in enumerate(names):
        reps = np.flatnonzero(pick == c)
        if reps.size == 0:
            continue
        cand = candidates[name]
        values = getattr(cand, quantity)
        out["point"][reps] = values[reps, remedy[reps], 0]
        out["left_out"][reps] = values[reps, remedy[reps], 1:1 + K]
        full = np.log(values[reps, remedy[reps], 0])[:, None, :]
        inner = np.log(values[reps, remedy[reps], 1 + K:])
        out["drift"][reps] = np.nanmax(np.abs(inner - full), axis=1, initial=0.0) if inner.shape[1] else 0.0
        out["active"][reps] = cand.budget_weights[reps, remedy[reps], 0] > 0
        out["error"][reps] = getattr(cand, key)[reps, remedy[reps]]
        out["rate"][reps] = getattr(cand, "rate_N" if quantity == "N_opt" else "rate_loss")[reps, remedy[reps]]
        out["draws"][reps] = _draws(design, minima, cand, reps, remedy[reps], count, seed, targets, points)[quantity]
        for r in reps:
            out["chosen"][r] = f"{name}/{cand.remedies[remedy[r]]}"
    return out


_CACHE: dict = {}


def _draws(design, minima, cand, reps, remedy, count, seed, targets, points) -> dict:
    """Draws of all three quantities for these repetitions (made once per forecast() call)."""
    key = (id(cand), reps.tobytes(), remedy.tobytes())
    if key not in _CACHE:
        if cand.name == "isoflop":
            made = _isoflop_draws(design, minima, cand.budget_weights, reps, remedy, count, seed, targets, points)
        else:
            made = _parametric_draws(cand, reps, remedy, count, seed, targets, points)
        _CACHE[key] = dict(zip(("N_opt", "loss_opt", "loss"), made))
    return _CACHE[key]


def _select(first: dict, second: dict) -> dict:
    """Per repetition, the second approach where its inner-backtest error beats the first's by
    MARGIN, else the first (ties, and no measurable error, go to the first)."""
    take = second["error"] < MARGIN * first["error"]
    out = {}
    for key, value in first.items():
        if key == "chosen":
            out[key] = [b if t else a for a, b, t in zip(value, second[key], take)]
        else:
            mask = take.reshape((-1,) + (1,) * (np.ndim(value) - 1))
            out[key] = np.where(mask, second[key], value)
    return out


def forecast(design: Design, candidates: dict[str, Candidate], minima, method: str, targets, points,
             confidence: float = 0.9, count: int = 400, seed: int = 0) -> Forecast:
    """The method's forecasts for every repetition, each with its honest interval."""
    parametric = [n for n in candidates if n != "isoflop"]
    iso = ["isoflop"] if "isoflop" in candidates else []
    result, chosen = {}, {}
    for quantity, key in (("N_opt", "error_N"), ("loss_opt", "error_loss"), ("loss", "error_loss")):
        # Approach 2 knows the loss near each budget's optimum only: away from it (the loss of an
        # arbitrary run) it is neither a choice of the default nor a widening of the parametric interval.
        families = (("parametric", parametric), ("isoflop", iso if quantity != "loss" or method == "isoflop" else []))
        fams = {name: _family(design, candidates, minima, members, quantity, key, count, seed, targets, points)
                for name, members in families if members}
        if method == "auto":
            part = _select(fams["parametric"], fams["isoflop"]) if len(fams) == 2 else next(iter(fams.values()))
        else:
            part = fams.get(method) or next(iter(fams.values()))
        disagreement = (np.abs(np.log(fams["parametric"]["point"]) - np.log(fams["isoflop"]["point"]))
                        if len(fams) == 2 else np.zeros_like(part["point"]))
        at = targets if quantity != "loss" else 6.0 * points[0] * points[1]
        efolds = np.maximum(np.log(np.asarray(at, float) / design.found.max()), EFOLD_FLOOR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result[quantity] = honest(part["point"], part["draws"], part["left_out"], part["active"],
                                      np.hypot(disagreement, part["drift"]), part["rate"][:, None] * efolds[None, :],
                                      confidence)
        chosen[quantity] = part["chosen"]
    _CACHE.clear()
    scores = {name: {"N_opt": float(np.min(c.error_N[0])), "loss": float(np.min(c.error_loss[0]))}
              for name, c in candidates.items()}
    return Forecast(method, chosen["N_opt"], chosen["loss"], result["N_opt"], result["loss_opt"], result["loss"],
                    scores)

"""Forecasts with honest intervals from the candidates of `candidates.py`, by method:

- `parametric`: the law form (and small-scale remedy) with the lowest inner-backtest error;
- `isoflop`: Approach 2 (with the remedy of lowest inner-backtest error);
- `auto` (the default): whichever of all of them has the lowest inner-backtest error on the user's
  own runs: N_opt from the best at locating held-out budgets' optima, losses from the best at
  predicting held-out runs' losses.

Draws for the bootstrap part: parametric forms from the Gauss-Newton normal approximation of each
fit (no refits: cheap over many repetitions); isoFLOP by resampling its parabolas' residuals.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from planner.scaling.candidates import Candidate, Design
from planner.scaling.form_fit import EXPONENT_FLOOR
from planner.scaling.intervals import honest
from planner.scaling.isoflop import MIN_SIZES, laws_from_minima, parabola_minima
from planner.scaling.law_forms import FORMS

METHODS = ("auto", "parametric", "isoflop")
MARGIN = 0.8    # a non-default law form or remedy must cut the inner-backtest error by 20 %


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
    rng = np.random.default_rng(seed)
    fitted = minima[4][reps]
    groups = [np.flatnonzero(design.label == b) for b in design.found]
    loss = np.exp(design.log_loss[reps])
    pooled = [k for k, g in enumerate(groups) if len(np.unique(design.N[g])) > MIN_SIZES]
    noise = np.zeros((len(reps), count, len(design.N)))
    if pooled:
        members = np.concatenate([groups[k] for k in pooled])
        sizes = np.concatenate([np.full(len(groups[k]), len(groups[k])) for k in pooled])
        residual = (loss[:, members] - fitted[:, members]) * np.sqrt(sizes / (sizes - MIN_SIZES))
        pick = rng.integers(0, len(members), (len(reps), count, len(design.N)))
        noise = np.take_along_axis(residual[:, None, :], pick, axis=2)
    base = np.where(np.isfinite(fitted), fitted, loss)
    Y = (base[:, None, :] + noise).reshape(len(reps) * count, -1)
    x_min, y_min, curv, valid, _ = parabola_minima(np.log(design.N), Y, groups)
    W = np.repeat(weights[reps, remedy, 0], count, axis=0)
    law = laws_from_minima(np.log(design.found), x_min, y_min, curv, valid, W)
    shape = (len(reps), count, -1)
    return (law.optimal_allocation(targets)[0].reshape(shape), law.loss_opt(targets).reshape(shape),
            law.predict(*points).reshape(shape))


def _family(design, candidates, minima, names, quantity, key, count, seed, targets, points) -> dict:
    """One approach's chosen forecast per repetition: point, draws, leave-one-budget-out values, and
    the inner-backtest error (`key`) of the choice. Parametric forms and remedies are chosen by
    their loss error on held-out runs (many points, so less noisy than a few held-out optima)."""
    P, K = design.log_loss.shape[0], len(design.found)
    pick, remedy = _choose(candidates, names, "error_loss" if names[0] != "isoflop" else key)
    width = getattr(candidates[names[0]], quantity).shape[-1]
    out = {"point": np.full((P, width), np.nan), "left_out": np.full((P, K, width), np.nan),
           "draws": np.full((P, count, width), np.nan), "active": np.zeros((P, K), bool),
           "error": np.zeros(P), "chosen": [""] * P}
    for c, name in enumerate(names):
        reps = np.flatnonzero(pick == c)
        if reps.size == 0:
            continue
        cand = candidates[name]
        values = getattr(cand, quantity)
        out["point"][reps] = values[reps, remedy[reps], 0]
        out["left_out"][reps] = values[reps, remedy[reps], 1:1 + K]
        out["active"][reps] = cand.budget_weights[reps, remedy[reps], 0] > 0
        out["error"][reps] = getattr(cand, key)[reps, remedy[reps]]
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


def _blend(first: dict, second: dict) -> dict:
    """Log-space blend weighted by inverse squared inner-backtest error, per repetition."""
    e1, e2 = first["error"], second["error"]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(np.isinf(e1) & np.isinf(e2), 0.5, np.nan_to_num(e2 ** 2 / (e1 ** 2 + e2 ** 2), nan=0.0))
    w = np.where(np.isinf(e1) & ~np.isinf(e2), 0.0, np.where(np.isinf(e2) & ~np.isinf(e1), 1.0, w))

    def mix(a, b, weight):
        return np.exp(weight * np.log(a) + (1 - weight) * np.log(b))
    return {"point": mix(first["point"], second["point"], w[:, None]),
            "draws": mix(first["draws"], second["draws"], w[:, None, None]),
            "left_out": mix(first["left_out"], second["left_out"], w[:, None, None]),
            "active": first["active"] | second["active"],
            "chosen": [f"{w_:.2f} {a} + {1 - w_:.2f} {b}" for w_, a, b in zip(w, first["chosen"], second["chosen"])]}


def forecast(design: Design, candidates: dict[str, Candidate], minima, method: str, targets, points,
             confidence: float = 0.9, count: int = 400, seed: int = 0) -> Forecast:
    """The method's forecasts for every repetition, each with its honest interval."""
    parametric = [n for n in candidates if n != "isoflop"]
    iso = ["isoflop"] if "isoflop" in candidates else []
    result, chosen = {}, {}
    for quantity, key in (("N_opt", "error_N"), ("loss_opt", "error_loss"), ("loss", "error_loss")):
        fams = {name: _family(design, candidates, minima, members, quantity, key, count, seed, targets, points)
                for name, members in (("parametric", parametric), ("isoflop", iso)) if members}
        if method == "auto":
            part = _blend(fams["parametric"], fams["isoflop"]) if len(fams) == 2 else next(iter(fams.values()))
        else:
            part = fams[method]
        disagreement = (np.abs(np.log(fams["parametric"]["point"]) - np.log(fams["isoflop"]["point"]))
                        if len(fams) == 2 else np.zeros_like(part["point"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result[quantity] = honest(part["point"], part["draws"], part["left_out"], part["active"],
                                      disagreement, confidence)
        chosen[quantity] = part["chosen"]
    _CACHE.clear()
    scores = {name: {"N_opt": float(np.min(c.error_N[0])), "loss": float(np.min(c.error_loss[0]))}
              for name, c in candidates.items()}
    return Forecast(method, chosen["N_opt"], chosen["loss"], result["N_opt"], result["loss_opt"], result["loss"],
                    scores)

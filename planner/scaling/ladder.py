"""The seed-run ladder: where to place the small runs that pin the law, chosen by simulation.

A design is IsoFLOP slices (Hoffmann et al. 2022, Approach 2's placement) at budgets spaced
geometrically over `spread`, each slice spanning a range of tokens per parameter; or log-uniform
random placement (what `scaleplan simulate` did and the chinchilla library does), the reference.
Every design spends the same total compute over the same number of runs.

The design is scored by what it is for: simulate the ladder against a prior law with the user's
noise, fit every repetition (batched, `batched.py`), and measure the spread of the fitted N_opt at
the target budget around the prior's. Wide tokens-per-parameter spans separate the N- and D-terms of
the law; several slices pin the exponents; the search trades these off for the runs given.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Optional, Sequence

import numpy as np

from planner.errors import UserError
from planner.scaling.batched import fit_many
from planner.scaling.law import FLOPS_PER_PARAM_TOKEN, ScalingLaw
from planner.scaling.objectives import Objective
from planner.scaling.runs import MIN_RUNS

DESIGNS = ("isoflop", "loguniform")
LOGUNIFORM_TOKENS_PER_PARAM = (4.0, 100.0)    # simulate's seed range, the chinchilla library's N_to_D range
LOGUNIFORM_SPREAD = 100.0                     # simulate's default seed range: 1e17 .. 1e19
# The search space: slices, budget spread (largest / smallest slice) and tokens-per-parameter span.
SLICE_CHOICES = (2, 3, 4, 5, 6)
SPREAD_CHOICES = (10.0, 100.0, 1000.0)
SPAN_CHOICES = ((4.0, 100.0), (2.0, 200.0), (1.0, 400.0))
SEARCH_REPETITIONS = 32
DEFAULT_TARGET_FACTOR = 100.0                 # target budget / largest seed budget
INTERVAL_QUANTILES = (0.05, 0.95)


@dataclass(frozen=True)
class Design:
    """Where the runs go. `spread`: largest / smallest run budget; `span`: tokens per parameter
    (isoflop: each slice's range, log-spaced; loguniform: the range it draws from)."""

    kind: str = "isoflop"
    runs: int = 20
    slices: int = 4
    spread: float = 30.0
    span: tuple[float, float] = (1.0, 400.0)

    def __post_init__(self) -> None:
        if self.kind not in DESIGNS:
            raise UserError(f"unknown design '{self.kind}': choose one of {', '.join(DESIGNS)}")
        if self.runs < MIN_RUNS:
            raise UserError(f"a ladder needs at least {MIN_RUNS} runs (the law has 5 parameters), got {self.runs}")
        if self.kind == "isoflop" and not 1 <= self.slices <= self.runs // 2:
            raise UserError(f"{self.slices} slices of {self.runs} runs: each slice needs at least 2 runs")
        if not self.spread >= 1 or not 0 < self.span[0] < self.span[1]:
            raise UserError(f"design needs spread >= 1 and 0 < span low < span high, got {self.spread}, {self.span}")

    def describe(self) -> str:
        if self.kind == "loguniform":
            return (f"log-uniform: {self.runs} runs, budgets over {self.spread:g}x, {self.span[0]:g}-{self.span[1]:g} "
                    f"tokens/param")
        return (f"isoflop: {self.slices} slices x {self.runs // self.slices}+ runs, budgets over {self.spread:g}x, "
                f"{self.span[0]:g}-{self.span[1]:g} tokens/param per slice")

    def to_json(self) -> dict:
        out = asdict(self)
        out["span"] = list(self.span)
        return out


@dataclass(frozen=True)
class Placement:
    """The runs of a design at a total compute: target N, D and budget of each, and its slice."""

    N: np.ndarray
    D: np.ndarray
    slice_index: np.ndarray

    @property
    def C(self) -> np.ndarray:
        return FLOPS_PER_PARAM_TOKEN * self.N * self.D


def slice_sizes(runs: int, slices: int) -> list[int]:
    """Runs per slice, the remainder going to the cheapest slices."""
    base, extra = divmod(runs, slices)
    return [base + (1 if s < extra else 0) for s in range(slices)]


def place(design: Design, total_flops: float, rng: Optional[np.random.Generator] = None,
          min_params: float = 0.0, min_tokens: float = 0.0) -> Placement:
    """The design's runs, scaled so their budgets sum to `total_flops`. A run below `min_params` (the
    smallest model that can be built) or `min_tokens` (the shortest run worth training) moves to that
    bound at the same budget; `feasible` says whether the runs of every slice stay distinct."""
    if not total_flops > 0:
        raise UserError(f"the ladder's budget must be positive, got {total_flops:g}")
    if design.kind == "isoflop":
        sizes = slice_sizes(design.runs, design.slices)
        levels = (design.spread ** (np.arange(design.slices) / max(design.slices - 1, 1) - 1.0)
                  if design.slices > 1 else np.ones(1))
        levels = levels * (total_flops / float(np.dot(sizes, levels)))
        C = np.concatenate([np.full(k, level) for k, level in zip(sizes, levels)])
        # Each slice spans what its bounds allow of the design's tokens-per-parameter range:
        # tokens/param = C / (6 N^2) is at most C / (6 N_min^2) and at least 6 D_min^2 / C.
        ratio = np.concatenate([np.geomspace(*_span_within(design.span, level, min_params, min_tokens), k)
                                for k, level in zip(sizes, levels)])
        index = np.concatenate([np.full(k, s) for s, k in enumerate(sizes)])
    else:
        rng = rng if rng is not None else np.random.default_rng(0)
        C = np.exp(rng.uniform(-math.log(design.spread), 0.0, design.runs))
        ratio = np.exp(rng.uniform(*np.log(design.span), design.runs))
        index = np.zeros(design.runs, dtype=int)
    C = C * (total_flops / C.sum())
    N = np.sqrt(C / (FLOPS_PER_PARAM_TOKEN * ratio))
    if min_tokens > 0:
        N = np.minimum(N, C / (FLOPS_PER_PARAM_TOKEN * min_tokens))
    N = np.maximum(N, min_params)
    return Placement(N=N, D=C / (FLOPS_PER_PARAM_TOKEN * N), slice_index=index)


MIN_SLICE_SPAN = 2.0    # a slice whose bounds leave less than this ratio of tokens/param is too narrow


def _span_within(span: tuple[float, float], C: float, min_params: float, min_tokens: float) -> tuple[float, float]:
    low, high = span
    if min_params > 0:
        high = min(high, C / (FLOPS_PER_PARAM_TOKEN * min_params ** 2))
    if min_tokens > 0:
        low = max(low, FLOPS_PER_PARAM_TOKEN * min_tokens ** 2 / C)
    if high < low * MIN_SLICE_SPAN:          # no room: the runs collapse onto one point (infeasible)
        return low, low
    return low, high


def feasible(placement: Placement) -> bool:
    """No two runs of a slice were pushed onto the same size by the bounds (they would repeat)."""
    for s in np.unique(placement.slice_index):
        N = placement.N[placement.slice_index == s]
        if len(np.unique(np.round(np.log(N), 6))) < len(N):
            return False
    return True


@dataclass(frozen=True)
class DesignScore:
    """N_opt at the target over simulated repetitions: log errors log(N_fit / N_true)."""

    design: Design
    log_errors: np.ndarray
    target_flops: float

    @property
    def bias(self) -> float:
        """Median relative error: the systematic part."""
        return float(np.expm1(np.median(self.log_errors)))

    @property
    def scatter(self) -> float:
        """Half the width of the 90 % range of log errors, as a factor - 1: the random part."""
        low, high = np.quantile(self.log_errors, INTERVAL_QUANTILES)
        return float(np.expm1((high - low) / 2.0))

    @property
    def median_error(self) -> float:
        """Median |N_fit / N_true - 1|."""
        return float(np.median(np.abs(np.expm1(self.log_errors))))

    def interval(self, N: float) -> tuple[float, float]:
        """The 90 % range of N_opt predicted around N (what a fit of this ladder will say)."""
        low, high = np.quantile(self.log_errors - np.median(self.log_errors), INTERVAL_QUANTILES)
        return float(N * math.exp(low)), float(N * math.exp(high))

    def to_json(self) -> dict:
        return {"design": self.design.to_json(), "target_flops": self.target_flops, "bias": self.bias,
                "scatter": self.scatter, "median_error": self.median_error,
                "repetitions": int(len(self.log_errors))}


def score(design: Design, prior: ScalingLaw, total_flops: float, target_flops: float, noise: float,
          repetitions: int = SEARCH_REPETITIONS, seed: int = 0, min_params: float = 0.0,
          objective: Objective = Objective(), min_tokens: float = 0.0) -> DesignScore:
    """Train the ladder `repetitions` times against `prior` with log-normal loss noise, fit each, and
    compare N_opt at `target_flops` with the prior's. Isoflop placements are fixed; log-uniform ones
    are redrawn each repetition. The same seed gives every design the same noise draws."""
    if noise < 0:
        raise UserError(f"--noise must be non-negative, got {noise}")
    rng = np.random.default_rng(seed)
    placements = [place(design, total_flops, rng, min_params, min_tokens) for _ in range(repetitions)]
    N = np.stack([p.N for p in placements])
    D = np.stack([p.D for p in placements])
    noise_draws = rng.normal(0.0, noise, N.shape)
    loss = prior.predict(N, D) * np.exp(noise_draws)
    fits = fit_many(np.log(N), np.log(D), np.log(loss), objective)
    N_true, _ = prior.optimal_allocation(target_flops)
    log_E, log_A, log_B, alpha, beta = fits.theta.T
    with np.errstate(all="ignore"):
        # N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta))  (law.py)
        total = alpha + beta
        log_N_fit = (np.log(alpha / beta) + log_A - log_B) / total + beta / total * math.log(
            target_flops / FLOPS_PER_PARAM_TOKEN)
    log_errors = np.where(np.isfinite(log_N_fit), log_N_fit - math.log(N_true), np.inf)
    return DesignScore(design=design, log_errors=log_errors, target_flops=target_flops)


def largest_budget(design: Design, total_flops: float) -> float:
    return float(place(design, total_flops).C.max())


def candidates(runs: int) -> list[Design]:
    """Every isoflop design of the search space that gives each slice at least 3 runs (a parabola's
    worth), for this number of runs."""
    found = [Design("isoflop", runs, slices, spread, span)
             for slices in SLICE_CHOICES for spread in SPREAD_CHOICES for span in SPAN_CHOICES
             if runs // slices >= 3]
    if not found:
        found = [Design("isoflop", runs, max(1, runs // 3) if runs >= 6 else 1, SPREAD_CHOICES[-1], SPAN_CHOICES[-1])]
    return found


@dataclass(frozen=True)
class LadderDesign:
    best: DesignScore
    considered: list[DesignScore]
    reference: DesignScore          # log-uniform with the same runs and compute

    def to_json(self) -> dict:
        return {"chosen": self.best.to_json(), "reference_loguniform": self.reference.to_json(),
                "considered": [s.to_json() for s in self.considered]}


def design_ladder(prior: ScalingLaw, total_flops: float, runs: int, noise: float,
                  target_flops: Optional[float] = None, min_params: float = 0.0, min_tokens: float = 0.0,
                  repetitions: int = SEARCH_REPETITIONS, seed: int = 0,
                  choices: Optional[Sequence[Design]] = None) -> LadderDesign:
    """The isoflop design with the narrowest simulated N_opt range at the target (default: 100x the
    design's largest run), scored beside log-uniform placement of the same runs and compute. Designs
    whose runs the size and length bounds would make repeat are not considered."""
    scored = []
    for design in choices or candidates(runs):
        if not feasible(place(design, total_flops, min_params=min_params, min_tokens=min_tokens)):
            continue
        target = target_flops or DEFAULT_TARGET_FACTOR * largest_budget(design, total_flops)
        scored.append(score(design, prior, total_flops, target, noise, repetitions, seed, min_params,
                            min_tokens=min_tokens))
    if not scored:
        raise UserError(f"a budget of {total_flops:.3g} FLOPs is too small for {runs} distinct runs: the smallest "
                        f"model ({min_params:,.0f} params) and shortest run ({min_tokens:,.0f} tokens) leave no room "
                        f"to vary size within a compute slice; raise the budget or lower --runs")
    best = min(scored, key=lambda s: (s.scatter + abs(s.bias), s.median_error))
    reference_design = Design("loguniform", runs, 1, LOGUNIFORM_SPREAD, LOGUNIFORM_TOKENS_PER_PARAM)
    reference = score(reference_design, prior, total_flops, best.target_flops, noise, repetitions, seed, min_params,
                      min_tokens=min_tokens)
    return LadderDesign(best=best, considered=scored, reference=reference)


def with_runs(design: Design, runs: int) -> Design:
    return replace(design, runs=runs)


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

"""The seed-run ladder: where to place the small runs that pin the law, chosen by simulation.

A design (`ladder_placement.py`) is IsoFLOP slices (Hoffmann et al. 2022, Approach 2's placement)
at budgets spaced geometrically over `spread`, each slice spanning a range of tokens per parameter;
or log-uniform random placement (what `scaleplan simulate` did and the chinchilla library does), the
reference. Every design spends the same total compute over the same number of runs.

The design is scored by what it is for: simulate the ladder against a prior law with the user's
noise, fit every repetition (batched, `batched.py`), and measure the spread of the fitted N_opt at
the target budget around the prior's. Wide tokens-per-parameter spans separate the N- and D-terms of
the law; several slices pin the exponents; the search trades these off for the runs given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from planner.errors import UserError
from planner.scaling.batched import fit_many
# Re-exported: callers import the whole ladder from here.
from planner.scaling.ladder_interval import (  # noqa: F401
    diverged, leave_one_out_errors, prediction_error, predictive_interval, residual_noise,
)
from planner.scaling.ladder_placement import (  # noqa: F401
    DESIGNS, LOGUNIFORM_SPREAD, LOGUNIFORM_TOKENS_PER_PARAM, MIN_SLICE_SPAN, Design, Placement, feasible, place,
    slice_sizes,
)
from planner.scaling.law import FLOPS_PER_PARAM_TOKEN, ScalingLaw
from planner.scaling.objectives import Objective

# The search space: slices, budget spread (largest / smallest slice) and tokens-per-parameter span.
SLICE_CHOICES = (2, 3, 4, 5, 6)
SPREAD_CHOICES = (10.0, 100.0, 1000.0)
SPAN_CHOICES = ((4.0, 100.0), (2.0, 200.0), (1.0, 400.0))
SEARCH_REPETITIONS = 32
DEFAULT_TARGET_FACTOR = 100.0                 # target budget / largest seed budget
INTERVAL_QUANTILES = (0.05, 0.95)


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

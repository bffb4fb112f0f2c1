"""Bootstrap over runs: refit the law on resampled runs to put intervals on every parameter, on the
compute-optimal N and D at a budget, and on the loss predicted there.

Two paths to the same optima. `batched` (default): every resample is the full set of runs weighted
by how often each was drawn, and all of them are refined together by the batched damped Newton of
`batched.py`, warm-started from the full fit's optima, in this process. `refit`: one scipy
quasi-Newton fit per resample; resamples are fitted in worker processes started with the `spawn` method (safe next to threads and
on macOS/Windows, where the chinchilla library's fork-only pool hangs); the work function is
top-level and its arguments are plain arrays, so everything pickles.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from planner.errors import UserError
from planner.scaling.batched import refine as refine_batch
from planner.scaling.fit import FitResult, fit_from_starts, law_from_theta
from planner.scaling.law import PARAM_NAMES
from planner.scaling.objectives import Objective
from planner.scaling.runs import MIN_RUNS, Runs

DEFAULT_CONFIDENCE = 0.9
RESAMPLE_GTOL = 1e-7   # on the rescaled objective; parameters settle far below the bootstrap spread
MAX_WARM_STARTS = 2     # the full fit's best few distinct optima seed every resample's refinement
METHODS = ("batched", "refit")
BATCH_CHUNK = 1000      # resamples per batched call: bounds memory (a (chunk x runs x 5 x 5) Hessian build)


@dataclass(frozen=True)
class BootstrapResult:
    """One row per successful resample: the law's parameters and what it implies at `budget`."""

    params: np.ndarray      # (n, 5): E, A, B, alpha, beta
    N_opt: np.ndarray
    D_opt: np.ndarray
    loss_opt: np.ndarray
    budget: float
    confidence: float
    requested: int

    def quantities(self) -> dict[str, np.ndarray]:
        columns = {name: self.params[:, i] for i, name in enumerate(PARAM_NAMES)}
        columns.update(N_opt=self.N_opt, D_opt=self.D_opt, loss=self.loss_opt)
        return columns

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Percentile intervals at `confidence` for every quantity."""
        tail = 100.0 * (1.0 - self.confidence) / 2.0
        return {name: (float(np.percentile(v, tail)), float(np.percentile(v, 100.0 - tail)))
                for name, v in self.quantities().items()}

    def to_json(self) -> dict:
        return {"resamples": self.requested, "succeeded": len(self.params), "confidence": self.confidence,
                "budget_flops": self.budget,
                "intervals": {name: list(bounds) for name, bounds in self.intervals().items()}}


def resample_indices(n_runs: int, n_resamples: int, seed: int) -> list[np.ndarray]:
    """Index sets drawn with replacement; redrawn when fewer than MIN_RUNS distinct runs survive."""
    rng = np.random.default_rng(seed)
    draws = []
    while len(draws) < n_resamples:
        index = rng.integers(0, n_runs, n_runs)
        if len(np.unique(index)) >= MIN_RUNS:
            draws.append(np.sort(index))
    return draws


def fit_resamples(N: np.ndarray, D: np.ndarray, loss: np.ndarray, objective: Objective,
                  starts: Sequence[np.ndarray], draws: Sequence[np.ndarray]) -> list[Optional[np.ndarray]]:
    """Refit on each index set (worker entry point; top-level so `spawn` can pickle it)."""
    runs = Runs(N=N, D=D, loss=loss)
    thetas: list[Optional[np.ndarray]] = []
    for index in draws:
        # One quasi-Newton round from warm starts: a resample's optimum lies close to the full fit's.
        result = fit_from_starts(runs.subset(index), objective, starts, rounds=1,
                                 gtol=RESAMPLE_GTOL)
        thetas.append(result.theta if np.all(np.isfinite(result.theta)) else None)
    return thetas


def batched_resamples(runs: Runs, objective: Objective, starts: Sequence[np.ndarray],
                      draws: Sequence[np.ndarray]) -> list[Optional[np.ndarray]]:
    """Refine every resample at once: resample i weights run j by the times it was drawn."""
    log_N, log_D, log_loss = np.log(runs.N), np.log(runs.D), np.log(runs.loss)
    counts = np.array([np.bincount(index, minlength=len(runs)) for index in draws], dtype=float)
    thetas: list[Optional[np.ndarray]] = []
    for low in range(0, len(draws), BATCH_CHUNK):
        chunk = counts[low:low + BATCH_CHUNK]
        best_value = np.full(len(chunk), np.inf)
        best_theta = np.full((len(chunk), 5), np.nan)
        for start in starts:
            result = refine_batch(np.tile(start, (len(chunk), 1)), log_N, log_D, log_loss, chunk, objective)
            better = result.objective < best_value
            best_value[better], best_theta[better] = result.objective[better], result.theta[better]
        thetas.extend(theta if np.all(np.isfinite(theta)) else None for theta in best_theta)
    return thetas


def warm_starts(fit: FitResult, limit: int = MAX_WARM_STARTS) -> list[np.ndarray]:
    """The full fit's distinct local optima, best first."""
    starts: list[np.ndarray] = []
    for optimum in fit.optima:
        if all(np.max(np.abs(optimum.theta - s)) > 1e-4 for s in starts):
            starts.append(optimum.theta)
        if len(starts) == limit:
            break
    return starts


def bootstrap(runs: Runs, fit: FitResult, n_resamples: int, budget: float,
              objective: Objective = Objective(), confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
              workers: Optional[int] = None, method: str = "batched") -> BootstrapResult:
    """Refit `n_resamples` resamples of `runs`, warm-started from `fit`'s optima: all at once in this
    process (`batched`), or one scipy fit each in `workers` spawned processes (`refit`; 1: here)."""
    if n_resamples < 2:
        raise UserError(f"--bootstrap needs at least 2 resamples, got {n_resamples}")
    if not 0 < confidence < 1:
        raise UserError(f"confidence must lie between 0 and 1, got {confidence}")
    if method not in METHODS:
        raise UserError(f"unknown bootstrap method '{method}': choose one of {', '.join(METHODS)}")
    draws = resample_indices(len(runs), n_resamples, seed)
    starts = warm_starts(fit)
    if method == "batched":
        return result_from_thetas(batched_resamples(runs, objective, starts, draws), budget, confidence, n_resamples)
    workers = max(1, min(workers or os.cpu_count() or 1, n_resamples))
    if workers == 1:
        thetas = fit_resamples(runs.N, runs.D, runs.loss, objective, starts, draws)
    else:
        # A few chunks per worker: amortises the cost of shipping arrays and keeps the pool busy.
        chunks = [draws[i::workers * 2] for i in range(workers * 2)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(fit_resamples, runs.N, runs.D, runs.loss, objective, starts, chunk)
                       for chunk in chunks if chunk]
            thetas = [theta for future in futures for theta in future.result()]
    return result_from_thetas(thetas, budget, confidence, n_resamples)


def result_from_thetas(thetas: Sequence[Optional[np.ndarray]], budget: float, confidence: float,
                       n_resamples: int) -> BootstrapResult:
    """The resampled laws' parameters and their allocations at `budget` (None: a resample not fitted)."""
    # A resample that drives a coefficient to 0 or infinity (log A beyond float range) has no law.
    laws = [law for law in (law_from_theta(theta) for theta in thetas if theta is not None)
            if all(np.isfinite(v) and v > 0 for v in law.params().values())]
    if len(laws) < 2:
        raise UserError("bootstrap: fewer than 2 resamples could be fitted")
    params = np.array([[getattr(law, name) for name in PARAM_NAMES] for law in laws])
    allocations = np.array([law.optimal_allocation(budget) for law in laws])
    losses = np.array([law.predict(n, d) for law, (n, d) in zip(laws, allocations)])
    return BootstrapResult(params=params, N_opt=allocations[:, 0], D_opt=allocations[:, 1], loss_opt=losses,
                           budget=float(budget), confidence=confidence, requested=n_resamples)

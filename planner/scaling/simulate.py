"""Replay the scaling loop against a known law with noisy losses, to check that a seed range, a
grid and an objective recover the law (and allocate well) before spending real compute."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from planner.errors import UserError
from planner.scaling.fit import fit_law
from planner.scaling.grid import DEFAULT_SLICES, Grid, default_grid
from planner.scaling.law import FLOPS_PER_PARAM_TOKEN, PARAM_NAMES, ScalingLaw
from planner.scaling.objectives import Objective
from planner.scaling.runs import Runs

if TYPE_CHECKING:   # ladder imports this module: at run time it is imported where used
    from planner.scaling.ladder import Design

# Seed runs spread tokens per parameter around the compute-optimal ~20 (Hoffmann et al. 2022), wide
# enough on both sides that N and D vary independently (the chinchilla library's N_to_D seed range).
SEED_TOKENS_PER_PARAM = (4.0, 100.0)


@dataclass(frozen=True)
class SimulationStep:
    iteration: int
    n_runs: int
    fitted: ScalingLaw
    C: float                 # budget of the run this fit plans
    N: float
    D: float
    N_true: float            # the true law's optimum at C
    D_true: float
    loss_excess: float       # true loss at (N, D) minus the true optimum's loss at C

    def relative_errors(self, truth: ScalingLaw) -> dict[str, float]:
        fitted, true = self.fitted.params(), truth.params()
        errors = {name: fitted[name] / true[name] - 1.0 for name in PARAM_NAMES}
        errors.update(N_opt=self.N / self.N_true - 1.0, D_opt=self.D / self.D_true - 1.0)
        return errors

    def to_json(self, truth: ScalingLaw) -> dict:
        return {"iteration": self.iteration, "runs": self.n_runs, "params": self.fitted.params(), "C": self.C,
                "N": self.N, "D": self.D, "N_true": self.N_true, "D_true": self.D_true,
                "loss_excess": self.loss_excess, "relative_errors": self.relative_errors(truth)}


def observe(truth: ScalingLaw, N: np.ndarray, D: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Final losses as a training run would report them: the true law times log-normal noise."""
    return truth.predict(N, D) * np.exp(rng.normal(0.0, noise, np.shape(N)))


def seed_runs(truth: ScalingLaw, flops_range: tuple[float, float], count: int, noise: float,
              rng: np.random.Generator) -> Runs:
    """`count` runs with compute log-uniform in `flops_range` and tokens/param log-uniform in
    SEED_TOKENS_PER_PARAM."""
    low, high = flops_range
    if not 0 < low <= high:
        raise UserError(f"--seed-flops needs 0 < low <= high, got {low:g} {high:g}")
    if count < 5:
        raise UserError(f"--seeds must be at least 5 (the law has 5 parameters), got {count}")
    C = np.exp(rng.uniform(np.log(low), np.log(high), count))
    ratio = np.exp(rng.uniform(*np.log(SEED_TOKENS_PER_PARAM), count))
    N = np.sqrt(C / (FLOPS_PER_PARAM_TOKEN * ratio))
    D = ratio * N
    return Runs(N=N, D=D, loss=observe(truth, N, D, noise, rng), source="simulated seeds")


def design_for_range(kind: str, flops_range: tuple[float, float], count: int, slices: int = 4,
                     span: tuple[float, float] = (1.0, 400.0)) -> tuple["Design", float]:
    """The ladder design `kind` over `flops_range` with `count` runs, and the total compute it spends:
    what log-uniform placement spends on average, so that designs compare at equal compute."""
    from planner.scaling.ladder import LOGUNIFORM_TOKENS_PER_PARAM, Design

    low, high = flops_range
    if not 0 < low <= high:
        raise UserError(f"--seed-flops needs 0 < low <= high, got {low:g} {high:g}")
    mean = (high - low) / np.log(high / low) if high > low else low
    if kind == "loguniform":
        return Design("loguniform", count, 1, high / low, LOGUNIFORM_TOKENS_PER_PARAM), count * mean
    return Design(kind, count, slices, high / low, span), count * mean


def designed_seed_runs(truth: ScalingLaw, design: "Design", total_flops: float, noise: float,
                       rng: np.random.Generator) -> Runs:
    from planner.scaling.ladder import place

    placement = place(design, total_flops, rng)
    return Runs(N=placement.N, D=placement.D, loss=observe(truth, placement.N, placement.D, noise, rng),
                source=f"simulated {design.kind} seeds")


def simulate(truth: ScalingLaw, flops_range: tuple[float, float], seeds: int = 20, noise: float = 0.01,
             iterations: int = 5, scaling_factor: float = 2.0, objective: Objective = Objective(),
             slices: int = DEFAULT_SLICES, grid: Optional[Grid] = None, seed: int = 0,
             design: str = "loguniform", design_slices: int = 4) -> list[SimulationStep]:
    """Seed (log-uniform as `seed_runs`, or a ladder design), then `iterations` times: fit, allocate
    `scaling_factor` x the largest compute, 'train' that run against the true law, and add it."""
    if iterations < 1:
        raise UserError(f"--iterations must be at least 1, got {iterations}")
    if not scaling_factor > 0 or not noise >= 0:
        raise UserError("--scaling-factor must be positive and --noise non-negative")
    rng = np.random.default_rng(seed)
    if design == "loguniform":
        runs = seed_runs(truth, flops_range, seeds, noise, rng)
    else:
        if seeds < 5:
            raise UserError(f"--seeds must be at least 5 (the law has 5 parameters), got {seeds}")
        chosen, total = design_for_range(design, flops_range, seeds, design_slices)
        runs = designed_seed_runs(truth, chosen, total, noise, rng)
    steps = []
    for iteration in range(1, iterations + 1):
        fit = fit_law(runs, objective, grid=grid if grid is not None else default_grid(runs, slices))
        C = scaling_factor * float(runs.C.max())
        N, D = fit.law.optimal_allocation(C)
        N_true, D_true = truth.optimal_allocation(C)
        excess = float(truth.predict(N, D) - truth.predict(N_true, D_true))
        steps.append(SimulationStep(iteration, len(runs), fit.law, C, N, D, N_true, D_true, excess))
        loss = observe(truth, np.array([N]), np.array([D]), noise, rng)
        runs = Runs(N=np.append(runs.N, N), D=np.append(runs.D, D), loss=np.append(runs.loss, loss), source=runs.source)
    return steps

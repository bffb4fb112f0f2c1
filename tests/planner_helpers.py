"""Synthetic runs from a known law, shared by the scaling-law planner tests."""
from __future__ import annotations

import numpy as np

from planner.scaling.law import ScalingLaw
from planner.scaling.runs import Runs

# A law in the range published fits occupy (Hoffmann et al. 2022 Approach 3, rounded).
TRUTH = ScalingLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def synthetic_runs(rng: np.random.Generator, count: int = 40, noise: float = 0.01, truth: ScalingLaw = TRUTH,
                   flops: tuple[float, float] = (1e17, 1e20), tokens_per_param: tuple[float, float] = (2.0, 200.0)
                   ) -> Runs:
    """Runs with log-uniform compute and tokens/param, losses from `truth` times log-normal noise."""
    C = np.exp(rng.uniform(*np.log(flops), count))
    ratio = np.exp(rng.uniform(*np.log(tokens_per_param), count))
    N = np.sqrt(C / (6 * ratio))
    D = ratio * N
    return Runs(N=N, D=D, loss=truth.predict(N, D) * np.exp(rng.normal(0, noise, count)))

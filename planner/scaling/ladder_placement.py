"""Where a seed-run ladder's runs go: a design (IsoFLOP slices, or log-uniform random placement)
and its runs' N, D and budget at a total compute, within the bounds of the smallest model that can
be built and the shortest run worth training. `ladder.py` chooses among designs by simulation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from planner.errors import UserError
from planner.scaling.law import FLOPS_PER_PARAM_TOKEN
from planner.scaling.runs import MIN_RUNS

DESIGNS = ("isoflop", "loguniform")
LOGUNIFORM_TOKENS_PER_PARAM = (4.0, 100.0)    # simulate's seed range, the chinchilla library's N_to_D range
LOGUNIFORM_SPREAD = 100.0                     # simulate's default seed range: 1e17 .. 1e19


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

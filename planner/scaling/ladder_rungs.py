"""A seed-run ladder's rungs for a base model: the best design placed within the smallest model that
can be built and the shortest run worth training, each rung shaped to a buildable model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from planner.errors import UserError
from planner.model_spec import ModelSpec, count_params
from planner.scaling.ladder import LadderDesign, design_ladder, place
from planner.scaling.ladder_placement import Placement
from planner.scaling.law import ScalingLaw
from planner.scaling.shape import Shape, shape_for_params

MIN_LADDER_STEPS = 100       # a shorter run is mostly warmup: its loss says more about the schedule than N, D
LADDER_WIDTH_STEP = 32       # one 32-wide head per 32: the shaper's tiny models, for CPU ladders
SHAPE_TOLERANCE = 0.25       # a rung's size may miss its target: its tokens keep the budget exact


def rung_shape(N: float, model: ModelSpec) -> Shape:
    """A model of about N parameters in the base model's family (a rung, or the ladder's next run)."""
    return shape_for_params(N, model.arch, model.vocab_size, model.seq_len, model.tie_embeddings, model.bias,
                            tolerance=SHAPE_TOLERANCE, width_step=LADDER_WIDTH_STEP)


def smallest_params(model: ModelSpec) -> float:
    """Parameters of the smallest model the shaper builds in the base model's family."""
    smallest = ModelSpec(arch=model.arch, n_layers=1, d_model=LADDER_WIDTH_STEP, n_heads=1, vocab_size=model.vocab_size,
                         seq_len=model.seq_len, n_kv_heads=1 if model.arch == "llama" else None,
                         tie_embeddings=model.tie_embeddings, bias=model.bias)
    return float(count_params(smallest))


@dataclass(frozen=True)
class RungPlan:
    """The chosen design, its runs' placement, each rung's shape and µP's base width (None: no µP)."""

    chosen: LadderDesign
    placement: Placement
    shapes: list[Shape]
    base_width: Optional[int]

    @property
    def budgets(self) -> np.ndarray:
        return 6.0 * self.placement.N * self.placement.D


def plan_rungs(prior: ScalingLaw, total: float, runs: int, noise: float, target_flops: Optional[float],
               model: ModelSpec, global_batch: int, mup: bool) -> RungPlan:
    """The ladder of `runs` runs spending `total` FLOPs that best pins N_opt at the target, each run
    at least MIN_LADDER_STEPS steps of `global_batch` sequences."""
    min_params = smallest_params(model)
    # The cheapest run must train at least MIN_LADDER_STEPS steps of the base batch (kept at that length).
    min_tokens = MIN_LADDER_STEPS * global_batch * model.seq_len
    if total < 6.0 * min_params * min_tokens * runs:
        raise UserError(f"a budget of {total:.3g} FLOPs is too small for {runs} runs: one run of the smallest "
                        f"model ({min_params:,.0f} params, {min_tokens:,} tokens) costs "
                        f"{6.0 * min_params * min_tokens:.3g} FLOPs; raise the budget or lower --runs")
    # The shaper may build a rung up to SHAPE_TOLERANCE larger than placed, and its tokens shrink to keep
    # the budget: place with that margin so every rung still trains MIN_LADDER_STEPS steps.
    placed_tokens = min_tokens * (1.0 + SHAPE_TOLERANCE)
    chosen = design_ladder(prior, total, runs, noise, target_flops, min_params, placed_tokens)
    placement = place(chosen.best.design, total, min_params=min_params, min_tokens=placed_tokens)
    shapes = [rung_shape(N, model) for N in placement.N]
    # µP's base width is the smallest rung's: the learning rate tuned (or set) there holds for the rest.
    base_width = min(shape.spec.d_model for shape in shapes) if mup else None
    return RungPlan(chosen=chosen, placement=placement, shapes=shapes, base_width=base_width)

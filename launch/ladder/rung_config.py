"""The training config of one ladder run (a rung, or the next run the fit plans)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from launch.run_configs import ladder_run_config
from planner.scaling.shape import Shape
from trainer.config import Config


def ladder_config(base: str | Path, shape: Shape, tokens: float, name: str, runs_dir: str, seed_offset: int = 0,
                  mup_base_width: Optional[int] = None, lr: Optional[float] = None) -> Config:
    """`ladder_run_config`'s run. The spike guard stays on: a short run's gradient norm rises for real
    as its loss leaves the early plateau, and the guard takes a rise that holds for
    `guards.level_shift_steps` steps as the new level instead of skipping until the run stops."""
    return ladder_run_config(base, shape, tokens, name, runs_dir, seed_offset=seed_offset,
                             mup_base_width=mup_base_width, lr=lr)

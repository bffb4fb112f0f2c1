"""The training config of one ladder run (a rung, or the next run the fit plans)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from launch.run_configs import ladder_run_config
from planner.scaling.shape import Shape
from trainer.config import Config


def ladder_config(base: str | Path, shape: Shape, tokens: float, name: str, runs_dir: str, seed_offset: int = 0,
                  mup_base_width: Optional[int] = None, lr: Optional[float] = None) -> Config:
    """`ladder_run_config`'s run, with the spike guard off (`spike_guard_off`)."""
    return spike_guard_off(ladder_run_config(base, shape, tokens, name, runs_dir, seed_offset=seed_offset,
                                             mup_base_width=mup_base_width, lr=lr))


def spike_guard_off(config: Config) -> Config:
    """A ladder run keeps no checkpoints, so the spike guard cannot roll back: it can only skip steps,
    and a short run's gradient norm rises for real as its loss leaves the early plateau (the guard
    then skipped every later step and stopped 2 of 9 CPU rungs at step ~100). Non-finite steps are
    still skipped; a run that diverges shows in its final loss, which the fit leaves out."""
    tree = config.model_dump(mode="json")
    tree["guards"].update(spike_sigma=0.0)
    return Config.model_validate(tree)

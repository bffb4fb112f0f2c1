"""A ModelSpec for `--params N`: the scaling planner's shaping, with the layout planner's defaults."""
from __future__ import annotations

from planner.errors import UserError
from planner.model_spec import ModelSpec
from planner.shape import shape_for_params


def spec_for_params(n_params: float, arch: str = "llama", seq_len: int = 4096,
                    vocab_size: int = 32000) -> ModelSpec:
    """A model of about `n_params` parameters, shaped by `planner.shape.shape_for_params`."""
    if not (1e6 <= n_params <= 1e13):
        raise UserError(f"--params {n_params:g} is outside 1e6 .. 1e13")
    return shape_for_params(n_params, arch=arch, vocab_size=vocab_size, seq_len=seq_len).spec

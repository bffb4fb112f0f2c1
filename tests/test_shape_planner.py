"""Model shaping: exact counts (the trainer's function) within 5 % of the target, sane proportions."""
from __future__ import annotations

import pytest

from planner.errors import UserError
from planner.model_spec import count_params
from planner.scaling.shape import ASPECT_RANGE, shape_for_params

TARGETS = [3e6, 2.5e7, 1.24e8, 4e8, 1.3e9, 7e9, 3.3e10, 7e10, 4e11]


@pytest.mark.parametrize("arch", ["gpt", "llama"])
@pytest.mark.parametrize("target", TARGETS)
def test_shape_hits_target(arch: str, target: float) -> None:
    # Below ~1e8 parameters a 32-50k vocabulary's embeddings leave no room: use a byte vocabulary there.
    small = target < 1e8
    shape = shape_for_params(target, arch, vocab_size=256 if small else None, seq_len=256 if small else None)
    spec = shape.spec
    assert shape.params == count_params(spec)
    assert abs(shape.params / target - 1) <= 0.05
    assert spec.d_model % 128 == 0 and spec.head_dim in (64, 128)
    assert spec.n_heads * spec.head_dim == spec.d_model
    assert ASPECT_RANGE[0] <= spec.d_model / spec.n_layers <= ASPECT_RANGE[1]
    assert spec.n_heads % spec.kv_heads == 0
    if arch == "llama":
        assert spec.kv_heads <= spec.n_heads and (spec.n_heads < 16 or spec.kv_heads >= 8)
    else:
        assert spec.n_kv_heads is None


def test_large_models_are_wider_than_deep_like_published_ones() -> None:
    small, large = shape_for_params(1.24e8, "gpt"), shape_for_params(7e10, "llama")
    assert small.spec.d_model / small.spec.n_layers < large.spec.d_model / large.spec.n_layers
    assert 64 <= large.spec.d_model / large.spec.n_layers <= 160


def test_small_models_tune_the_ffn_only_when_needed() -> None:
    tiny = shape_for_params(3e6, "gpt", vocab_size=256, seq_len=256)
    assert abs(tiny.relative_error) <= 0.05 and tiny.spec.ffn % 64 == 0
    assert shape_for_params(7e9, "llama").spec.ffn_hidden == 11008    # standard 8h/3 at Llama-2 7B's width


def test_tied_embeddings_are_counted() -> None:
    tied = shape_for_params(1e8, "gpt", tie_embeddings=True)
    assert tied.spec.tie_embeddings and abs(tied.relative_error) <= 0.05


def test_impossible_targets() -> None:
    with pytest.raises(UserError, match="too small"):
        shape_for_params(1e6, "gpt")          # 50k vocabulary embeddings alone exceed it
    with pytest.raises(UserError, match="smaller vocabulary leaves more room"):
        shape_for_params(2.5e7, "gpt")        # embeddings take nearly all of it
    with pytest.raises(UserError, match="unknown architecture"):
        shape_for_params(1e9, "mamba")
    with pytest.raises(UserError, match="positive"):
        shape_for_params(-5, "gpt")

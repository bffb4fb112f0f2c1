"""A ModelSpec for `--params N`: the scaling planner's shaping when present, else a small fallback."""
from __future__ import annotations

import math

from planner.errors import UserError
from planner.model_spec import ModelSpec, count_params

HEAD_DIM = 128
TARGET_ASPECT = 110.0     # d_model / n_layers of Llama 2 7B (128) and 70B (102)


def fallback_shape(n_params: float, arch: str = "llama", seq_len: int = 4096,
                   vocab_size: int = 32000) -> ModelSpec:
    """Width a multiple of 128 (of 1024 from 1024 on) with 128-wide heads, depth near d_model / 110
    (a multiple of 4 from 16 layers on), grouped-query
    attention (8 KV heads) from 30B on; the candidate whose exact count is closest to N wins, with
    a small pull towards the target aspect ratio."""
    best, best_score = None, math.inf
    for d_model in range(256, 32769, 128):
        if d_model >= 1024 and d_model % 1024:
            continue   # 8 | heads, so every TP size within a node divides them
        layers_guess = d_model / TARGET_ASPECT
        for n_layers in {max(1, int(layers_guess * f)) for f in (0.6, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5)}:
            if n_layers >= 16:
                n_layers -= n_layers % 4   # so pipeline stages of 2 and 4 divide the layers
            heads = max(1, d_model // HEAD_DIM)
            kv = 8 if n_params >= 30e9 and heads % 8 == 0 else None
            spec = ModelSpec(arch=arch, n_layers=n_layers, d_model=d_model, n_heads=heads,
                             n_kv_heads=kv, vocab_size=vocab_size, seq_len=seq_len)
            score = abs(math.log(count_params(spec) / n_params)) + 0.05 * abs(
                math.log(d_model / n_layers / TARGET_ASPECT))
            if score < best_score:
                best, best_score = spec, score
    return best


def spec_for_params(n_params: float, arch: str = "llama", seq_len: int = 4096,
                    vocab_size: int = 32000) -> ModelSpec:
    """A model of about `n_params` parameters: `planner.shape.shape_for_params` (the scaling
    planner's shaping) with KV heads made TP-friendly, or `fallback_shape` where that is absent."""
    if not (1e6 <= n_params <= 1e13):
        raise UserError(f"--params {n_params:g} is outside 1e6 .. 1e13")
    try:
        from planner.shape import shape_for_params  # the scaling planner's shaping, when present
    except ImportError:
        return fallback_shape(n_params, arch, seq_len, vocab_size)
    shaped = shape_for_params(n_params, arch=arch, vocab_size=vocab_size, seq_len=seq_len)
    return tp_friendly_kv_heads(getattr(shaped, "spec", shaped))


def tp_friendly_kv_heads(spec: ModelSpec, node: int = 8) -> ModelSpec:
    """Round grouped-query KV heads down to a multiple of `node` that divides the heads (72 heads,
    9 KV heads -> 8), so tensor parallelism up to a whole node can split them; otherwise TP would
    be stuck at 1 or 3 for the whole search. Changes the count by 2·d·head_dim per layer per head."""
    from dataclasses import replace

    kv = spec.n_kv_heads
    if not kv or kv % node == 0 or kv == spec.n_heads:
        return spec
    options = [k for k in range(node, kv + 1, node) if spec.n_heads % k == 0]
    return replace(spec, n_kv_heads=max(options)) if options else spec

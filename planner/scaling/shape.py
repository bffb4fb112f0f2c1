"""Turn a target parameter count into a concrete GPT- or Llama-style shape.

Widths are multiples of 128 (tensor-core and TP friendly); heads are 64 wide for small GPT models
and 128 wide otherwise; depth follows from the width so that d_model / n_layers stays in the band
good models use. Every candidate is counted with `planner.model_spec.count_params`, the function a
test holds equal to the trainer's built model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Optional

from planner.errors import UserError
from planner.model_spec import ModelSpec, count_params, default_ffn_hidden, embedding_params

WIDTH_STEP = 128
MAX_WIDTH = 65536
DEFAULT_TOLERANCE = 0.05
# d_model / n_layers: Kaplan et al. 2020 (Fig. 5) find loss nearly flat for ratios ~20-200; published
# models sit at 43-85 when small (GPT-2 124M 64, Pythia-410M 43) and ~100-128 when large (Llama-2 7B 128,
# Chinchilla 70B 102). We prefer 64 up to 1e8 parameters, 128 from 1e10, log-interpolated between.
ASPECT_RANGE = (16.0, 256.0)
ASPECT_SMALL, ASPECT_LARGE = 64.0, 128.0
SMALL_MODEL, LARGE_MODEL = 1e8, 1e10
PARAM_ERROR_WEIGHT = 10.0     # 1 % parameter error costs as much as a ~10 % aspect-ratio deviation
FFN_STEP = 64                 # tuned FFN widths stay multiples of 64
FFN_RANGE = (0.5, 2.0)        # ... and within this factor of the standard width
FFN_PENALTY = 2.0             # a 10 % FFN deviation costs as much as a ~20 % aspect-ratio deviation
DEFAULT_VOCAB = {"gpt": 50304, "llama": 32000}    # GPT-2's 50257 padded to a multiple of 64; Llama-2
DEFAULT_SEQ_LEN = {"gpt": 2048, "llama": 4096}


@dataclass(frozen=True)
class Shape:
    spec: ModelSpec
    params: int
    target: float

    @property
    def relative_error(self) -> float:
        return self.params / self.target - 1.0

    def to_json(self) -> dict:
        out = asdict(self.spec)
        out["n_kv_heads"] = self.spec.kv_heads
        out["ffn_hidden"] = self.spec.ffn
        out.update(head_dim=self.spec.head_dim, params=self.params,
                   params_error=round(self.relative_error, 6))
        return out

    def describe(self) -> str:
        s = self.spec
        return (f"{s.arch}: {s.n_layers} layers, d_model {s.d_model}, {s.n_heads} heads "
                f"(head dim {s.head_dim}, {s.kv_heads} KV), FFN {s.ffn}, vocab {s.vocab_size}, "
                f"seq {s.seq_len} -> {self.params:,} params ({100 * self.relative_error:+.2f} % of target)")


def preferred_aspect(target: float) -> float:
    if target <= SMALL_MODEL:
        return ASPECT_SMALL
    if target >= LARGE_MODEL:
        return ASPECT_LARGE
    share = math.log(target / SMALL_MODEL) / math.log(LARGE_MODEL / SMALL_MODEL)
    return ASPECT_SMALL * (ASPECT_LARGE / ASPECT_SMALL) ** share


def head_dim_for(arch: str, d_model: int) -> int:
    """GPT-2/3 use 64-wide heads (GPT-3 175B: 128); Llama models use 128 from 1024 wide up."""
    threshold = 2048 if arch == "gpt" else 1024
    return 64 if d_model < threshold else 128


def heads_divide_nicely(n_heads: int) -> bool:
    """16+ heads in multiples of 8 (12 allowed below), so tensor-parallel degrees 2, 4, 8 divide them."""
    return n_heads <= 8 or (n_heads < 16 and n_heads % 4 == 0) or n_heads % 8 == 0


def kv_heads_for(arch: str, n_heads: int) -> Optional[int]:
    """Llama: grouped-query attention with 8 KV heads from 16 heads up (Llama 3 8B: 32/8, 70B: 64/8,
    405B: 128/8), so tensor parallelism across a whole 8-GPU node splits them; GPT: plain multi-head
    attention (None)."""
    if arch != "llama":
        return None
    return 8 if n_heads >= 16 else n_heads


def _candidate(arch: str, d_model: int, n_layers: int, vocab_size: int, seq_len: int,
               tie_embeddings: bool, bias: bool, ffn_hidden: Optional[int] = None,
               max_head_dim: Optional[int] = None) -> ModelSpec:
    n_heads = d_model // min(head_dim_for(arch, d_model), max_head_dim or d_model)
    return ModelSpec(arch=arch, n_layers=n_layers, d_model=d_model, n_heads=n_heads, vocab_size=vocab_size,
                     seq_len=seq_len, n_kv_heads=kv_heads_for(arch, n_heads),
                     ffn_hidden=ffn_hidden or default_ffn_hidden(arch, d_model), tie_embeddings=tie_embeddings,
                     bias=bias)


def _tuned_ffn(spec: ModelSpec, target: float) -> Optional[int]:
    """The FFN width (a multiple of FFN_STEP, within FFN_RANGE of the default) that brings the count
    closest to `target`; the count is linear in the FFN width, so two evaluations solve it."""
    default = default_ffn_hidden(spec.arch, spec.d_model)
    at_default = count_params(spec)
    per_unit = count_params(replace(spec, ffn_hidden=default + 1)) - at_default
    width = default + (target - at_default) / per_unit
    width = FFN_STEP * round(width / FFN_STEP)
    if not FFN_RANGE[0] * default <= width <= FFN_RANGE[1] * default or width == default:
        return None
    return int(width)


def shape_for_params(target: float, arch: str = "gpt", vocab_size: Optional[int] = None,
                     seq_len: Optional[int] = None, tie_embeddings: bool = False, bias: bool = False,
                     tolerance: float = DEFAULT_TOLERANCE, width_step: int = WIDTH_STEP) -> Shape:
    """The shape whose exact parameter count is within `tolerance` of `target` and whose
    depth/width ratio is closest to the preferred one.

    Candidates per width: the depths either side of the target with the standard FFN (4h, or 8h/3
    for SwiGLU). Only if none fits (small models, where one layer is a big step) are the FFN widths
    tuned, penalised by how far they stray from the standard. `width_step` below 128 (one 64-wide
    head per 64) admits the tiny models of a CPU seed ladder; below 64 the heads are `width_step` wide
    (32: one 32-wide head per 32), for the smallest ones."""
    if arch not in DEFAULT_VOCAB:
        raise UserError(f"unknown architecture '{arch}': choose gpt or llama")
    if not math.isfinite(target) or target <= 0:
        raise UserError(f"target parameter count must be positive, got {target}")
    vocab_size = vocab_size or DEFAULT_VOCAB[arch]
    seq_len = seq_len or DEFAULT_SEQ_LEN[arch]
    aspect_goal = preferred_aspect(target)
    head_cap = width_step if width_step < 64 else None
    best: Optional[tuple[float, Shape]] = None

    def consider(spec: ModelSpec, penalty: float = 0.0) -> None:
        nonlocal best
        aspect = spec.d_model / spec.n_layers
        if not ASPECT_RANGE[0] <= aspect <= ASPECT_RANGE[1] or not heads_divide_nicely(spec.n_heads):
            return
        shape = Shape(spec=spec, params=count_params(spec), target=target)
        if abs(shape.relative_error) > tolerance:
            return
        score = abs(math.log(aspect / aspect_goal)) + PARAM_ERROR_WEIGHT * abs(shape.relative_error) + penalty
        if best is None or score < best[0]:
            best = (score, shape)

    for tune_ffn in (False, True):     # the standard FFN whenever some shape fits with it
        for d_model in range(width_step, MAX_WIDTH + 1, width_step):
            one_layer = count_params(_candidate(arch, d_model, 1, vocab_size, seq_len, tie_embeddings, bias,
                                                max_head_dim=head_cap))
            per_layer = count_params(_candidate(arch, d_model, 2, vocab_size, seq_len, tie_embeddings,
                                                bias, max_head_dim=head_cap)) - one_layer
            fixed = one_layer - per_layer
            if fixed > target * (1 + tolerance):
                break     # wider only adds embedding parameters
            ideal_layers = (target - fixed) / per_layer
            # Deep models get even depths (multiples of 4 from 48 layers) so pipeline stages divide them.
            step = 4 if ideal_layers >= 48 else 2 if ideal_layers >= 16 else 1
            depths = {max(1, step * math.floor(ideal_layers / step)), max(1, step * math.ceil(ideal_layers / step))}
            if not tune_ffn:
                for n_layers in depths:
                    consider(_candidate(arch, d_model, n_layers, vocab_size, seq_len, tie_embeddings, bias,
                                        max_head_dim=head_cap))
                continue
            for n_layers in depths | {max(1, round(d_model / aspect_goal))}:
                spec = _candidate(arch, d_model, n_layers, vocab_size, seq_len, tie_embeddings, bias,
                                  max_head_dim=head_cap)
                ffn = _tuned_ffn(spec, target)
                if ffn is not None:
                    consider(replace(spec, ffn_hidden=ffn), FFN_PENALTY * abs(math.log(ffn / spec.ffn)))
        if best is not None:
            break
    if best is None:
        smallest = _candidate(arch, width_step, 1, vocab_size, seq_len, tie_embeddings, bias,
                              max_head_dim=head_cap)
        if count_params(smallest) > target * (1 + tolerance):
            raise UserError(f"target of {target:.3g} parameters is too small for a {arch} model with vocab "
                            f"{vocab_size}: its embeddings alone hold {embedding_params(smallest):,}")
        raise UserError(f"no {arch} shape within {100 * tolerance:.0f} % of {target:.3g} parameters with vocab "
                        f"{vocab_size} and a sane depth/width ratio; a smaller vocabulary leaves more room")
    return best[1]


def spec_for_params(n_params: float, arch: str = "llama", seq_len: int = 4096,
                    vocab_size: int = 32000) -> ModelSpec:
    """A model of about `n_params` parameters, shaped by `shape_for_params`."""
    if not (1e6 <= n_params <= 1e13):
        raise UserError(f"--params {n_params:g} is outside 1e6 .. 1e13")
    return shape_for_params(n_params, arch=arch, vocab_size=vocab_size, seq_len=seq_len).spec

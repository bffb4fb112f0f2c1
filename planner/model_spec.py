"""Parameter and FLOP counts of the decoder-only transformer, from its description alone.

The trainer builds its model from the same fields and a test holds `count_params` equal to
`sum(p.numel())` of the built module, so the planner and the trainer can never disagree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

Arch = Literal["gpt", "llama"]


def default_ffn_hidden(arch: str, d_model: int) -> int:
    """GPT: 4h. Llama: 2/3 of 4h for the three SwiGLU matrices, rounded up to a multiple of 256."""
    if arch == "gpt":
        return 4 * d_model
    return 256 * -(-int(8 * d_model / 3) // 256)


@dataclass(frozen=True)
class ModelSpec:
    """What determines a model's size and cost. Field names match the trainer's `model` config."""

    arch: Arch
    n_layers: int
    d_model: int
    n_heads: int
    vocab_size: int
    seq_len: int
    n_kv_heads: Optional[int] = None
    ffn_hidden: Optional[int] = None
    tie_embeddings: bool = False
    bias: bool = False
    qk_norm: bool = False

    @classmethod
    def from_config(cls, cfg: object) -> "ModelSpec":
        """Any object with the same attribute names (the trainer's pydantic model config)."""
        return cls(**{name: getattr(cfg, name) for name in cls.__dataclass_fields__})

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn(self) -> int:
        return self.ffn_hidden or default_ffn_hidden(self.arch, self.d_model)


def layer_matmul_params(spec: ModelSpec) -> int:
    """Weights of one block's matrix multiplies: Q, K, V, O and the MLP."""
    d, kv_dim = spec.d_model, spec.kv_heads * spec.head_dim
    attention = d * d + 2 * d * kv_dim + d * d
    mlp_matrices = 3 if spec.arch == "llama" else 2
    return attention + mlp_matrices * d * spec.ffn


def layer_params(spec: ModelSpec) -> int:
    """All parameters of one block: matrices, norms and (optional) biases."""
    d, kv_dim, f = spec.d_model, spec.kv_heads * spec.head_dim, spec.ffn
    norms = 2 * d * (2 if spec.bias and spec.arch == "gpt" else 1) + (2 * spec.head_dim if spec.qk_norm else 0)
    biases = 0
    if spec.bias:
        biases = (d + 2 * kv_dim + d) + ((2 * f + d) if spec.arch == "llama" else (f + d))
    return layer_matmul_params(spec) + norms + biases


def embedding_params(spec: ModelSpec) -> int:
    """Token embedding, learned positions (GPT only) and the output head unless tied."""
    d = spec.d_model
    positions = spec.seq_len * d if spec.arch == "gpt" else 0
    head = 0 if spec.tie_embeddings else spec.vocab_size * d
    return spec.vocab_size * d + positions + head


def final_norm_params(spec: ModelSpec) -> int:
    return spec.d_model * (2 if spec.bias and spec.arch == "gpt" else 1)


def count_params(spec: ModelSpec) -> int:
    """Exact parameter count of the model the trainer builds from `spec`."""
    return spec.n_layers * layer_params(spec) + embedding_params(spec) + final_norm_params(spec)


def flops_per_token(spec: ModelSpec) -> float:
    """Training FLOPs per token (forward + backward, no recomputation).

    6 per matmul weight (2 forward, 4 backward) including the output head, plus the attention
    score and value products, 12 · layers · seq_len · d_model (PaLM, Chowdhery et al. 2022, App. B).
    """
    matmul = spec.n_layers * layer_matmul_params(spec) + spec.vocab_size * spec.d_model
    return 6.0 * matmul + 12.0 * spec.n_layers * spec.seq_len * spec.d_model

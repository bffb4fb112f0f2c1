"""The transformer block and its parts: norms, rotary positions, attention and the MLP.

Knows nothing of ranks: tensor parallelism shards these modules from outside by name
(`parallel/tensor.py`), and selective recomputation wraps `attn.core` (`parallel/recompute.py`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.config import ModelConfig


def shared_compute_copy(x: torch.Tensor) -> torch.Tensor:
    """Under autocast, the one 16-bit copy of `x` that all the matmuls reading it share (autocast
    would otherwise cast, and save for backward, a copy per consumer)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return x.to(torch.get_autocast_dtype(device))
    return x


class RMSNorm(nn.Module):
    """Computed in fp32 whatever the activations' dtype (a stability habit: bf16 sums of squares
    lose the small components)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm on the input's own dtype: the kernels accumulate mean and variance in fp32 for
    16-bit inputs, so no fp32 copy of a 16-bit activation is made (or saved for backward)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype), bias, self.eps)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.arch == "llama":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


def rotary_tables(seq_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (T, head_dim/2) for rotary position embeddings (Su et al. 2021)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles_TH = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles_TH.cos(), angles_TH.sin()


def apply_rotary(x_BNTH: torch.Tensor, cos_TH: torch.Tensor, sin_TH: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of each head's features by position-dependent angles."""
    T = x_BNTH.shape[-2]
    cos, sin = cos_TH[:T].to(x_BNTH.dtype), sin_TH[:T].to(x_BNTH.dtype)
    x1, x2 = x_BNTH.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class AttentionCore(nn.Module):
    """softmax(QKᵀ·scale)·V, causal: the part selective recomputation runs again in backward
    (`parallel/recompute.py` wraps this module by name). `scale` None is 1/√d; µP passes 1/d, since
    after training queries and keys are correlated and their dot product grows like d, not √d
    (Yang et al. 2022, §4). A plain float, not a parameter: the module holds none."""

    def __init__(self, scale: float | None = None):
        super().__init__()
        self.scale = scale

    def forward(self, q_BNTH: torch.Tensor, k_BKTH: torch.Tensor, v_BKTH: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q_BNTH, k_BKTH, v_BKTH, is_causal=True, scale=self.scale,
                                              enable_gqa=q_BNTH.shape[1] != k_BKTH.shape[1])


class Attention(nn.Module):
    """Causal self-attention with one fused Q, K, V projection (one matmul, one saved input).

    Its output features are grouped by key/value head: for each KV head, the query heads that share
    it, then its key, then its value (Megatron's layout). A column-parallel split of `wqkv` over
    tensor-parallel ranks then hands each rank whole groups, so the same forward runs on a shard.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.head_dim = cfg.d_model // cfg.n_heads
        self.queries_per_kv = cfg.n_heads // cfg.kv_heads
        qkv_dim = (cfg.n_heads + 2 * cfg.kv_heads) * self.head_dim
        self.wqkv = nn.Linear(cfg.d_model, qkv_dim, bias=cfg.bias)
        self.core = AttentionCore(1.0 / self.head_dim if cfg.mup else None)
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        # QK-norm (Dehghani et al. 2023): bounded attention logits, whatever the weights' growth
        self.q_norm = RMSNorm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x_BTD: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        group = self.queries_per_kv
        # -1: the KV heads on this rank (all of them without tensor parallelism)
        qkv_BTKGH = self.wqkv(x_BTD).view(B, T, -1, group + 2, self.head_dim)
        # one split, not three slices: backward then writes one gradient, not three zero-filled ones
        q, k, v = qkv_BTKGH.split((group, 1, 1), dim=3)
        q, k, v = q.flatten(2, 3).transpose(1, 2), k.squeeze(3).transpose(1, 2), v.squeeze(3).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        out_BNTH = self.core(q, k, v)
        return self.wo(out_BNTH.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """GeLU two-matrix MLP (GPT) or SwiGLU three-matrix MLP (Llama)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gated = cfg.arch == "llama"
        self.w_in = nn.Linear(cfg.d_model, cfg.ffn, bias=cfg.bias)
        self.w_gate = nn.Linear(cfg.d_model, cfg.ffn, bias=cfg.bias) if self.gated else None
        self.w_out = nn.Linear(cfg.ffn, cfg.d_model, bias=cfg.bias)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        x_BTD = shared_compute_copy(x_BTD)
        if self.gated:
            return self.w_out(F.silu(self.w_gate(x_BTD)) * self.w_in(x_BTD))
        return self.w_out(F.gelu(self.w_in(x_BTD), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg)
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x_BTD: torch.Tensor, rope) -> torch.Tensor:
        x_BTD = x_BTD + self.attn(self.attn_norm(x_BTD), rope)
        return x_BTD + self.mlp(self.mlp_norm(x_BTD))

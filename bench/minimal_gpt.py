"""A minimal single-file GPT training loop: the independent reference `train_throughput.py` times
our trainer against.

Written from the papers, not from `trainer/`: it imports nothing of the project, so whatever our
model, step and engine cost shows up beside it. Two families of the same decoder-only shape:

- `gpt`: learned positions, pre-norm LayerNorm blocks, GeLU (tanh) MLP of width `ffn`
  (Radford et al. 2019);
- `llama`: rotary positions (Su et al. 2021), RMSNorm, SwiGLU MLP, grouped-query attention.

Both have one fused Q, K, V projection, causal `F.scaled_dot_product_attention`, a final norm and
a linear head (optionally tied to the token embeddings); float32 weights, plain `torch.optim.AdamW`,
global-norm clipping: the loop a nanoGPT-style script writes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTShape:
    arch: str            # "gpt" or "llama"
    n_layers: int
    d_model: int
    n_heads: int
    kv_heads: int
    ffn: int
    vocab_size: int
    seq_len: int
    bias: bool = False
    tie_embeddings: bool = False
    qk_norm: bool = False
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def norm(shape: GPTShape, dim: int) -> nn.Module:
    if shape.arch == "llama":
        return nn.RMSNorm(dim, eps=shape.norm_eps)
    return nn.LayerNorm(dim, eps=shape.norm_eps, bias=shape.bias)


def rope_angles(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, head_dim): frequency i applies to features i and i + head_dim/2."""
    freqs_H = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles_TH = torch.arange(seq_len, dtype=torch.float32)[:, None] * freqs_H[None, :]
    angles_TH = torch.cat((angles_TH, angles_TH), dim=-1)
    return angles_TH.cos(), angles_TH.sin()


def rotate(x_BNTH: torch.Tensor, cos_TH: torch.Tensor, sin_TH: torch.Tensor) -> torch.Tensor:
    half = x_BNTH.shape[-1] // 2
    rotated = torch.cat((-x_BNTH[..., half:], x_BNTH[..., :half]), dim=-1)
    return x_BNTH * cos_TH + rotated * sin_TH


class SelfAttention(nn.Module):
    def __init__(self, shape: GPTShape):
        super().__init__()
        self.shape = shape
        hd = shape.head_dim
        self.qkv = nn.Linear(shape.d_model, (shape.n_heads + 2 * shape.kv_heads) * hd, bias=shape.bias)
        self.proj = nn.Linear(shape.d_model, shape.d_model, bias=shape.bias)
        self.q_norm = nn.RMSNorm(hd, eps=shape.norm_eps) if shape.qk_norm else None
        self.k_norm = nn.RMSNorm(hd, eps=shape.norm_eps) if shape.qk_norm else None

    def forward(self, x_BTD: torch.Tensor, rope: Optional[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        B, T, D = x_BTD.shape
        s, hd = self.shape, self.shape.head_dim
        q, k, v = self.qkv(x_BTD).split((s.n_heads * hd, s.kv_heads * hd, s.kv_heads * hd), dim=-1)
        q = q.view(B, T, s.n_heads, hd).transpose(1, 2)
        k = k.view(B, T, s.kv_heads, hd).transpose(1, 2)
        v = v.view(B, T, s.kv_heads, hd).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope[0][:T], rope[1][:T]
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=s.kv_heads != s.n_heads)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    def __init__(self, shape: GPTShape):
        super().__init__()
        self.swiglu = shape.arch == "llama"
        self.up = nn.Linear(shape.d_model, shape.ffn, bias=shape.bias)
        self.gate = nn.Linear(shape.d_model, shape.ffn, bias=shape.bias) if self.swiglu else None
        self.down = nn.Linear(shape.ffn, shape.d_model, bias=shape.bias)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            return self.down(F.silu(self.gate(x_BTD)) * self.up(x_BTD))
        return self.down(F.gelu(self.up(x_BTD), approximate="tanh"))


class Layer(nn.Module):
    def __init__(self, shape: GPTShape):
        super().__init__()
        self.norm1, self.attn = norm(shape, shape.d_model), SelfAttention(shape)
        self.norm2, self.ff = norm(shape, shape.d_model), FeedForward(shape)

    def forward(self, x_BTD: torch.Tensor, rope) -> torch.Tensor:
        x_BTD = x_BTD + self.attn(self.norm1(x_BTD), rope)
        return x_BTD + self.ff(self.norm2(x_BTD))


class MinimalGPT(nn.Module):
    def __init__(self, shape: GPTShape):
        super().__init__()
        self.shape = shape
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        self.positions = nn.Embedding(shape.seq_len, shape.d_model) if shape.arch == "gpt" else None
        self.layers = nn.ModuleList(Layer(shape) for _ in range(shape.n_layers))
        self.final_norm = norm(shape, shape.d_model)
        self.head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        if shape.tie_embeddings:
            self.head.weight = self.embed.weight
        if shape.arch == "llama":
            cos, sin = rope_angles(shape.seq_len, shape.head_dim, shape.rope_theta)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)
        self.apply(self._init)
        # GPT-2's scaled init of the projections that write into the residual stream
        for name, param in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("down.weight"):
                nn.init.normal_(param, 0.0, 0.02 / math.sqrt(2 * shape.n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx_BT: torch.Tensor, targets_BT: Optional[torch.Tensor] = None) -> torch.Tensor:
        T = idx_BT.shape[1]
        x = self.embed(idx_BT)
        if self.positions is not None:
            x = x + self.positions.weight[:T]
        rope = (self.cos, self.sin) if self.shape.arch == "llama" else None
        for layer in self.layers:
            x = layer(x, rope)
        logits_BTV = self.head(self.final_norm(x))
        if targets_BT is None:
            return logits_BTV
        return F.cross_entropy(logits_BTV.flatten(0, 1), targets_BT.flatten())


def adamw(model: nn.Module, lr: float, betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.1,
          eps: float = 1e-8) -> torch.optim.AdamW:
    """Weight decay on matrices and embeddings only, torch's default AdamW implementation."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n_micro: int,
               grad_clip: float) -> torch.Tensor:
    """Accumulate over the micro-batches, clip the global norm, step; the mean loss (a tensor)."""
    total = None
    for inputs_BT, targets_BT in micro_batches:
        loss = model(inputs_BT, targets_BT) / n_micro
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total

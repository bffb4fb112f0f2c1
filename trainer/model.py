"""Decoder-only transformer: GPT-style or Llama-style from the same config fields.

Knows nothing of ranks or devices: build it on the meta device, parallelize from outside by module
name, then materialize with `init_weights()`. Parameter count equals `planner.model_spec.count_params`.
A pipeline stage is the same module with the layers it does not run deleted and, away from the
ends, no embeddings (first stage) or final norm and head (last stage): `layers` is a dict keyed by
the layer's index, so every parameter keeps its name in every layout.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.config import ModelConfig
# The block's parts live in blocks.py; all re-exported so `from trainer.model import RMSNorm` keeps working.
from trainer.blocks import (  # noqa: F401
    MLP, Attention, AttentionCore, Block, LayerNorm, RMSNorm, apply_rotary, make_norm, rotary_tables,
    shared_compute_copy,
)


def language_model_loss(logits_BTV: torch.Tensor, targets_BT: torch.Tensor, z_loss: float = 0.0) -> torch.Tensor:
    """Mean next-token cross-entropy in fp32, plus `z_loss` × mean(log Z)² (PaLM, Chowdhery et al.
    2022: keeps the softmax normalizer near 1). Also the pipeline's loss on its last stage."""
    logits_NV = logits_BTV.float().flatten(0, 1)
    loss = F.cross_entropy(logits_NV, targets_BT.reshape(-1))
    if z_loss:
        loss = loss + z_loss * torch.logsumexp(logits_NV, dim=-1).pow(2).mean()
    return loss


def summed_token_loss(logits_BTV: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over the tokens whose target is not -100 (padding): for evaluation,
    where batches are padded to a fixed size."""
    return F.cross_entropy(logits_BTV.float().flatten(0, 1), targets_BT.reshape(-1), ignore_index=-100,
                           reduction="sum")


class TokenPositions:
    """Where the tokens of a forward sit in their sequences: `index` (T,), or None for 0..T−1. Set from
    outside when a rank holds only some of each sequence's tokens (context parallelism). A plain
    object, not a buffer: a pipeline stage is a shallow copy of the model, so all stages share it."""

    def __init__(self) -> None:
        self.index: torch.Tensor | None = None


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.positions = TokenPositions()
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embeddings = nn.Embedding(cfg.seq_len, cfg.d_model) if cfg.arch == "gpt" else None
        self.layers = nn.ModuleDict({str(index): Block(cfg) for index in range(cfg.n_layers)})
        self.norm = make_norm(cfg)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        # µP's output multiplier (Yang et al. 2022, Table 8): the head's init and Adam learning rate stay
        # as tuned at the base width, its logits are scaled by 1/width_mult. A float applied in forward,
        # so tensor parallelism shards nothing new; with tied embeddings it applies to the readout only,
        # as the paper's tied readout (mup's MuSharedReadout) does.
        self.output_mult = 1.0 / cfg.width_mult
        if cfg.arch == "llama":
            # Not parameters: recomputed in init_weights() so a meta-device build materializes them.
            cos, sin = rotary_tables(cfg.seq_len, cfg.d_model // cfg.n_heads, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0, init_std) weights; residual output projections scaled by 1/sqrt(2·layers)
        (GPT-2, Radford et al. 2019) so the residual stream's variance does not grow with depth.
        Under µP the hidden matrices' std is divided by sqrt(width_mult) (variance ∝ 1/fan_in, equal
        to init_std at the base width); embeddings and the head keep init_std."""
        if self.cfg.tie_embeddings and self.output is not None and self.tok_embeddings is not None:
            self.output.weight = self.tok_embeddings.weight   # `to_empty` materializes the two apart
        std = self.cfg.init_std
        hidden_std = std / math.sqrt(self.cfg.width_mult) if self.cfg.mup else std
        residual_std = hidden_std / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_residual_out = name.endswith("attn.wo") or name.endswith("mlp.w_out")
                matrix_std = std if module is self.output else hidden_std
                nn.init.normal_(module.weight, 0.0, residual_std if is_residual_out else matrix_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if self.cfg.arch == "llama":
            cos, sin = rotary_tables(self.cfg.seq_len, self.cfg.d_model // self.cfg.n_heads,
                                     self.cfg.rope_theta, device=self.rope_cos.device)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def forward(self, idx_BT: torch.Tensor, targets_BT: torch.Tensor | None = None,
                z_loss: float = 0.0) -> torch.Tensor:
        """Logits (B, T, V), or the loss (`language_model_loss`) when targets are given. A pipeline
        stage without embeddings takes the previous stage's hidden states (B, T, D) instead of
        token ids, and one without the head returns its hidden states. Tokens sit at `positions.index`
        in their sequences where that is set (this rank's chunks under context parallelism)."""
        positions_T = self.positions.index
        if self.tok_embeddings is not None:
            if positions_T is None:
                positions_T = torch.arange(idx_BT.shape[1], device=idx_BT.device)
            x_BTD = self.tok_embeddings(idx_BT)
            if self.pos_embeddings is not None:
                x_BTD = x_BTD + self.pos_embeddings(positions_T)
        else:
            x_BTD = idx_BT
        rope = None
        if self.cfg.arch == "llama":   # the angles of each token's own position
            rope = ((self.rope_cos, self.rope_sin) if self.positions.index is None
                    else (self.rope_cos[positions_T], self.rope_sin[positions_T]))
        for block in self.layers.values():
            x_BTD = block(x_BTD, rope)
        if self.output is None:
            return x_BTD
        x_BTD = self.norm(x_BTD)
        if self.cfg.mup:   # on the head's input, not its output: the same logits, the smaller tensor
            x_BTD = x_BTD * self.output_mult
        logits_BTV = self.output(x_BTD)
        if targets_BT is None:
            return logits_BTV
        return language_model_loss(logits_BTV, targets_BT, z_loss)

    @torch.no_grad()
    def generate(self, idx_BT: torch.Tensor, new_tokens: int, temperature: float = 0.8,
                 top_k: int = 40, generator: torch.Generator | None = None, pad_multiple: int = 1) -> torch.Tensor:
        """Sample `new_tokens` continuations, cropping the context to the model's sequence length.
        `pad_multiple`: the context is padded on the right to a multiple of it (sequence parallelism
        splits the sequence over the TP ranks); causal attention keeps the padding out of the logits read."""
        for _ in range(new_tokens):
            context = idx_BT[:, -self.cfg.seq_len:]
            length = context.shape[1]
            context = F.pad(context, (0, -length % pad_multiple))
            logits_BTV = self(context)
            if hasattr(logits_BTV, "full_tensor"):   # split by vocabulary under tensor parallelism
                logits_BTV = logits_BTV.full_tensor()
            logits_BV = logits_BTV[:, length - 1, :].float() / temperature
            if top_k:
                kth = torch.topk(logits_BV, min(top_k, logits_BV.shape[-1])).values[:, -1:]
                logits_BV = logits_BV.masked_fill(logits_BV < kth, float("-inf"))
            next_B1 = torch.multinomial(F.softmax(logits_BV, dim=-1), 1, generator=generator)
            idx_BT = torch.cat((idx_BT, next_B1), dim=1)
        return idx_BT

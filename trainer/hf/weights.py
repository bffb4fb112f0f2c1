"""Our parameter names and tensors ↔ `transformers`' (LlamaForCausalLM, GPT2LMHeadModel).

Our attention has one fused Q, K, V projection grouped per key/value head (for each KV head, its
query heads, then its key, then its value: Megatron's layout, see trainer/blocks.py); Hugging Face
keeps q_proj, k_proj and v_proj apart (Llama) or concatenated whole, all queries then all keys then
all values (GPT-2's c_attn). Query head h uses KV head h // group on both sides. Both rotate the
two halves of each head (`rotate_half`), with the same frequencies, so no permutation of the query
and key rows is needed. GPT-2's Conv1D stores weights as (in, out): transposed from nn.Linear.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import torch

from planner.errors import UserError
from trainer.config import ModelConfig

Tensors = dict[str, torch.Tensor]


def split_qkv(wqkv: torch.Tensor, model: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Our fused rows (or bias) -> all query heads, all key heads, all value heads, head-major."""
    group, head_dim = model.n_heads // model.kv_heads, model.d_model // model.n_heads
    grouped = wqkv.reshape(model.kv_heads, group + 2, head_dim, *wqkv.shape[1:])
    q, k, v = grouped.split((group, 1, 1), dim=1)
    return (q.reshape(model.n_heads * head_dim, *wqkv.shape[1:]), k.reshape(-1, *wqkv.shape[1:]),
            v.reshape(-1, *wqkv.shape[1:]))


def join_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, model: ModelConfig) -> torch.Tensor:
    """The inverse of `split_qkv`."""
    group, head_dim = model.n_heads // model.kv_heads, model.d_model // model.n_heads
    rest = q.shape[1:]
    grouped = torch.cat((q.reshape(model.kv_heads, group, head_dim, *rest), k.reshape(model.kv_heads, 1, head_dim, *rest),
                         v.reshape(model.kv_heads, 1, head_dim, *rest)), dim=1)
    return grouped.reshape(-1, *rest)


def _per_layer_names(arch: str) -> dict[str, str]:
    """Our name within a block -> theirs, for the tensors that map one to one (before any transpose)."""
    if arch == "llama":
        return {"attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
                "attn.wo.weight": "self_attn.o_proj.weight", "attn.wo.bias": "self_attn.o_proj.bias",
                "mlp.w_gate.weight": "mlp.gate_proj.weight", "mlp.w_gate.bias": "mlp.gate_proj.bias",
                "mlp.w_in.weight": "mlp.up_proj.weight", "mlp.w_in.bias": "mlp.up_proj.bias",
                "mlp.w_out.weight": "mlp.down_proj.weight", "mlp.w_out.bias": "mlp.down_proj.bias"}
    return {"attn_norm.weight": "ln_1.weight", "attn_norm.bias": "ln_1.bias",
            "mlp_norm.weight": "ln_2.weight", "mlp_norm.bias": "ln_2.bias",
            "attn.wo.weight": "attn.c_proj.weight", "attn.wo.bias": "attn.c_proj.bias",
            "mlp.w_in.weight": "mlp.c_fc.weight", "mlp.w_in.bias": "mlp.c_fc.bias",
            "mlp.w_out.weight": "mlp.c_proj.weight", "mlp.w_out.bias": "mlp.c_proj.bias"}


def _top_names(arch: str) -> dict[str, str]:
    if arch == "llama":
        return {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}
    return {"tok_embeddings.weight": "transformer.wte.weight", "pos_embeddings.weight": "transformer.wpe.weight",
            "norm.weight": "transformer.ln_f.weight", "norm.bias": "transformer.ln_f.bias", "output.weight": "lm_head.weight"}


def _layer_prefix(arch: str, index: int) -> str:
    return f"model.layers.{index}." if arch == "llama" else f"transformer.h.{index}."


def _conv1d(name: str, arch: str) -> bool:
    """GPT-2's Conv1D weights are stored transposed."""
    return arch == "gpt" and name.endswith(".weight") and not name.startswith("ln_")


def to_hf(ours: Mapping[str, torch.Tensor], model: ModelConfig) -> Tensors:
    """Our full state dict -> theirs. µP's multipliers are folded in: the query rows × 1/sqrt(head_dim)
    turn HF's 1/sqrt(d) attention scale into µP's 1/d, the untied head × 1/width_mult (export_refusal
    has refused a tied one). GPT-2 gets zero biases where ours has none, and each KV head repeated."""
    arch, head_dim = model.arch, model.d_model // model.n_heads
    theirs = {hf: ours[name] for name, hf in _top_names(arch).items() if name in ours}
    if model.tie_embeddings:
        theirs.pop("lm_head.weight", None)   # transformers ties it to the embeddings itself
    elif model.mup:
        theirs["lm_head.weight"] = ours["output.weight"] / model.width_mult
    query_scale = 1.0 / math.sqrt(head_dim) if model.mup else 1.0
    for index in range(model.n_layers):
        mine, prefix = f"layers.{index}.", _layer_prefix(arch, index)
        for name, hf in _per_layer_names(arch).items():
            if mine + name in ours:
                theirs[prefix + hf] = ours[mine + name].t() if _conv1d(hf, arch) else ours[mine + name]
        for kind in ("weight", "bias"):
            if mine + f"attn.wqkv.{kind}" not in ours:
                continue
            q, k, v = split_qkv(ours[mine + f"attn.wqkv.{kind}"], model)
            q = q * query_scale if query_scale != 1.0 else q
            if arch == "llama":
                theirs.update({prefix + f"self_attn.{p}_proj.{kind}": t for p, t in zip("qkv", (q, k, v))})
                continue
            group = model.n_heads // model.kv_heads
            k, v = (t.unflatten(0, (model.kv_heads, head_dim)).repeat_interleave(group, 0).flatten(0, 1) for t in (k, v))
            fused = torch.cat((q, k, v))
            theirs[prefix + f"attn.c_attn.{kind}"] = fused.t() if kind == "weight" else fused
    if arch == "gpt" and not model.bias:
        _add_zero_biases(theirs, model)
    return {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in theirs.items()}


def _add_zero_biases(theirs: Tensors, model: ModelConfig) -> None:
    """GPT-2 always has biases: zeros compute exactly what a bias-free layer does."""
    d, width = model.d_model, model.ffn
    shapes = {"ln_1.bias": d, "ln_2.bias": d, "attn.c_attn.bias": 3 * d, "attn.c_proj.bias": d,
              "mlp.c_fc.bias": width, "mlp.c_proj.bias": d}
    for index in range(model.n_layers):
        theirs.update({_layer_prefix("gpt", index) + name: torch.zeros(size) for name, size in shapes.items()})
    theirs["transformer.ln_f.bias"] = torch.zeros(d)


def from_hf(read: Callable[[str], torch.Tensor], names: set[str], model: ModelConfig) -> Tensors:
    """Their tensors (`read(name)` for each of `names`) -> our state dict for `model`, whose shapes
    the caller checks. GPT-2 biases must be zero where our model has none (model.bias=false)."""
    arch, ours = model.arch, {}
    for name, hf in _top_names(arch).items():
        if hf in names and not (name == "output.weight" and model.tie_embeddings):
            ours[name] = read(hf)
    if arch == "gpt" and "pos_embeddings.weight" in ours:   # more learned positions than we use: the first ones
        ours["pos_embeddings.weight"] = ours["pos_embeddings.weight"][:model.seq_len]
    for index in range(model.n_layers):
        mine, prefix = f"layers.{index}.", _layer_prefix(arch, index)
        for name, hf in _per_layer_names(arch).items():
            if prefix + hf in names:
                ours[mine + name] = read(prefix + hf).t() if _conv1d(hf, arch) else read(prefix + hf)
        for kind in ("weight", "bias"):
            if arch == "llama" and prefix + f"self_attn.q_proj.{kind}" in names:
                q, k, v = (read(prefix + f"self_attn.{p}_proj.{kind}") for p in "qkv")
                ours[mine + f"attn.wqkv.{kind}"] = join_qkv(q, k, v, model)
            elif arch == "gpt" and prefix + f"attn.c_attn.{kind}" in names:
                fused = read(prefix + f"attn.c_attn.{kind}")
                q, k, v = (fused.t() if kind == "weight" else fused).chunk(3)
                ours[mine + f"attn.wqkv.{kind}"] = join_qkv(q, k, v, model)
    if arch == "gpt" and not model.bias:
        _drop_zero_biases(ours)
    return ours


def _drop_zero_biases(ours: Tensors) -> None:
    for name in [name for name in ours if name.endswith(".bias")]:
        if ours.pop(name).abs().max() > 0:
            raise UserError(f"the GPT-2 weights have a nonzero {name} but model.bias=false: set model.bias=true")

"""Activation recomputation and compilation, block by block.

`full` wraps every block (Korthikanti et al. 2022's full recomputation: activations of a layer shrink
to its input, at the cost of one more forward). `selective` recomputes only the attention core
(Korthikanti et al. 2022's selective recomputation): the scaled-dot-product attention's outputs and
the statistics it keeps are not saved but recomputed from Q, K and V in backward, which keeps the
projections' and the MLP's activations (the cheap-to-store, costly-to-recompute matmuls).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

# The attention kernels: their outputs are recomputed under `selective`, everything else is saved.
ATTENTION_OPS = {getattr(torch.ops.aten, name).default for name in (
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    if hasattr(torch.ops.aten, name)}


def _recompute_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.PREFER_RECOMPUTE if op in ATTENTION_OPS else CheckpointPolicy.MUST_SAVE


def _selective_contexts():
    return create_selective_checkpoint_contexts(_recompute_attention)


def apply_recompute(model: nn.Module, blocks: str, mode: str) -> nn.Module:
    """Wrap each block of `model.<blocks>` for recomputation: `full` or `selective`."""
    if mode == "none":
        return model
    if mode not in ("full", "selective"):
        raise ValueError(f"recompute={mode} is not available (none, selective or full)")
    options = {} if mode == "full" else {"context_fn": _selective_contexts}
    layers = model.get_submodule(blocks)
    for name, block in layers.items():
        # Non-reentrant checkpointing: works with FSDP2's hooks and keyword arguments.
        layers[name] = checkpoint_wrapper(block, preserve_rng_state=False, **options)
    return model


def apply_compile(model: nn.Module, blocks: str) -> nn.Module:
    """torch.compile each block on its own: one compiled graph reused by every layer, and FSDP's
    per-block hooks stay outside the graphs."""
    layers = model.get_submodule(blocks)
    for name, block in layers.items():
        layers[name] = torch.compile(block, fullgraph=False)
    return model

"""Activation recomputation and compilation, block by block.

`full` wraps every block (Korthikanti et al. 2022's full recomputation: activations of a layer shrink
to its input, at the cost of one more forward). `selective` wraps only each block's attention core,
softmax(QKᵀ)·V (Korthikanti et al. 2022's selective recomputation): its working set is rebuilt from
Q, K and V in backward while the projections' and the MLP's activations stay saved. With a fused
attention kernel that keeps no s×s scores it saves little, which is what the planner predicts.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

ATTENTION_CORE = "attn.core"   # the trainer's AttentionCore inside each block


def apply_recompute(model: nn.Module, blocks: str, mode: str) -> nn.Module:
    """Wrap each block of `model.<blocks>` (`full`), or each block's attention core (`selective`),
    for recomputation in backward."""
    if mode == "none":
        return model
    if mode not in ("full", "selective"):
        raise ValueError(f"recompute={mode} is not available (none, selective or full)")
    layers = model.get_submodule(blocks)
    for name, block in layers.items():
        # Non-reentrant checkpointing: works with FSDP2's hooks and keyword arguments.
        if mode == "full":
            layers[name] = checkpoint_wrapper(block, preserve_rng_state=False)
        else:
            parent_name, _, child = ATTENTION_CORE.rpartition(".")
            parent = block.get_submodule(parent_name)
            setattr(parent, child, checkpoint_wrapper(getattr(parent, child), preserve_rng_state=False))
    return model


def apply_compile(model: nn.Module, blocks: str) -> nn.Module:
    """torch.compile each block on its own: one compiled graph reused by every layer, and FSDP's
    per-block hooks stay outside the graphs."""
    layers = model.get_submodule(blocks)
    for name, block in layers.items():
        layers[name] = torch.compile(block, fullgraph=False)
    return model

"""Activation recomputation: keep only each block's input for backward and run the block again there.

`full` wraps every block (Korthikanti et al. 2022's full recomputation: activations of a layer shrink
to its input, at the cost of one more forward). `selective` (attention core only) is not available yet.
"""
from __future__ import annotations

import torch.nn as nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper


def apply_recompute(model: nn.Module, blocks: str, mode: str) -> nn.Module:
    """Wrap each block of `model.<blocks>` for recomputation when `mode` is 'full'."""
    if mode == "none":
        return model
    if mode != "full":
        raise ValueError(f"recompute={mode} is not available (none or full)")
    layers = model.get_submodule(blocks)
    for name, block in layers.items():
        # Non-reentrant checkpointing: works with FSDP2's hooks and keyword arguments.
        layers[name] = checkpoint_wrapper(block, preserve_rng_state=False)
    return model

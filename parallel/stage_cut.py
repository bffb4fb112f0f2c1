"""How a pipeline's layers are cut into stages: blocks per stage, given or balanced.

No torch import: the planner counts memory and time per stage with the same cut the trainer runs
(parallel/pipeline.py), and parallel/layout.py checks a given cut against it.
"""
from __future__ import annotations

from typing import Optional

# Pipeline balance (Llama 3's and BLOOM's cuts): the embedding and the head each cost about one block,
# so the first and last stages hold one block fewer when the layers allow it.
EMBEDDING_BLOCKS = HEAD_BLOCKS = 1


def stage_layer_counts(n_layers: int, n_stages: int, pp_layers: Optional[tuple[int, ...]] = None) -> tuple[int, ...]:
    """Blocks per pipeline stage, in stage order: `pp_layers` as given; equal cuts where the layers
    divide; else the row embedding, blocks, head (EMBEDDING_BLOCKS and HEAD_BLOCKS units) cut into
    n_stages equal spans of cost (70 layers on 12 stages: 5, 6 × 10, 5; 126 on 16: 7, 8 × 14, 7).
    When that would leave a stage without a block, the spare blocks are spread evenly instead."""
    if pp_layers:
        return tuple(pp_layers)
    if n_layers % n_stages == 0:
        return (n_layers // n_stages,) * n_stages
    units = n_layers + EMBEDDING_BLOCKS + HEAD_BLOCKS
    bounds = [k * units // n_stages for k in range(n_stages + 1)]   # floor: the first stage the lighter
    blocks = range(EMBEDDING_BLOCKS, EMBEDDING_BLOCKS + n_layers)      # the units that are blocks
    counts = [len(range(max(lo, blocks.start), min(hi, blocks.stop))) for lo, hi in zip(bounds, bounds[1:])]
    if min(counts) >= 1:
        return tuple(counts)
    base, spare = divmod(n_layers, n_stages)
    wider = {int((i + 0.5) * n_stages / spare) for i in range(spare)}
    return tuple(base + (stage in wider) for stage in range(n_stages))


def stage_layers(n_layers: int, n_stages: int, stage: int, pp_layers: Optional[tuple[int, ...]] = None) -> range:
    """The indices of the blocks stage `stage` runs."""
    counts = stage_layer_counts(n_layers, n_stages, pp_layers)
    start = sum(counts[:stage])
    return range(start, start + counts[stage])

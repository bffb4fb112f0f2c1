"""Blocks per pipeline rank for many layouts at once, and which ranks can hold the memory peak.

The cut is `parallel.layout.stage_layer_counts` (balanced, or the layout's explicit `pp_layers`);
with vpp chunks per rank, rank r runs stages r, r + pp, r + 2·pp, ... The first rank also holds the
embedding and the last the head, so they are always candidates for the peak. Among the other ranks,
micro-batches in flight never grow with the rank index under any schedule (micro_batches_in_flight),
so of the ranks holding equally many blocks the earliest holds the most: checking the first rank of
each distinct block count finds the peak without evaluating every rank.
"""
from __future__ import annotations

import numpy as np

from parallel.stage_cut import stage_layer_counts
from planner.layout.candidates import LayoutArrays


def rank_blocks(n_layers: int, pp: int, vpp: int, cut: tuple[int, ...] | None) -> tuple[int, ...]:
    """Blocks each of the pp ranks runs, summed over its vpp chunks."""
    counts = stage_layer_counts(n_layers, pp * vpp, cut)
    return tuple(sum(counts[rank::pp]) for rank in range(pp))


def _per_layout(n_layers: int, x: LayoutArrays, answer) -> tuple[list, np.ndarray]:
    """`answer(rank_blocks)` once per distinct (pp, vpp, cut), and for each layout the index of its
    answer (a search holds thousands of layouts but a few dozen distinct cuts)."""
    explicit = np.array([cut is not None for cut in x.pp_layers.tolist()], dtype=bool)
    codes = np.where(explicit, -1 - np.arange(len(x)), x.pp * 4096 + x.vpp)
    distinct, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    answers = [answer(rank_blocks(n_layers, int(x.pp[i]), int(x.vpp[i]), x.pp_layers[i])) for i in first]
    return answers, inverse.reshape(-1)


def blocks_on_rank(n_layers: int, x: LayoutArrays, rank) -> np.ndarray:
    """Blocks that pipeline rank `rank` (an int or one per layout) of each layout runs."""
    rank = np.broadcast_to(np.asarray(rank), x.pp.shape)
    answers, inverse = _per_layout(n_layers, x, lambda blocks: blocks)
    width = max((len(blocks) for blocks in answers), default=1)
    table = np.array([blocks + (blocks[-1],) * (width - len(blocks)) for blocks in answers], dtype=float)
    return table[inverse, np.minimum(rank, x.pp - 1)] if len(x) else np.zeros(0)


def _peak_candidates(blocks: tuple[int, ...]) -> tuple[int, ...]:
    ranks = {0, len(blocks) - 1}
    seen: set[int] = set()
    for rank in range(1, len(blocks) - 1):
        if blocks[rank] not in seen:
            seen.add(blocks[rank])
            ranks.add(rank)
    return tuple(sorted(ranks))


def peak_candidate_ranks(n_layers: int, x: LayoutArrays) -> list[np.ndarray]:
    """Ranks to evaluate so that the peak over every rank is among them: a list of arrays, one rank
    per layout each (layouts with fewer candidates repeat rank 0)."""
    answers, inverse = _per_layout(n_layers, x, _peak_candidates)
    width = max((len(ranks) for ranks in answers), default=1)
    table = np.array([ranks + (0,) * (width - len(ranks)) for ranks in answers], dtype=np.int64).reshape(-1, width)
    return [table[inverse, k] for k in range(width)]

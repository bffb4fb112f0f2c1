"""Many layouts at once, one numpy array per field, so memory and cost are evaluated vectorised.

The layout search builds thousands of candidates; evaluating them as arrays (rather than one
`Layout` at a time) is what lets 4,096 GPUs be searched in well under two seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from parallel.layout import BACKENDS, Layout, backend_for, trainer_refusals

RECOMPUTE = ("none", "selective", "full")
SCHEDULES = ("gpipe", "1f1b", "interleaved", "zero_bubble")


@dataclass
class LayoutArrays:
    """Field-per-array view of n layouts (codes index RECOMPUTE, SCHEDULES, BACKENDS)."""

    dp: np.ndarray
    tp: np.ndarray
    pp: np.ndarray
    zero: np.ndarray
    mb: np.ndarray
    recompute: np.ndarray
    sp: np.ndarray
    schedule: np.ndarray
    vpp: np.ndarray
    backend: np.ndarray
    replicate: np.ndarray   # HSDP: replica groups of the sharded states (1: shard over all dp ranks)
    cp: np.ndarray          # context parallelism: ranks that split each sequence (parameters replicated)
    lean_sp: np.ndarray     # SP saves the column-parallel input as its sequence shard (bool)
    pp_layers: np.ndarray   # object: an explicit cut (blocks per stage) or None for the balanced one

    def __len__(self) -> int:
        return len(self.dp)

    @property
    def shard(self) -> np.ndarray:
        """Ranks that share one copy of the sharded model states: the data-parallel group times the
        context-parallel ranks (or, under HSDP, one replica group of that) when a sharding stage is
        on, else 1. CP ranks hold the same parameters, so FSDP shards over dp_shard × cp."""
        return np.where(self.zero > 0, self.dp * self.cp // self.replicate, 1)

    @classmethod
    def from_columns(cls, **columns: Sequence) -> "LayoutArrays":
        """Arrays from named columns; `replicate` and `cp` default to 1 (the search enumerates no
        HSDP), `lean_sp` to true, `pp_layers` to None (balanced cuts)."""
        n = len(columns["dp"])
        columns.setdefault("replicate", np.ones(n, dtype=np.int64))
        columns.setdefault("cp", np.ones(n, dtype=np.int64))
        columns.setdefault("lean_sp", np.ones(n, dtype=bool))
        cuts = np.empty(n, dtype=object)   # filled one by one: tuples must not become a 2-D array
        for i, cut in enumerate(columns.get("pp_layers", [None] * n)):
            cuts[i] = tuple(int(c) for c in cut) if cut is not None else None
        columns["pp_layers"] = cuts
        return cls(**{f.name: np.asarray(columns[f.name]) for f in fields(cls)})

    @classmethod
    def from_layouts(cls, layouts: Sequence[Layout], backend: str = "auto") -> "LayoutArrays":
        return cls.from_columns(
            dp=[x.dp for x in layouts], tp=[x.tp for x in layouts], pp=[x.pp for x in layouts],
            zero=[x.zero_stage for x in layouts], mb=[x.micro_batch for x in layouts],
            recompute=[RECOMPUTE.index(x.recompute) for x in layouts],
            sp=[bool(x.sequence_parallel) for x in layouts],
            schedule=[SCHEDULES.index(x.pp_schedule) for x in layouts],
            vpp=[x.vpp for x in layouts],
            replicate=[x.dp_replicate if x.zero_stage else 1 for x in layouts],
            cp=[x.cp for x in layouts], lean_sp=[bool(x.lean_sp) for x in layouts], pp_layers=[x.pp_layers for x in layouts],
            backend=[BACKENDS.index(backend_for(backend, x.zero_stage, x.model_parallel)) for x in layouts])

    def take(self, index) -> "LayoutArrays":
        return LayoutArrays(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def layout(self, i: int) -> Layout:
        """The i-th candidate as a `Layout` (sharded stages put the data-parallel ranks in dp_shard)."""
        dp, zero, replicate = int(self.dp[i]), int(self.zero[i]), int(self.replicate[i])
        return Layout(dp_replicate=replicate if zero else dp, dp_shard=dp // replicate if zero else 1,
                      tp=int(self.tp[i]), pp=int(self.pp[i]), zero_stage=zero, micro_batch=int(self.mb[i]),
                      recompute=RECOMPUTE[int(self.recompute[i])],
                      pp_schedule=SCHEDULES[int(self.schedule[i])],
                      sequence_parallel=bool(self.sp[i]), vpp=int(self.vpp[i]), cp=int(self.cp[i]),
                      lean_sp=bool(self.lean_sp[i]), pp_layers=self.pp_layers[i])

    def backend_name(self, i: int) -> str:
        return BACKENDS[int(self.backend[i])]

    def trainer_refusals(self, tie_embeddings: bool) -> np.ndarray:
        """Per candidate, why this project's trainer would not run it ('' where it would): the rule
        of `parallel.layout.trainer_refusals`, asked once per distinct (backend, tp, pp, cp, zero, schedule)
        it reads."""
        keys = np.stack([self.backend, self.tp, self.pp, self.cp, self.zero, self.schedule], axis=1).reshape(-1, 6)
        distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
        answers = np.array(["; ".join(trainer_refusals(BACKENDS[int(b)], int(tp), int(pp), tie_embeddings,
                                                       cp=int(cp), zero_stage=int(zero),
                                                       schedule=SCHEDULES[int(schedule)]))
                            for b, tp, pp, cp, zero, schedule in distinct], dtype=object)
        return answers[inverse.reshape(-1)]

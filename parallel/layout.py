"""The parallel layout: how ranks are split between data, tensor and pipeline parallelism.

A plain dataclass with no torch import: the planner emits it, `parallel/` consumes it, and nothing
else computes ranks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

Recompute = Literal["none", "selective", "full"]
PipelineSchedule = Literal["gpipe", "1f1b", "interleaved", "zero_bubble"]
MULTI_STAGE_SCHEDULES = ("interleaved", "zero_bubble")   # vpp stages per rank


@dataclass(frozen=True)
class Layout:
    """dp_replicate × dp_shard × tp × pp ranks, plus how each rank runs its share."""

    dp_replicate: int = 1
    dp_shard: int = 1
    tp: int = 1
    pp: int = 1
    zero_stage: int = 0
    micro_batch: int = 1
    recompute: Recompute = "none"
    pp_schedule: PipelineSchedule = "1f1b"
    sequence_parallel: bool = False   # Korthikanti et al. 2022: shard norms/dropout over the TP group
    vpp: int = 1                      # model chunks per pipeline rank (interleaved 1F1B, zero bubble)

    @property
    def dp(self) -> int:
        """Data-parallel size: every rank that sees different data."""
        return self.dp_replicate * self.dp_shard

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp

    def problems(self, world_size: int, n_heads: Optional[int] = None, n_kv_heads: Optional[int] = None,
                 n_layers: Optional[int] = None, ffn: Optional[int] = None) -> list[str]:
        """Every reason this layout cannot run on `world_size` ranks with this model; empty if none."""
        found = []
        for name in ("dp_replicate", "dp_shard", "tp", "pp", "micro_batch", "vpp"):
            if getattr(self, name) < 1:
                found.append(f"{name}={getattr(self, name)} must be at least 1")
        if self.zero_stage not in (0, 1, 2, 3):
            found.append(f"zero_stage={self.zero_stage} must be 0, 1, 2 or 3")
        if self.world_size != world_size:
            found.append(f"dp_replicate {self.dp_replicate} × dp_shard {self.dp_shard} × tp {self.tp}"
                         f" × pp {self.pp} = {self.world_size} ranks, but the world has {world_size}")
        if n_heads is not None and n_heads % self.tp:
            found.append(f"tp={self.tp} does not divide the {n_heads} attention heads")
        if n_kv_heads is not None and n_kv_heads % self.tp:
            found.append(f"tp={self.tp} does not divide the {n_kv_heads} key/value heads")
        if ffn is not None and ffn % self.tp:
            found.append(f"tp={self.tp} does not divide the FFN width {ffn}")
        if n_layers is not None and self.pp > n_layers:
            found.append(f"pp={self.pp} is more pipeline stages than the {n_layers} layers")
        elif n_layers is not None and n_layers % self.pp:
            found.append(f"pp={self.pp} does not divide the {n_layers} layers")
        if self.vpp > 1 and self.pp_schedule not in MULTI_STAGE_SCHEDULES:
            found.append(f"vpp={self.vpp} needs pp_schedule=interleaved or zero_bubble")
        if self.vpp > 1 and n_layers is not None and n_layers % (self.pp * self.vpp):
            found.append(f"pp={self.pp} × vpp={self.vpp} does not divide the {n_layers} layers")
        if self.sequence_parallel and self.tp == 1:
            found.append("sequence_parallel needs tp > 1")
        return found

    def validate(self, world_size: int, model: object = None) -> None:
        """Raise ValueError naming every factor that does not divide (model: any object with
        n_heads, n_kv_heads and n_layers attributes)."""
        heads = getattr(model, "n_heads", None)
        kv_heads = getattr(model, "n_kv_heads", None) or heads
        found = self.problems(world_size, heads, kv_heads, getattr(model, "n_layers", None), getattr(model, "ffn", None))
        if found:
            raise ValueError("layout does not fit: " + "; ".join(found))

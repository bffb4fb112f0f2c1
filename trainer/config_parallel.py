"""The `parallel` section of the config tree: the layout a run uses and the backend that runs it.

No torch import here; trainer/run_layout.py turns it into parallel/layout.py's Layout.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from trainer.config_sections import Section


class ParallelConfig(Section):
    """The parallel layout, under the names `parallel/layout.py`'s Layout and `scaleplan plan` use,
    and the backend that runs it. Unset data-parallel sizes are derived from the world size:
    dp_replicate × dp_shard × cp × tp × pp = ranks (see trainer/run_layout.py)."""

    backend: Literal["auto", "ddp", "fsdp", "deepspeed"] = Field(
        "auto", description="auto: ddp for zero_stage 0, deepspeed for 1-2 (fsdp with tp, pp or cp), fsdp for 3")
    dp_replicate: Optional[int] = Field(None, ge=1, description="ranks holding full replicas (HSDP: "
                                        "replica groups); default: all data-parallel ranks when unsharded")
    dp_shard: Optional[int] = Field(None, ge=1, description="ranks one copy of the model states is sharded "
                                    "over; default: all data-parallel ranks when zero_stage > 0")
    tp: int = Field(1, ge=1, description="tensor-parallel ranks: attention heads, FFN width and vocabulary split over them")
    sequence_parallel: bool = Field(False, description="with tp > 1: norms and the residual stream split along the sequence")
    lean_sp: bool = Field(True, description="sequence_parallel keeps only the sequence shard of each norm output "
                          "for backward and all-gathers it again there (less memory, one more all-gather)")
    cp: int = Field(1, ge=1, description="context-parallel ranks: each sequence split over them for attention "
                    "(2 × cp load-balanced causal chunks)")
    pp: int = Field(1, ge=1, description="pipeline ranks: the layers cut into pp × vpp stages")
    pp_schedule: Literal["gpipe", "1f1b", "interleaved", "zero_bubble"] = Field(
        "1f1b", description="pipeline schedule; interleaved and zero_bubble run vpp stages per rank")
    vpp: int = Field(1, ge=1, description="pipeline stages per rank (virtual stages) for interleaved and zero_bubble")
    pp_layers: Optional[list[int]] = Field(None, description="blocks per pipeline stage (pp × vpp of them, in "
                                           "order); default: balanced, embedding and head one block each")
    zero_stage: Optional[int] = Field(None, ge=0, le=3, description="what is sharded: 1 optimizer states, "
                                      "2 + gradients, 3 + weights; default: 0 (ddp, auto), 2 (deepspeed), 3 (fsdp)")
    micro_batch: int = Field(8, ge=1, description="sequences per rank per forward/backward")
    recompute: Literal["none", "selective", "full"] = Field(
        "none", description="selective: recompute the attention core in backward; full: each whole block")
    compile: bool = Field(False, description="torch.compile each block (GPU; the first steps compile)")
    cpu_offload: bool = Field(False, description="fsdp: parameters, gradients and optimizer on the CPU; "
                              "deepspeed: optimizer states on the CPU")
    bucket_mb: int = Field(25, ge=1, description="DDP gradient bucket size")
    deepspeed: dict[str, Any] = Field(default_factory=dict, description="DeepSpeed config keys merged over the ones "
                            "generated from this config, e.g. zero_optimization.overlap_comm=false")

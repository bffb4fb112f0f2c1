"""The parallel layout and its rules: how ranks are split between data, context, tensor and
pipeline parallelism, which backend runs which sharding stage, and what must divide what (the cut
of the layers into pipeline stages is parallel/stage_cut.py's).

A plain dataclass with no torch import: the planner emits it, `parallel/` consumes it, and nothing
else computes ranks. Every rule is written here once; the trainer (`trainer/run_layout.py`, reading a
config) and the planner (`planner/layout/search.py`, enumerating candidates) both ask it, so a plan,
a config and a run refuse the same layouts. Messages name a factor with an optional `key` prefix
("parallel." for a training config) so each caller's user reads the names they typed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from parallel.stage_cut import stage_layer_counts

Recompute = Literal["none", "selective", "full"]
PipelineSchedule = Literal["gpipe", "1f1b", "interleaved", "zero_bubble"]
MULTI_STAGE_SCHEDULES = ("interleaved", "zero_bubble")   # vpp stages per rank
MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "cp", "tp")   # outermost first: TP ranks are neighbours

# The one backend -> ZeRO stages table. Stage 0 (nothing sharded) is DDP's: DeepSpeed without ZeRO
# would be DDP by another name. FSDP2 runs the three stages on its data-parallel mesh: 3 reshards the
# weights after forward; 2 keeps them gathered until backward and reduce-scatters gradients every
# micro-batch; 1 keeps them too but reduces gradients only on a step's last micro-batch (gradients
# whole in between, as ZeRO-1's are). That is how ZeRO-1/2 compose with tensor, pipeline and context
# parallelism here: DeepSpeed's engine runs data parallelism only. `auto` picks a backend per stage
# and layout (backend_for).
BACKENDS = ("ddp", "fsdp", "deepspeed")
_RUNS = {"ddp": (0,), "fsdp": (1, 2, 3), "deepspeed": (1, 2, 3)}
BACKEND_STAGES = {**_RUNS, "auto": tuple(sorted({stage for stages in _RUNS.values() for stage in stages}))}
DEFAULT_STAGE = {"auto": 0, "ddp": 0, "fsdp": 3, "deepspeed": 2}   # a config that leaves zero_stage unset

# The one pipeline micro-batch rule, as the planner counts what it prunes (micro_batch_problem applies it).
MICRO_BATCH_RULE = ("a pipeline of pp ranks needs at least pp micro-batches per step, "
                    "a multiple of pp under interleaved and zero_bubble")


def backend_for(backend: str, zero_stage: int, model_parallel: bool = False) -> str:
    """The backend that runs `zero_stage`: a named one as is; `auto` picks DDP when nothing is
    sharded, FSDP2 for stage 3, and for stages 1-2 DeepSpeed ZeRO, or FSDP2 when the layout also has
    tensor, pipeline or context parallelism (`model_parallel`), which DeepSpeed's engine does not run."""
    if backend != "auto":
        return backend
    if zero_stage == 0:
        return "ddp"
    return "fsdp" if zero_stage == 3 or model_parallel else "deepspeed"


def stage_problem(backend: str, zero_stage: int, key: str = "") -> Optional[str]:
    """Why `backend` (a resolved one, not auto) cannot run `zero_stage`, naming the backends that can."""
    if zero_stage in BACKEND_STAGES[backend] or zero_stage not in BACKEND_STAGES["auto"]:
        return None
    runs = ", ".join(map(str, BACKEND_STAGES[backend]))
    others = " or ".join(name for name in BACKENDS if zero_stage in BACKEND_STAGES[name])
    return (f"{key}backend={backend} runs zero_stage {runs}, not {zero_stage}: for zero_stage {zero_stage} "
            f"use backend {others} (or auto)")


def micro_batch_problem(pp: int, schedule: str, n_micro: int, dp: Optional[int] = None,
                        key: str = "") -> Optional[str]:
    """MICRO_BATCH_RULE for `n_micro` micro-batches per step: torch's schedules run every stage on
    each micro-batch, and the multi-stage ones cycle through the pp ranks in rounds of pp."""
    if pp == 1:
        return None
    multiple = schedule in MULTI_STAGE_SCHEDULES
    if (n_micro % pp == 0) if multiple else (n_micro >= pp):
        return None
    needs = f"a multiple of {pp}" if multiple else f"at least {pp}"
    over = f" × {dp} data-parallel ranks" if dp is not None else " × dp"
    return (f"a pipeline of {key}pp={pp} ranks ({schedule}) needs {needs} micro-batches per step, not "
            f"{n_micro} (global batch / ({key}micro_batch{over}))")


def trainer_refusals(backend: str, tp: int, pp: int, tie_embeddings: bool = False, cpu_offload: bool = False,
                     key: str = "", cp: int = 1, zero_stage: int = 0, schedule: str = "1f1b") -> list[str]:
    """What this project's trainer does not run although the layout itself is sound (Megatron-DeepSpeed
    runs ZeRO with TP and PP): the trainer refuses these, the planner ranks them but marks them."""
    found = []
    if backend == "fsdp" and zero_stage == 3 and pp > 1 and schedule == "zero_bubble":
        # torch's zero-bubble stages take weight gradients against the parameters the module holds
        # when its backward starts: resharded ones at stage 3, not the gathered ones the graph used
        found.append(f"{key}pp_schedule=zero_bubble computes weight gradients against resharded weights under "
                     f"{key}backend=fsdp zero_stage 3: use zero_stage 1 or 2, or pp_schedule interleaved")
    if backend == "deepspeed" and (tp > 1 or pp > 1):
        found.append(f"{key}backend=deepspeed runs data parallelism only, not {key}tp={tp} × {key}pp={pp}: "
                     "use backend fsdp (zero_stage 1, 2 or 3) or ddp for tensor and pipeline parallelism")
    if pp > 1 and tie_embeddings:
        found.append("model.tie_embeddings=true puts one weight on the first and the last pipeline stage: "
                     f"set it false for {key}pp > 1")
    if backend == "deepspeed" and cp > 1:
        found.append(f"{key}backend=deepspeed runs data parallelism only, not {key}cp={cp}: "
                     "use backend fsdp or ddp for context parallelism")
    if cpu_offload and backend not in ("fsdp", "deepspeed"):
        found.append(f"{key}cpu_offload needs backend fsdp or deepspeed")
    return found


@dataclass(frozen=True)
class Layout:
    """dp_replicate × dp_shard × cp × tp × pp ranks, plus how each rank runs its share."""

    dp_replicate: int = 1
    dp_shard: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1                       # context parallelism: each sequence split over cp ranks for attention
    zero_stage: int = 0
    micro_batch: int = 1
    recompute: Recompute = "none"
    pp_schedule: PipelineSchedule = "1f1b"
    sequence_parallel: bool = False   # Korthikanti et al. 2022: shard norms/dropout over the TP group
    vpp: int = 1                      # model chunks per pipeline rank (interleaved 1F1B, zero bubble)
    pp_layers: Optional[tuple[int, ...]] = None   # blocks per stage (pp × vpp of them); None: balanced
    lean_sp: bool = True              # SP keeps the sequence shard for backward and all-gathers it again

    @property
    def model_parallel(self) -> bool:
        """Whether anything besides data parallelism splits the model or its sequences."""
        return self.tp > 1 or self.pp > 1 or self.cp > 1

    def stage_layer_counts(self, n_layers: int) -> tuple[int, ...]:
        """Blocks of each of the pp × vpp pipeline stages, in stage order."""
        return stage_layer_counts(n_layers, self.pp * self.vpp, self.pp_layers)

    @property
    def dp(self) -> int:
        """Data-parallel size: every rank that sees different data."""
        return self.dp_replicate * self.dp_shard

    @property
    def world_size(self) -> int:
        return self.dp * self.cp * self.tp * self.pp

    @property
    def mesh_shape(self) -> tuple[int, ...]:
        """Sizes of the device mesh's MESH_DIMS, 1 where unused."""
        return tuple(getattr(self, name) for name in MESH_DIMS)

    def micro_batches(self, global_batch: int) -> Optional[int]:
        """Micro-batches per optimizer step for `global_batch` sequences; None if they do not divide."""
        per_micro_step = self.dp * self.micro_batch
        return global_batch // per_micro_step if per_micro_step and global_batch % per_micro_step == 0 else None

    def problems(self, world_size: int, n_heads: Optional[int] = None, n_kv_heads: Optional[int] = None,
                 n_layers: Optional[int] = None, ffn: Optional[int] = None, *, backend: Optional[str] = None,
                 global_batch: Optional[int] = None, seq_len: Optional[int] = None, key: str = "") -> list[str]:
        """Every reason this layout cannot run on `world_size` ranks with this model; empty if none.
        `backend` (resolved, or auto): its stage and data-parallel split; `global_batch`: sequences
        per step, which must divide into micro-batches enough for the pipeline; `seq_len`: tokens per
        sequence, which context parallelism cuts into 2 × cp chunks."""
        found = self._structure_problems(world_size, n_heads, n_kv_heads, n_layers, ffn, key)
        if seq_len is not None and self.cp > 1 and seq_len % (2 * self.cp):
            found.append(f"{key}cp={self.cp} splits each sequence into 2 × cp = {2 * self.cp} chunks (a causal "
                         f"balance: rank i holds chunks i and 2·cp−1−i), which must divide seq_len {seq_len}")
        if backend is not None:
            found += self._backend_problems(backend_for(backend, self.zero_stage, self.model_parallel), key)
        if global_batch is not None and self.dp * self.micro_batch > 0:
            n_micro, per_micro_step = self.micro_batches(global_batch), self.dp * self.micro_batch
            if n_micro is None:
                found.append(f"global batch of {global_batch} sequences is not divisible by {key}micro_batch "
                             f"{self.micro_batch} × data-parallel size {self.dp} = {per_micro_step}: make the "
                             f"global batch a multiple of {per_micro_step} or change {key}micro_batch")
            elif problem := micro_batch_problem(self.pp, self.pp_schedule, n_micro, self.dp, key):
                found.append(problem)
        return found

    def _backend_problems(self, backend: str, key: str) -> list[str]:
        found = [problem] if (problem := stage_problem(backend, self.zero_stage, key)) else []
        if backend == "ddp" and self.dp_shard > 1:
            found.append(f"{key}backend=ddp shards nothing: {key}dp_shard must be 1, not {self.dp_shard}")
        if backend == "deepspeed" and self.dp_replicate > 1:
            found.append(f"{key}backend=deepspeed shards over every data-parallel rank: {key}dp_replicate must "
                         f"be 1, not {self.dp_replicate} (HSDP runs on backend fsdp)")
        return found

    def _structure_problems(self, world_size: int, n_heads: Optional[int], n_kv_heads: Optional[int],
                            n_layers: Optional[int], ffn: Optional[int], key: str = "") -> list[str]:
        found = []
        for name in ("dp_replicate", "dp_shard", "cp", "tp", "pp", "micro_batch", "vpp"):
            if getattr(self, name) < 1:
                found.append(f"{name}={getattr(self, name)} must be at least 1")
        if self.zero_stage not in BACKEND_STAGES["auto"]:
            found.append(f"zero_stage={self.zero_stage} must be 0, 1, 2 or 3")
        if self.world_size != world_size:
            found.append(f"dp_replicate {self.dp_replicate} × dp_shard {self.dp_shard} × cp {self.cp} × tp {self.tp}"
                         f" × pp {self.pp} = {self.world_size} ranks, but the world has {world_size}")
        if n_heads is not None and n_heads % self.tp:
            found.append(f"tp={self.tp} does not divide the {n_heads} attention heads")
        if n_kv_heads is not None and n_kv_heads % self.tp:
            found.append(f"tp={self.tp} does not divide the {n_kv_heads} key/value heads")
        if ffn is not None and ffn % self.tp:
            found.append(f"tp={self.tp} does not divide the FFN width {ffn}")
        found += self._stage_problems(n_layers, key)
        if self.vpp > 1 and self.pp_schedule not in MULTI_STAGE_SCHEDULES:
            found.append(f"vpp={self.vpp} needs pp_schedule=interleaved or zero_bubble")
        if self.sequence_parallel and self.tp == 1:
            found.append("sequence_parallel needs tp > 1")
        return found

    def _stage_problems(self, n_layers: Optional[int], key: str) -> list[str]:
        """The cut of the layers into pp × vpp stages: every stage at least one block, all blocks cut."""
        stages = self.pp * self.vpp
        if self.pp_layers is not None:
            cut = ",".join(map(str, self.pp_layers))
            if len(self.pp_layers) != stages:
                return [f"{key}pp_layers={cut} gives {len(self.pp_layers)} stages, but pp {self.pp} × vpp "
                        f"{self.vpp} = {stages}"]
            if min(self.pp_layers) < 1:
                return [f"{key}pp_layers={cut} has an empty stage: every stage needs at least one block"]
            if n_layers is not None and sum(self.pp_layers) != n_layers:
                return [f"{key}pp_layers={cut} sums to {sum(self.pp_layers)} blocks, but the model has {n_layers}"]
        elif n_layers is not None and stages > n_layers:
            return [f"{key}pp={self.pp} × vpp={self.vpp} is more pipeline stages than the {n_layers} layers"]
        return []

    def validate(self, world_size: int, model: object = None) -> None:
        """Raise ValueError naming every factor that does not divide (model: any object with
        n_heads, n_kv_heads and n_layers attributes)."""
        heads = getattr(model, "n_heads", None)
        kv_heads = getattr(model, "n_kv_heads", None) or heads
        found = self.problems(world_size, heads, kv_heads, getattr(model, "n_layers", None),
                              getattr(model, "ffn", None))
        if found:
            raise ValueError("layout does not fit: " + "; ".join(found))

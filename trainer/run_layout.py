"""The Layout a config runs on a world of ranks, and the backend that runs it.

Checked before any process group exists: every reason a layout cannot run is one line that names
the factor and what to change. The planner's `launch/layout_inputs.py` reads a config's layout through
the same function, so a plan, a config and a run agree.
"""
from __future__ import annotations

import importlib.util
from typing import Optional

from parallel.layout import MULTI_STAGE_SCHEDULES, Layout
from planner.errors import UserError
from trainer.config import Config

# Which ZeRO stages each backend runs (the planner's `STAGES_FOR_BACKEND`, and its `auto` choice).
# DeepSpeed without ZeRO (stage 0) is DDP by another name: backend ddp runs it.
STAGES = {"ddp": (0,), "fsdp": (2, 3), "deepspeed": (1, 2, 3)}
DEFAULT_STAGE = {"auto": 0, "ddp": 0, "fsdp": 3, "deepspeed": 2}
OTHER_BACKEND = {"ddp": "fsdp or deepspeed (or auto)", "fsdp": "deepspeed (or auto)", "deepspeed": "ddp (or auto)"}


def backend_for(backend: str, zero_stage: int) -> str:
    """`auto`: DDP when nothing is sharded, DeepSpeed ZeRO for stages 1-2, FSDP2 for stage 3."""
    if backend != "auto":
        return backend
    return "ddp" if zero_stage == 0 else ("fsdp" if zero_stage == 3 else "deepspeed")


def _data_parallel_sizes(replicate: Optional[int], shard: Optional[int], dp: int,
                         sharded: bool) -> tuple[int, int]:
    """(dp_replicate, dp_shard): what the config gives, the rest derived from `dp` ranks."""
    if replicate is None and shard is None:
        return (1, dp) if sharded else (dp, 1)
    if shard is None:
        return replicate, max(1, dp // replicate)
    if replicate is None:
        return max(1, dp // shard), shard
    return replicate, shard


def resolve_layout(cfg: Config, world_size: int) -> tuple[Layout, str]:
    """(Layout, backend name) for `cfg` on `world_size` ranks; UserError naming every problem."""
    par = cfg.parallel
    zero = par.zero_stage if par.zero_stage is not None else DEFAULT_STAGE[par.backend]
    backend = backend_for(par.backend, zero)
    problems = []
    if par.tp * par.pp > world_size or world_size % (par.tp * par.pp):
        problems.append(f"parallel.tp {par.tp} × parallel.pp {par.pp} does not divide the {world_size} ranks")
    dp = max(1, world_size // (par.tp * par.pp))
    replicate, shard = _data_parallel_sizes(par.dp_replicate, par.dp_shard, dp, zero > 0)
    if par.dp_shard is not None and par.dp_replicate is None and dp % par.dp_shard:
        problems.append(f"parallel.dp_shard {par.dp_shard} does not divide the {dp} data-parallel ranks")
    if par.dp_replicate is not None and par.dp_shard is None and dp % par.dp_replicate:
        problems.append(f"parallel.dp_replicate {par.dp_replicate} does not divide the {dp} data-parallel ranks")
    if zero not in STAGES[backend]:
        runs = ", ".join(map(str, STAGES[backend]))
        problems.append(f"parallel.backend={backend} runs zero_stage {runs}, not {zero}: for zero_stage {zero} "
                        f"use backend {OTHER_BACKEND[backend]}")
    if backend == "ddp" and shard > 1:
        problems.append(f"parallel.backend=ddp shards nothing: parallel.dp_shard must be 1, not {shard}")
    if backend == "deepspeed" and replicate > 1:
        problems.append(f"parallel.backend=deepspeed shards over every data-parallel rank: "
                        f"parallel.dp_replicate must be 1, not {replicate} (HSDP runs on backend fsdp)")
    if par.cpu_offload and backend not in ("fsdp", "deepspeed"):
        problems.append("parallel.cpu_offload needs backend fsdp or deepspeed")
    if backend == "deepspeed" and (par.tp > 1 or par.pp > 1):
        problems.append(f"parallel.backend=deepspeed runs data parallelism only, not parallel.tp={par.tp} × "
                        f"parallel.pp={par.pp}: use backend fsdp or ddp for tensor and pipeline parallelism")
    if par.pp > 1 and cfg.model.tie_embeddings:
        problems.append("model.tie_embeddings=true puts one weight on the first and the last pipeline stage: "
                        "set it false for parallel.pp > 1")
    n_micro = cfg.grad_accum_steps(dp) if not problems else 0
    interleaved = par.pp_schedule in MULTI_STAGE_SCHEDULES
    if par.pp > 1 and n_micro and (n_micro % par.pp if interleaved else n_micro < par.pp):
        needs = f"a multiple of {par.pp}" if interleaved else f"at least {par.pp}"
        problems.append(f"a pipeline of parallel.pp={par.pp} ranks ({par.pp_schedule}) needs {needs} micro-batches per "
                        f"step, not {n_micro} (train.global_batch / (parallel.micro_batch × {dp} data-parallel ranks))")
    layout = Layout(dp_replicate=replicate, dp_shard=shard, tp=par.tp, pp=par.pp, zero_stage=zero,
                    micro_batch=par.micro_batch, recompute=par.recompute, pp_schedule=par.pp_schedule,
                    sequence_parallel=par.sequence_parallel, vpp=par.vpp)
    problems += [problem for problem in layout.problems(world_size, cfg.model.n_heads, cfg.model.kv_heads,
                                                          cfg.model.n_layers, cfg.model.ffn) if problem not in problems]
    if problems:
        raise UserError("layout does not fit: " + "; ".join(problems))
    return layout, backend


def check_backend_installed(backend: str) -> None:
    """DeepSpeed is optional: say so in one line before any process starts using it."""
    if backend != "deepspeed":
        return
    try:
        importable = importlib.util.find_spec("deepspeed") is not None
    except ValueError:   # a module set to None in sys.modules: blocked, as good as absent
        importable = False
    if not importable:
        raise UserError("parallel.backend=deepspeed but DeepSpeed is not installed: `pip install deepspeed`, "
                        "or use parallel.backend=fsdp (zero_stage 2 or 3)")

"""The Layout a config runs on a world of ranks, and the backend that runs it: the config's adapter
to the layout rules of `parallel/layout.py`.

Checked before any process group exists: every reason a layout cannot run is one line that names
the factor and what to change. The rules themselves (which backend runs which stage, micro-batches
per schedule, what divides what) live in `parallel/layout.py`, which the planner asks too, so a plan,
a config and a run agree; this file only derives the sizes a config leaves unset.
"""
from __future__ import annotations

import importlib.util
from typing import Optional

from parallel.layout import DEFAULT_STAGE, Layout, backend_for, trainer_refusals
from planner.errors import UserError
from trainer.config import Config

KEY = "parallel."   # messages name the config's keys


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
    backend = backend_for(par.backend, zero, model_parallel=max(par.tp, par.pp, par.cp) > 1)
    problems = []
    model_ranks = par.cp * par.tp * par.pp
    if model_ranks > world_size or world_size % model_ranks:
        problems.append(f"parallel.cp {par.cp} × parallel.tp {par.tp} × parallel.pp {par.pp} does not divide "
                        f"the {world_size} ranks")
    dp = max(1, world_size // model_ranks)
    replicate, shard = _data_parallel_sizes(par.dp_replicate, par.dp_shard, dp, zero > 0)
    if par.dp_shard is not None and par.dp_replicate is None and dp % par.dp_shard:
        problems.append(f"parallel.dp_shard {par.dp_shard} does not divide the {dp} data-parallel ranks")
    if par.dp_replicate is not None and par.dp_shard is None and dp % par.dp_replicate:
        problems.append(f"parallel.dp_replicate {par.dp_replicate} does not divide the {dp} data-parallel ranks")
    layout = Layout(dp_replicate=replicate, dp_shard=shard, tp=par.tp, pp=par.pp, zero_stage=zero,
                    micro_batch=par.micro_batch, recompute=par.recompute, pp_schedule=par.pp_schedule,
                    sequence_parallel=par.sequence_parallel, vpp=par.vpp, cp=par.cp, lean_sp=par.lean_sp,
                    pp_layers=tuple(par.pp_layers) if par.pp_layers is not None else None)
    model = cfg.model
    # the batch is divided among data-parallel ranks only once their number is known
    problems += layout.problems(world_size, model.n_heads, model.kv_heads, model.n_layers, model.ffn,
                                backend=backend, global_batch=None if problems else cfg.global_batch,
                                seq_len=model.seq_len, key=KEY)
    problems += trainer_refusals(backend, par.tp, par.pp, model.tie_embeddings, par.cpu_offload, key=KEY, cp=par.cp,
                                 zero_stage=zero, schedule=par.pp_schedule)
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

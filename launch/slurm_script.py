"""sbatch scripts from a training config: `launch/slurm/job.sbatch` filled in for this run.

The preemption signal's lead is sized for this model: the bytes of model state one rank saves (the
planner's count) at a checkpoint throughput measured by `bench/checkpoint_save.py`, plus a margin
for the step in flight and the requeue.
"""
from __future__ import annotations

import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Optional

from parallel.layout import Layout
from planner.errors import UserError
from trainer.config import load_config
from trainer.run_layout import resolve_layout

TEMPLATE = Path(__file__).resolve().parent / "slurm" / "job.sbatch"
REPO = Path(__file__).resolve().parents[1]
# A checkpoint save measured with bench/checkpoint_save.py on one CPU process of the 2-core test
# machine: 0.5 GiB/s (gpt2-124m, fsync and checksums included); GPU nodes' disks are rarely slower.
SAVE_GIB_PER_S = 0.5
SIGNAL_MARGIN_S = 60      # the step in flight, the requeue, clock skew
MIN_SIGNAL_S = 90


@dataclass
class SlurmJob:
    configs: list[str]                  # one, or one per task of a job array
    nodes: int
    gpus_per_node: int                  # 0: a CPU cluster (procs_per_node ranks per node)
    procs_per_node: int = 1
    time: str = "04:00:00"
    requeue_max: int = 3
    cpus_per_task: Optional[int] = None
    log_dir: str = "logs"
    overrides: list[str] = field(default_factory=list)
    sbatch_options: list[str] = field(default_factory=list)   # "--partition=p", "--exclusive", ...
    join_timeout_s: int = 300

    @property
    def ranks_per_node(self) -> int:
        return self.gpus_per_node or self.procs_per_node


def save_seconds(config_path: str, overrides: list[str], world_size: int,
                 resolved: Optional[tuple[Layout, str]] = None) -> tuple[float, float]:
    """(seconds to save one rank's checkpoint, GiB it writes), for this config on `world_size` ranks
    (`resolved`: its (Layout, backend) there, when the caller has it)."""
    from launch.layout_inputs import config_plan_json

    cfg = load_config(config_path, overrides)
    gib = config_plan_json(cfg, world_size, None, resolved=resolved)["model_states_gib"]
    return gib / SAVE_GIB_PER_S, gib


def check_layout(job: SlurmJob, config: str) -> tuple[Layout, str]:
    """The config's (Layout, backend) on nodes × ranks per node: one line (exit 2) naming what to
    change when it does not fit."""
    if job.nodes < 1 or job.ranks_per_node < 1:
        raise UserError("--nodes and the ranks per node (--gpus-per-node, or --procs-per-node without GPUs) "
                        "must be at least 1")
    cfg = load_config(config, job.overrides)
    world = job.nodes * job.ranks_per_node
    try:
        return resolve_layout(cfg, world)   # the layout rules divide the batch too
    except UserError as error:
        raise UserError(f"{job.nodes} node(s) × {job.ranks_per_node} = {world} ranks do not fit {config}: "
                        f"{error}") from None


def render(job: SlurmJob) -> tuple[str, int]:
    """The sbatch script's text and the signal lead in seconds (for the largest of the configs)."""
    if not job.configs:
        raise UserError("give a config (--config) or configs for a job array (--array)")
    world = job.nodes * job.ranks_per_node
    resolved = [check_layout(job, config) for config in job.configs]
    seconds = max(save_seconds(config, job.overrides, world, layout)[0]
                  for config, layout in zip(job.configs, resolved))
    lead = max(MIN_SIGNAL_S, math.ceil(seconds) + SIGNAL_MARGIN_S)
    options = [f"#SBATCH {option}" for option in job.sbatch_options]
    if job.gpus_per_node:
        options.insert(0, f"#SBATCH --gpus-per-node={job.gpus_per_node}")
    if len(job.configs) > 1:
        options.insert(0, f"#SBATCH --array=0-{len(job.configs) - 1}")
    first = Path(job.configs[0])
    cpus = job.cpus_per_task or max(1, 8 * job.ranks_per_node if job.gpus_per_node else job.ranks_per_node)
    text = Template(TEMPLATE.read_text()).substitute(
        config_name=", ".join(Path(c).name for c in job.configs),
        job_name=first.stem if len(job.configs) == 1 else f"{first.stem}-array", nodes=job.nodes,
        cpus_per_task=cpus, time_limit=job.time, log_dir=job.log_dir,
        log_name="%x-%j.out" if len(job.configs) == 1 else "%x-%A_%a.out", signal_seconds=lead,
        sbatch_options="\n".join(options),
        omp_threads=max(1, cpus // job.ranks_per_node), requeue_max=job.requeue_max,
        procs_per_node=job.ranks_per_node, join_timeout=job.join_timeout_s, python=shlex.quote(sys.executable),
        repo=shlex.quote(str(REPO)), configs=" ".join(shlex.quote(str(Path(c).resolve())) for c in job.configs),
        overrides=" ".join(shlex.quote(o) for o in job.overrides))
    return text, lead


def write_for_plan(path: str, config: str, gpus: int, gpus_per_node: int) -> Path:
    """`scaleplan plan --emit-sbatch`: the planned config on gpus / gpus_per_node whole nodes."""
    if gpus % gpus_per_node:
        raise UserError(f"--gpus {gpus} is not a whole number of nodes of {gpus_per_node} GPUs")
    text, _ = render(SlurmJob(configs=[config], nodes=gpus // gpus_per_node, gpus_per_node=gpus_per_node,
                              log_dir=str(Path(path).resolve().parent / "logs")))
    out = Path(path)
    out.write_text(text)
    out.chmod(0o755)
    (out.parent / "logs").mkdir(exist_ok=True)
    return out

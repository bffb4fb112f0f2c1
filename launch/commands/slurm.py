"""`scaleplan slurm`: an sbatch script that trains a config on N nodes, signals itself before the time
limit, checkpoints and requeues (`launch/slurm/job.sbatch`, filled in by `launch/slurm_script.py`)."""
from __future__ import annotations

import argparse
from pathlib import Path

NAME = "slurm"
HELP = "write an sbatch script: multi-node torchrun, a preemption signal sized to the checkpoint, requeue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", help="the training config (YAML)")
    which.add_argument("--array", nargs="+", metavar="CONFIG", help="a job array: one task per config "
                       "(e.g. many small seed runs, `--array configs/ladder/*.yaml`)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8, help="ranks per node on GPUs; 0 for CPU nodes")
    parser.add_argument("--procs-per-node", type=int, default=1, help="ranks per node when --gpus-per-node 0")
    parser.add_argument("--time", default="04:00:00", help="the job's time limit (HH:MM:SS or D-HH:MM:SS)")
    parser.add_argument("--requeue-max", type=int, default=3, help="give up after this many requeues")
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--qos")
    parser.add_argument("--constraint")
    parser.add_argument("--exclusive", action="store_true")
    parser.add_argument("--log-dir", default="logs", help="one log per job id, appended to across requeues")
    parser.add_argument("--out", default="job.sbatch", help="where to write the script")
    parser.add_argument("--overrides", nargs="*", default=[], metavar="section.key=value",
                        help="config overrides for the run(s)")


def run(args: argparse.Namespace) -> int:
    from launch.slurm_script import SlurmJob, render

    options = [f"--{name}={getattr(args, name)}" for name in ("partition", "account", "qos", "constraint")
               if getattr(args, name)] + (["--exclusive"] if args.exclusive else [])
    log_dir = Path(args.log_dir).resolve()
    job = SlurmJob(configs=[args.config] if args.config else list(args.array), nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                   procs_per_node=args.procs_per_node, time=args.time, requeue_max=args.requeue_max,
                   log_dir=str(log_dir), overrides=list(args.overrides), sbatch_options=options)
    text, lead = render(job)
    log_dir.mkdir(parents=True, exist_ok=True)   # sbatch does not create it, and would lose the log
    out = Path(args.out)
    out.write_text(text)
    out.chmod(0o755)
    tasks = f"{len(job.configs)} array tasks of " if len(job.configs) > 1 else ""
    print(f"wrote {out}: {tasks}{job.nodes} node(s) × {job.ranks_per_node} rank(s); USR1 {lead} s before the time limit "
          f"(this model's checkpoint save plus a margin); submit with `sbatch {out}`")
    return 0

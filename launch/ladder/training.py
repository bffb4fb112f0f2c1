"""Training a ladder's runs: one torchrun subprocess per run, here and one after another (finished
runs skipped, the learning-rate sweep first), or a SLURM job array of the unfinished ones."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from launch.ladder.files import finished_losses, load_ladder
from planner.errors import UserError

REPO = Path(__file__).resolve().parents[2]
Train = Callable[[str, int], int]     # (config path, processes) -> exit code: how one run is trained


def micro_batch_for(config: str, nproc: int) -> list[str]:
    """A small run's batch may not split over `nproc` ranks at the base's micro-batch: shrink it."""
    from trainer.config import load_config

    cfg = load_config(config)
    micro = min(cfg.parallel.micro_batch, max(1, cfg.global_batch // nproc))
    while cfg.global_batch % (micro * nproc) and micro > 1:
        micro -= 1
    if cfg.global_batch % (micro * nproc):
        raise UserError(f"{config}: a global batch of {cfg.global_batch} sequences does not split over {nproc} ranks")
    return [] if micro == cfg.parallel.micro_batch else [f"parallel.micro_batch={micro}"]


def train_one(config: str, nproc: int) -> int:
    """Train one run under torchrun in a subprocess; its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(REPO / "launch" / "train.py"), "--config", config, *micro_batch_for(config, nproc)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.run(command, cwd=REPO, env=env).returncode


def run_ladder(args: argparse.Namespace, directory: Path, train: Train) -> int:
    """`scaleplan ladder run DIR`: sweep the learning rate if asked, train the unfinished runs with
    `train` (or write their SLURM job array), then fit."""
    from launch.ladder.fit import fit_ladder
    from launch.ladder.lr_sweep import tune_learning_rate

    ladder = load_ladder(directory, args.config)
    rungs = ladder["runs"]
    if args.nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {args.nproc}")
    done = finished_losses(directory / "runs" / "runs.csv")
    if (args.tune_lr or ladder.get("lr", {}).get("tune")) and ladder.get("lr", {}).get("sweep") is None:
        if any(r["name"] in done for r in rungs):
            raise UserError(f"{directory} has runs trained at learning rate {ladder.get('lr', {}).get('value')}: a "
                            f"tuned rate now would mix two along the ladder; tune on a new ladder (--tune-lr at design)")
        if args.slurm:
            raise UserError("--tune-lr trains the sweep here, one run after another: run `scaleplan ladder run "
                            f"{directory} --local --tune-lr` first, then --slurm for the ladder")
        tune_learning_rate(directory, ladder, args.nproc, train)
    todo = [r for r in rungs if r["name"] not in done]
    if args.slurm:
        return write_slurm(directory, todo)
    for i, rung in enumerate(todo):
        print(f"[ladder] training {rung['name']} ({i + 1}/{len(todo)} left; {len(rungs) - len(todo)} finished before)",
              flush=True)
        code = train(rung["config"], args.nproc)
        if code != 0:
            print(f"warning: {rung['name']} exited with code {code}; it is left out of the fit", file=sys.stderr)
    if todo:
        print(f"[ladder] skipped {len(rungs) - len(todo)} finished run(s)" if len(todo) < len(rungs) else
              "[ladder] all runs trained", flush=True)
    else:
        print(f"[ladder] all {len(rungs)} runs already finished: fitting", flush=True)
    return fit_ladder(args, directory, ladder, train)


def write_slurm(directory: Path, todo: list[dict]) -> int:
    """DIR/ladder.sbatch: a job array of the runs in `todo`, one GPU each."""
    from launch.slurm_script import SlurmJob, render

    if not todo:
        print(f"every run of {directory} has finished: `scaleplan ladder run {directory}` fits them")
        return 0
    job = SlurmJob(configs=[r["config"] for r in todo], nodes=1, gpus_per_node=1,
                   log_dir=str((directory / "logs").resolve()))
    text, _ = render(job)
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    out = directory / "ladder.sbatch"
    out.write_text(text)
    out.chmod(0o755)
    print(f"wrote {out}: a job array of {len(todo)} run(s), one GPU each; submit with `sbatch {out}`, then "
          f"`scaleplan ladder run {directory}` fits what finished")
    return 0

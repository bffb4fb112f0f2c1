"""Shared helpers for tests that run the real trainer in worker processes."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "launch" / "train.py"

# A model and batch small enough that a multi-process run takes seconds on 2 cores.
TINY = ["model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.seq_len=32",
        "train.global_batch=8", "parallel.micro_batch=4", "train.eval_batches=2", "train.eval_every=5",
        "train.sample_tokens=0", "log.every=1", "log.progress=false", "log.tensorboard=false",
        "optim.warmup_steps=2", "optim.lr=1e-3"]


# Data-parallel layouts under test: (ranks, overrides). The global batch of 16 sequences in
# micro-batches of 2 means gradient accumulation on every world size used here.
SHARDED_BATCH = ["train.global_batch=16", "parallel.micro_batch=2"]
LAYOUTS = {
    "ddp": (2, ["parallel.backend=ddp"]),
    "fsdp": (4, ["parallel.backend=fsdp", "parallel.zero_stage=3"]),
    "fsdp_zero2": (2, ["parallel.backend=fsdp", "parallel.zero_stage=2"]),
    "hsdp": (4, ["parallel.backend=fsdp", "parallel.dp_replicate=2", "parallel.dp_shard=2"]),
    "zero1": (2, ["parallel.backend=deepspeed", "parallel.zero_stage=1"]),
    "zero2": (4, ["parallel.backend=deepspeed", "parallel.zero_stage=2"]),
    "zero3": (4, ["parallel.backend=deepspeed", "parallel.zero_stage=3"]),
    # model parallel, for checkpoints that move between layouts
    "ddp4": (4, ["parallel.backend=ddp"]),
    "dp_tp": (4, ["parallel.backend=ddp", "parallel.tp=2"]),
    "dp_pp": (4, ["parallel.backend=ddp", "parallel.pp=2"]),
}


DEEPSPEED_MISSING = importlib.util.find_spec("deepspeed") is None


def needs_deepspeed(layout: str):
    """pytest.param for a layout, skipped with the reason where DeepSpeed is not installed."""
    import pytest

    missing = LAYOUTS[layout][1][0] == "parallel.backend=deepspeed" and DEEPSPEED_MISSING
    return pytest.param(layout, id=layout, marks=pytest.mark.skipif(missing, reason="DeepSpeed is not installed"))


# About 140 KB of standard-library modules: text that stays put while our own code changes (a corpus
# of trainer/*.py moved every threshold-sensitive test with each edit of the trainer).
TINY_CORPUS = ("shlex.py", "fnmatch.py", "glob.py", "bisect.py", "string.py", "json/decoder.py", "json/encoder.py",
               "colorsys.py", "copy.py", "keyword.py", "queue.py", "sched.py", "stat.py", "numbers.py", "abc.py",
               "graphlib.py", "reprlib.py")


def write_tiny_corpus(directory: Path) -> Path:
    """A prepared byte-level data directory built from TINY_CORPUS."""
    from trainer.data import prepare
    from trainer.tokenizer import ByteTokenizer

    library = Path(sysconfig.get_paths()["stdlib"])
    prepare([library / name for name in TINY_CORPUS], ByteTokenizer(), directory, val_fraction=0.2)
    return directory


def run_train(args: list[str], nproc: int = 1, cwd: Path | None = None, check: bool = True,
              timeout: int = 300, env: dict | None = None, torchrun: tuple = (),
              real_torchrun: bool = False) -> subprocess.CompletedProcess:
    """The trainer on `nproc` ranks: its output, and a return code as torchrun's.

    By default each rank is a worker forked from a server that has torch and the trainer imported
    (tests/distributed.py), calling `launch.train.main(args)`. With `torchrun` options (elastic restarts)
    or `real_torchrun=True` (a test of what torchrun itself does), the real commands run instead:
    `python launch/train.py ...` for one process, `torchrun --nproc_per_node=N ...` for more."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    if torchrun or real_torchrun:
        if nproc == 1:
            command = [sys.executable, str(TRAIN), *args]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       f"--nproc_per_node={nproc}", *torchrun, str(TRAIN), *args]
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    else:
        from tests.distributed import run_ranks

        result = run_ranks(args, nproc=nproc, cwd=cwd, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def events(run_dir: Path, kind: str) -> list[dict]:
    """The `kind` events of metrics.jsonl (skipped_update, bad_window, rollback, preempted)."""
    records = (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r for r in records if r.get("event") == kind]


def step_losses(run_dir: Path) -> dict[int, float]:
    """Training loss by step from metrics.jsonl (a resumed run's later lines win)."""
    losses = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            losses[record["step"]] = record["loss"]
    return losses


def assert_same_losses(run_dir: Path, single: dict[int, float], steps: int) -> None:
    """Every step's training loss of the run in `run_dir` equals the single process's to 1e-5, and
    the single process trained (its last loss below its first)."""
    import pytest

    losses = step_losses(run_dir)
    assert sorted(losses) == sorted(single) == list(range(1, steps + 1))
    for step in single:
        assert losses[step] == pytest.approx(single[step], rel=1e-5), (step, losses[step], single[step])
    assert single[steps] < single[1]


class ReferenceRuns:
    """Single-process reference runs, each trained once per test session and keyed by (steps, extra):
    several test files compare their layouts against the same one. conftest.py installs one as
    REFERENCES for the session; `directory` makes the folder they live in when first needed."""

    def __init__(self, directory: Callable[[], Path]) -> None:
        self._directory = directory
        self._root: Path | None = None
        self._runs: dict[tuple, tuple[Path, Path]] = {}

    def get(self, steps: int, extra: tuple) -> tuple[Path, Path]:
        """(data directory, run directory) of the reference: trained on the first request."""
        key = (steps, tuple(extra))
        if key not in self._runs:
            if self._root is None:
                self._root = self._directory()
            root = self._root / f"reference_{len(self._runs)}"
            data = write_tiny_corpus(root / "data")
            run_train([*_reference_arguments(data, root / "runs", steps), *extra, "train.name=reference"], nproc=1)
            self._runs[key] = data, root / "runs" / "reference"
        return self._runs[key]


REFERENCES: ReferenceRuns | None = None


def _reference_arguments(data: Path, runs: Path, steps: int) -> list[str]:
    return [*TINY, *SHARDED_BATCH, f"data.dir={data}", f"train.runs_dir={runs}", f"train.steps={steps}",
            "precision.dtype=fp32", "train.eval_every=100"]


def single_process_reference(root: Path, steps: int, name: str = "single",
                             extra: tuple = ()) -> tuple[list[str], dict, Path]:
    """Tiny data, the arguments every layout of a comparison shares (fp32, the sharded batch), and the
    losses of one process trained on them: (arguments, losses by step, runs dir `root/runs`, which
    holds the reference as `name`). The session's reference for (steps, extra) and its data are
    shared by every caller (the data too: the corpus is read from files that may change meanwhile)."""
    runs = root / "runs"
    if REFERENCES is None:
        data = write_tiny_corpus(root / "data")
        common = _reference_arguments(data, runs, steps)
        run_train([*common, *extra, f"train.name={name}"], nproc=1)
    else:
        data, reference = REFERENCES.get(steps, tuple(extra))
        common = _reference_arguments(data, runs, steps)
        shutil.copytree(reference, runs / name)
    return common, step_losses(runs / name), runs

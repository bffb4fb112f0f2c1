"""Checkpoints with torch.distributed.checkpoint: each rank writes its own shards in parallel.

A checkpoint `step_<n>/` holds model and optimizer state, the training position (step, data
sampler, loss scale, the guards' window), every rank's RNG states, the resolved config and a
manifest of every file's size and checksum. It is written to `step_<n>.partial/`, fsynced, given its
manifest last and renamed once every rank has finished, so a crash mid-save never leaves a
directory that looks complete; a checkpoint damaged later is found by its manifest, moved aside to
`step_<n>.corrupt/` (kept, never deleted) and the previous good one is used. `save_checkpoint` does
all of it while the loop waits; `trainer/async_checkpoint.py` runs the same `write_checkpoint` in
the background from a copy of the state.

States are keyed by parameter name with no wrapper prefixes, whatever the backend (the engine's
`state_dict`), so a checkpoint saved under one layout loads under any other: FSDP on 4 ranks into DDP
on 2, DeepSpeed ZeRO-3 into FSDP, one process into many. The data position is the step alone, so a
different number of data-parallel ranks reads the same global batches in the same order.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from planner.errors import UserError
from trainer.manifest import MANIFEST, describe_files, fsync_dir, fsync_file, manifest_problem, write_manifest

if TYPE_CHECKING:   # a type hint only: saving needs no backend's code
    from trainer.engines import Engine

STEP_DIR = re.compile(r"^step_(\d+)$")
T = TypeVar("T")


def checkpoint_steps(root: Path) -> list[int]:
    """Completed checkpoint steps under `root`, oldest first."""
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir())


def resolve_resume(resume: str, root: Path, verify: bool = True) -> Optional[Path]:
    """'auto': the latest good checkpoint under root, if any (damaged ones are moved aside with a
    warning); 'none': start fresh; else a path, which must be good. Rank 0 decides (collective when
    a process group exists), so every rank loads the same checkpoint."""
    if resume == "none":
        return None
    chosen: list = [None]
    if not dist.is_initialized() or dist.get_rank() == 0:
        chosen[0] = _latest_good(root, verify) if resume == "auto" else _named(Path(resume), verify)
    if dist.is_initialized():
        dist.broadcast_object_list(chosen, src=0)
    if isinstance(chosen[0], str) and chosen[0].startswith("error:"):
        raise UserError(chosen[0].removeprefix("error:"))
    return Path(chosen[0]) if chosen[0] else None


def _named(path: Path, verify: bool) -> str:
    if not (path / ".metadata").is_file():
        return f"error:checkpoint.resume={path}: not a checkpoint directory (no .metadata)"
    problem = manifest_problem(path, verify) if (path / MANIFEST).is_file() else None
    return f"error:checkpoint.resume={path}: {problem}" if problem else str(path)


def _latest_good(root: Path, verify: bool) -> Optional[str]:
    for step in reversed(checkpoint_steps(root)):
        path = root / f"step_{step}"
        problem = manifest_problem(path, verify)
        if problem is None:
            return str(path)
        aside = root / f"step_{step}.corrupt"
        shutil.rmtree(aside, ignore_errors=True)
        path.rename(aside)
        print(f"[scaleplan] warning: {path} is damaged ({problem}): moved to {aside.name}, trying the one "
              f"before", flush=True)
    return None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class CheckpointError(RuntimeError):
    """A save that failed on some rank; raised on every rank, naming each rank's error."""


def save_checkpoint(root: Path, step: int, engine: Engine, train_state: dict, config_yaml: str, rank: int,
                    keep: int) -> Path:
    """Write step_<step>/ collectively (every rank calls this), synchronously, and prune to the newest `keep`."""
    model_state, optim_state = engine.state_dict()
    state = {"model": model_state, "optim": optim_state, "train": train_state}
    return write_checkpoint(root, step, state, rng_state(), config_yaml, rank, keep)


def write_checkpoint(root: Path, step: int, state: dict, rng: dict, config_yaml: str, rank: int, keep: int,
                     group: Optional[dist.ProcessGroup] = None,
                     before_commit: Optional[Callable[[int], None]] = None) -> Path:
    """The whole of a save, collective over `group` (None: the default group): DCP's files and this
    rank's RNG state into step_<step>.partial/, each rank's files checksummed in parallel, the manifest
    written last and fsynced, the rename, the pruning. `before_commit(step)` runs on every rank once
    DCP's files are written, before the rank reports its files for the manifest (fault drills). A failure on any rank is raised on every rank, so that
    none is left waiting in a collective the others will never reach."""
    final, partial = root / f"step_{step}", root / f"step_{step}.partial"
    everywhere(lambda: _prepare(partial, config_yaml) if rank == 0 else None, group, f"preparing {partial}")
    # DCP's file writer fsyncs what it writes, and raises any rank's failure on every rank.
    dcp.save(state, checkpoint_id=partial, process_group=group)
    if before_commit is not None:   # before this rank reports its files: without them there is no manifest
        before_commit(step)
    described = everywhere(lambda: _write_rng_and_describe(partial, rank, rng), group, f"writing {partial}")
    files = {name: entry for rank_files in described for name, entry in rank_files.items()}
    everywhere(lambda: _commit(root, step, files, keep) if rank == 0 else None, group, f"committing {final}")
    return final


def _prepare(partial: Path, config_yaml: str) -> None:
    # A stale .partial of this step (a crash mid-save) is removed before anyone writes: the other
    # ranks write only after `everywhere` has heard from this one.
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "config.yaml").write_text(config_yaml)


def _write_rng_and_describe(partial: Path, rank: int, rng: dict) -> dict[str, dict]:
    torch.save(rng, partial / f"rng_rank{rank}.pt")
    fsync_file(partial / f"rng_rank{rank}.pt")
    mine = [f"rng_rank{rank}.pt"] + [p.name for p in partial.glob(f"__{rank}_*.distcp")]
    if rank == 0:
        mine += [".metadata", "config.yaml"]
    return describe_files(partial, mine)


def _commit(root: Path, step: int, files: dict[str, dict], keep: int) -> None:
    """Manifest last, then the rename: a directory named step_<n> is complete or absent."""
    final, partial = root / f"step_{step}", root / f"step_{step}.partial"
    write_manifest(partial, files, step)
    fsync_dir(partial)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    fsync_dir(root)
    for old in checkpoint_steps(root)[:-keep]:
        shutil.rmtree(root / f"step_{old}", ignore_errors=True)
    # Saves run one at a time, so any other .partial is what a crash left behind.
    for stale in root.glob("step_*.partial"):
        shutil.rmtree(stale, ignore_errors=True)


def everywhere(work: Callable[[], T], group: Optional[dist.ProcessGroup], what: str) -> list[T]:
    """Run `work` on this rank and gather every rank's result; if it failed on any rank, raise
    CheckpointError on all of them (this rank's own exception chained, where it has one)."""
    try:
        outcome, own_error = (work(), None), None
    except Exception as error:
        outcome, own_error = (None, f"{type(error).__name__}: {error}"), error
    gathered: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, outcome, group=group)
    failures = [f"rank {r}: {error}" for r, (_, error) in enumerate(gathered) if error]
    if failures:
        raise CheckpointError(f"{what} failed ({'; '.join(failures)})") from own_error
    return [result for result, _ in gathered]


def load_checkpoint(path: Path, engine: Engine, train_state: dict, rank: int, model_yaml: str) -> dict:
    """Restore model and optimizer in place; return the saved train state (same keys as given).
    UserError (one line) for a checkpoint of another model or one that cannot be read."""
    saved_config = path / "config.yaml"
    if saved_config.is_file():
        differ = model_differences(saved_config.read_text(), model_yaml)
        if differ:
            raise UserError(f"{path} is a checkpoint of another model ({differ}): resume it with that model, "
                            f"or start afresh with checkpoint.resume=none and another train.name")
    # The engine's state dict has a tensor of the right shape and placement for everything saved
    # (torch's get_state_dict creates empty optimizer states first), so DCP loads into it.
    model_state, optim_state = engine.state_dict(for_loading=True)
    state = {"model": model_state, "optim": optim_state, "train": train_state}
    try:
        dcp.load(state, checkpoint_id=path)
    except Exception as error:   # DCP reports any unreadable shard as one long CheckpointException
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise UserError(f"cannot load {path}: {lines[-1] if lines else type(error).__name__}") from None
    engine.load_state_dict(state["model"], state["optim"])
    rng_file = path / f"rng_rank{rank}.pt"
    if rng_file.is_file():  # absent when resuming on more ranks than saved: keep fresh RNG there
        set_rng_state(torch.load(rng_file, weights_only=True))
    return state["train"]


def model_differences(saved_yaml: str, model_yaml: str) -> str:
    """'model.d_model 64 ≠ 32, ...' between a saved config and this run's `model` section, or ''."""
    import yaml

    saved = (yaml.safe_load(saved_yaml) or {}).get("model", {})
    current = yaml.safe_load(model_yaml) or {}
    shape = ("arch", "n_layers", "d_model", "n_heads", "n_kv_heads", "ffn_hidden", "vocab_size", "tie_embeddings",
             "bias", "qk_norm")
    return ", ".join(f"model.{key} {saved.get(key)} ≠ {current.get(key)}" for key in shape
                     if key in saved and saved.get(key) != current.get(key))

"""Checkpoints with torch.distributed.checkpoint: each rank writes its own shards in parallel.

A checkpoint `step_<n>/` holds model and optimizer state, the training position (step, data
sampler, loss scale), every rank's RNG states and the resolved config. It is written to
`step_<n>.partial/` and renamed once every rank has finished, so a crash mid-save never leaves a
directory that looks complete.

States are keyed by parameter name with no wrapper prefixes, whatever the backend (the engine's
`state_dict`), so a checkpoint saved under one layout loads under any other: FSDP on 4 ranks into DDP
on 2, DeepSpeed ZeRO-3 into FSDP, one process into many. The data position is the step alone, so a
different number of data-parallel ranks reads the same global batches in the same order.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from planner.errors import UserError
from trainer.engine import Engine

STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_steps(root: Path) -> list[int]:
    """Completed checkpoint steps under `root`, oldest first."""
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir())


def resolve_resume(resume: str, root: Path) -> Optional[Path]:
    """'auto': the latest checkpoint under root, if any; 'none': start fresh; else a path."""
    if resume == "none":
        return None
    if resume == "auto":
        steps = checkpoint_steps(root)
        return root / f"step_{steps[-1]}" if steps else None
    path = Path(resume)
    if not (path / ".metadata").is_file():
        raise UserError(f"checkpoint.resume={resume}: not a checkpoint directory (no .metadata)")
    return path


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(root: Path, step: int, engine: Engine, train_state: dict, config_yaml: str, rank: int,
                    keep: int) -> Path:
    """Write step_<step>/ collectively (every rank calls this) and prune to the newest `keep`."""
    final, partial = root / f"step_{step}", root / f"step_{step}.partial"
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    dist.barrier()
    model_state, optim_state = engine.state_dict()
    dcp.save({"model": model_state, "optim": optim_state, "train": train_state}, checkpoint_id=partial)
    torch.save(rng_state(), partial / f"rng_rank{rank}.pt")
    dist.barrier()
    if rank == 0:
        (partial / "config.yaml").write_text(config_yaml)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in checkpoint_steps(root)[:-keep]:
            shutil.rmtree(root / f"step_{old}", ignore_errors=True)
    dist.barrier()
    return final


def load_checkpoint(path: Path, engine: Engine, train_state: dict, rank: int) -> dict:
    """Restore model and optimizer in place; return the saved train state (same keys as given)."""
    # The engine's state dict has a tensor of the right shape and placement for everything saved
    # (torch's get_state_dict creates empty optimizer states first), so DCP loads into it.
    model_state, optim_state = engine.state_dict(for_loading=True)
    state = {"model": model_state, "optim": optim_state, "train": train_state}
    dcp.load(state, checkpoint_id=path)
    engine.load_state_dict(state["model"], state["optim"])
    rng_file = path / f"rng_rank{rank}.pt"
    if rng_file.is_file():  # absent when resuming on more ranks than saved: keep fresh RNG there
        set_rng_state(torch.load(rng_file, weights_only=True))
    return state["train"]

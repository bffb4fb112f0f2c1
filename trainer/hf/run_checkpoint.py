"""A run's checkpoint read whole on the CPU, in one process with no process group: whatever layout
wrote it (DDP, FSDP, DeepSpeed, TP, PP), torch.distributed.checkpoint stores each tensor under its
parameter name with its full shape, and DCP assembles the shards on load (trainer/checkpoint.py)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.distributed.checkpoint as dcp
import yaml
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from planner.errors import UserError
from trainer.checkpoint import checkpoint_steps
from trainer.config import ModelConfig
from trainer.manifest import manifest_problem


def find_checkpoint(run_dir: Path, step: Optional[int]) -> Path:
    """runs/<name>/checkpoints/step_<step> (the latest when `step` is None), checked against its manifest."""
    root = run_dir / "checkpoints"
    if not run_dir.is_dir():
        raise UserError(f"no run directory {run_dir}")
    steps = checkpoint_steps(root)
    if not steps:
        raise UserError(f"{run_dir} has no checkpoint to export (nothing under {root}): train it with a "
                        f"checkpoint, e.g. checkpoint.save_final=true")
    if step is not None and step not in steps:
        raise UserError(f"{run_dir} has no checkpoint of step {step}: it has steps {', '.join(map(str, steps))}")
    path = root / f"step_{steps[-1] if step is None else step}"
    problem = manifest_problem(path, True)
    if problem:
        raise UserError(f"{path} is damaged ({problem}): export another step with --step")
    return path


def saved_config(path: Path) -> dict:
    """The run's resolved config as its checkpoint recorded it (a plain tree)."""
    try:
        tree = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"{path}: cannot read its config.yaml ({error})") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("model"), dict):
        raise UserError(f"{path}/config.yaml has no model section")
    return tree


def saved_model_config(tree: dict) -> ModelConfig:
    return ModelConfig(**tree["model"])


def read_model_state(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's `model` state, full and on the CPU, by our parameter name."""
    metadata = FileSystemReader(str(path)).read_metadata()
    model = {}
    for key, entry in metadata.state_dict_metadata.items():
        # planner_data holds each flattened key's path in the nested state: ("model", "layers.0.attn.wqkv.weight")
        where = metadata.planner_data.get(key, ())
        if len(where) == 2 and where[0] == "model" and isinstance(entry, TensorStorageMetadata):
            model[where[1]] = torch.empty(entry.size, dtype=entry.properties.dtype)
    if not model:
        raise UserError(f"{path} holds no model state")
    try:
        with warnings.catch_warnings():   # one process, no group: what we mean, not a warning
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            dcp.load({"model": model}, checkpoint_id=str(path), no_dist=True)
    except Exception as error:   # DCP reports any unreadable shard as one long CheckpointException
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise UserError(f"cannot read {path}: {lines[-1] if lines else type(error).__name__}") from None
    return model

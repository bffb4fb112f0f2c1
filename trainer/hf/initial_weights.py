"""`model.init_from=hf:DIR`: a run starts from a local `transformers` folder's weights.

The whole model is loaded on every rank after `init_weights()` and before `parallelize()` shards
it, so every layout starts from the same weights, as it starts from the same seed otherwise.
`check_init_from` reads config.json only: launch/ calls it before any process group exists.
"""
from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from planner.errors import UserError
from trainer.config import ModelConfig
from trainer.hf.config_json import check_hf_config, read_hf_config
from trainer.hf.weights import from_hf

HF_SCHEME = "hf:"


def hf_folder(model: ModelConfig) -> Optional[Path]:
    """The folder `model.init_from` names, or None when the run starts from its seed."""
    return Path(model.init_from.removeprefix(HF_SCHEME)) if model.init_from else None


def check_init_from(model: ModelConfig) -> None:
    """UserError (one line, naming the `model.*` field) unless `model.init_from`'s folder holds
    weights our model with this section can take."""
    folder = hf_folder(model)
    if folder is None:
        return
    if not folder.is_dir():
        raise UserError(f"model.init_from={model.init_from}: no such folder")
    check_hf_config(model, read_hf_config(folder), folder)
    weight_files(folder)


def weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (one file, or shards listed by an index)."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as file:
            return dict.fromkeys(file.keys(), single)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"model.init_from: {index} is not a safetensors index (no weight_map)") from None
        return {name: folder / file for name, file in weight_map.items()}
    raise UserError(f"model.init_from: {folder} has no model.safetensors (pickled .bin weights are not read: "
                    f"loading them runs code); save it with safe_serialization=True")


@torch.no_grad()
def load_initial_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """Overwrite `model`'s initialized weights with `cfg.init_from`'s (a no-op without it)."""
    folder = hf_folder(cfg)
    if folder is None:
        return
    check_init_from(cfg)
    files = weight_files(folder)
    from safetensors import safe_open

    with ExitStack() as stack:
        opened = {path: stack.enter_context(safe_open(str(path), framework="pt")) for path in set(files.values())}
        ours = from_hf(lambda name: opened[files[name]].get_tensor(name), set(files), cfg)
        for name, param in model.state_dict(keep_vars=True).items():
            if name == "output.weight" and cfg.tie_embeddings:
                continue   # the embeddings' own tensor
            if name not in ours:
                raise UserError(f"model.init_from: {folder} lacks the weights of our {name}")
            if tuple(ours[name].shape) != tuple(param.shape):
                raise UserError(f"model.init_from: {folder}'s weights for our {name} are {tuple(ours[name].shape)}, "
                                f"model.* gives {tuple(param.shape)}")
            param.copy_(ours[name])

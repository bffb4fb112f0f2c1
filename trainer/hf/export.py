"""A run's checkpoint -> a `transformers` folder: config.json, model.safetensors (fp32),
generation_config.json and the tokenizer's files when the data was prepared with a Hugging Face
tokenizer. Written to a hidden sibling folder and renamed into place: never a half-written folder
under the final name."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from planner.errors import UserError
from trainer.config import ModelConfig
from trainer.hf.config_json import HF_CLASS, export_refusal, hf_config
from trainer.hf.run_checkpoint import find_checkpoint, read_model_state, saved_config, saved_model_config
from trainer.hf.tokenizer_files import copy_tokenizer, data_tokenizer
from trainer.hf.weights import to_hf


@dataclass
class Exported:
    checkpoint: Path
    out: Path
    hf_class: str
    parameters: int
    tokenizer: Optional[Path]   # where its files came from; None: none copied


def export_run(run_dir: Path, out: Path, step: Optional[int] = None, force: bool = False) -> Exported:
    """Export `run_dir`'s checkpoint of `step` (default: the latest) into the folder `out`."""
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} is not empty: give a new or empty folder, or --force to replace it")
    checkpoint = find_checkpoint(run_dir, step)
    tree = saved_config(checkpoint)
    model = saved_model_config(tree)
    refusal = export_refusal(model)
    if refusal:
        raise UserError(f"cannot export {checkpoint} as {HF_CLASS[model.arch]}: {refusal}")
    state = read_model_state(checkpoint)
    check_complete(state, model, checkpoint)
    tensors = to_hf(state, model)
    tokenizer = data_tokenizer(tree)
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write_folder(staging, tensors, model, tokenizer)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    staging.rename(out)
    return Exported(checkpoint, out, HF_CLASS[model.arch], sum(t.numel() for t in tensors.values()), tokenizer)


def write_folder(folder: Path, tensors: dict[str, torch.Tensor], model: ModelConfig, tokenizer: Optional[Path]) -> None:
    from safetensors.torch import save_file

    bos, eos = copy_tokenizer(tokenizer, folder) if tokenizer is not None else (None, None)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config(model, bos, eos), indent=2) + "\n")
    generation = {"_from_model_config": True, **{key: value for key, value in
                                                  (("bos_token_id", bos), ("eos_token_id", eos)) if value is not None}}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def check_complete(state: dict[str, torch.Tensor], model: ModelConfig, checkpoint: Path) -> None:
    """Every parameter of `model`, with its shape, is in the checkpoint's model state."""
    from trainer.model import Transformer

    with torch.device("meta"):
        expected = Transformer(model).state_dict()
    for name, tensor in expected.items():
        if name == "output.weight" and model.tie_embeddings:
            continue
        if name not in state:
            raise UserError(f"{checkpoint} lacks {name}: not a whole checkpoint of its config's model")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise UserError(f"{checkpoint}: {name} is {tuple(state[name].shape)}, its config's model has "
                            f"{tuple(tensor.shape)}")

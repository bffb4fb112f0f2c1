"""The config tree: pydantic v2 models loaded from YAML presets, overridden as `section.key=value`.

Validated once, before any process group exists. No torch import here, so the CLI and the planner's
commands can read and write training configs cheaply.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import yaml
from pydantic import model_validator

from planner.errors import UserError
from planner.user_files import read_text
# The sections live in config_sections.py; re-exported so `from trainer.config import GuardConfig` works.
from trainer.config_parallel import ParallelConfig  # noqa: F401
from trainer.config_sections import (  # noqa: F401
    CheckpointConfig, DataConfig, FaultConfig, GuardConfig, LogConfig, ModelConfig, OptimConfig,
    PrecisionConfig, Section, TrainConfig,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PRESETS_DIR = REPO_ROOT / "configs"


class Config(Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    optim: OptimConfig = OptimConfig()
    precision: PrecisionConfig = PrecisionConfig()
    parallel: ParallelConfig = ParallelConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    guards: GuardConfig = GuardConfig()
    faults: FaultConfig = FaultConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="before")
    @classmethod
    def _micro_batch_moved(cls, tree: object) -> object:
        """`train.micro_batch` (before the parallel section held the layout) still reads as
        `parallel.micro_batch`."""
        if not isinstance(tree, dict) or not isinstance(tree.get("train"), dict) \
                or "micro_batch" not in tree["train"]:
            return tree
        train = dict(tree["train"])
        value = train.pop("micro_batch")
        parallel = dict(tree.get("parallel") or {})
        if parallel.setdefault("micro_batch", value) != value:
            raise UserError(f"train.micro_batch={value} and parallel.micro_batch={parallel['micro_batch']} "
                             f"disagree: give parallel.micro_batch only")
        return {**tree, "train": train, "parallel": parallel}

    @model_validator(mode="after")
    def _batch_given(self) -> "Config":
        if self.train.global_batch is None and self.train.global_batch_tokens is None:
            raise ValueError("set train.global_batch (sequences) or train.global_batch_tokens")
        if self.train.global_batch_tokens is not None and self.train.global_batch_tokens % self.model.seq_len:
            raise ValueError(f"train.global_batch_tokens {self.train.global_batch_tokens} is not a multiple "
                             f"of model.seq_len {self.model.seq_len}")
        return self

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step."""
        if self.train.global_batch is not None:
            return self.train.global_batch
        return self.train.global_batch_tokens // self.model.seq_len

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.model.seq_len

    def grad_accum_steps(self, dp_size: int) -> int:
        """Micro-steps per optimizer step; raises UserError naming what to change if it does not divide."""
        per_micro_step = self.parallel.micro_batch * dp_size
        if self.global_batch % per_micro_step:
            raise UserError(
                f"global batch of {self.global_batch} sequences is not divisible by parallel.micro_batch "
                f"{self.parallel.micro_batch} × data-parallel size {dp_size} = {per_micro_step}: make the "
                f"global batch a multiple of {per_micro_step} or change parallel.micro_batch")
        return self.global_batch // per_micro_step

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise UserError(f"config {path} is a directory: give a YAML file, e.g. configs/default.yaml")
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    text = read_text(path, "config")
    if not text.strip():
        raise UserError(f"config {path} is empty: give a preset (configs/*.yaml), or leave out --config "
                        f"for the defaults")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path} is not a YAML mapping of config sections")
    return loaded


def parse_override(text: str) -> tuple[list[str], object]:
    """`section.key=value` -> (["section", "key"], value). The value is read as YAML (so 3, 1e-3,
    true, null work) and pydantic then checks it against the field's type."""
    if "=" not in text:
        raise UserError(f"override '{text}' is not of the form section.key=value")
    dotted, raw = text.split("=", 1)
    path = dotted.strip().split(".")
    if len(path) < 2 or not all(path):
        raise UserError(f"override '{text}' must name a section and a key, e.g. train.steps=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads 1e-3 as a string; leave it: pydantic's lax mode parses numeric strings.
    return path, value


def apply_overrides(tree: dict, overrides: Sequence[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = tree
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise UserError(f"override '{text}': '{key}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return tree


def load_config(path: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML preset (or the defaults), apply overrides and validate.

    Raises UserError or pydantic.ValidationError; launch/ turns either into a one-line message.
    """
    tree = _read_yaml(Path(path)) if path else {}
    tree = apply_overrides(tree, overrides)
    return Config.model_validate(tree)


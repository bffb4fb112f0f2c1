"""What a ladder directory holds: ladder.json, checked against the base config it was designed from,
and the runs tables the trainer appends final losses to."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Optional

from planner.errors import UserError


def config_hash(path: Path) -> str:
    """The base config as the trainer resolves it (comments and key order do not count)."""
    from trainer.config import load_config

    return hashlib.sha256(load_config(path).to_yaml().encode()).hexdigest()[:16]


def data_sources(config) -> Optional[list[tuple[str, float, float]]]:
    """(name, weight, training tokens) of each source of the config's prepared data (one for a plain
    `data.dir`, single-file or sharded); None when it is not prepared."""
    from trainer.token_data import TokenData

    try:
        data = TokenData.open(config.data)
    except UserError:
        return None
    return [(source.name, float(source.weight), float(source.train.size)) for source in data.sources]


def load_ladder(directory: Path, config: Optional[str]) -> dict:
    """ladder.json of `directory`; with `config`, refused unless the ladder was designed from it."""
    path = directory / "ladder.json"
    if not path.is_file():
        raise UserError(f"{directory} is not a ladder directory (no ladder.json): design one with `scaleplan ladder "
                        f"--out {directory}`")
    try:
        ladder = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON (line {error.lineno})") from None
    if config is not None and config_hash(Path(config)) != ladder.get("config_hash"):
        raise UserError(f"{directory} was designed from another config ({ladder.get('base_config')}), not {config}: "
                        f"design a new ladder for it")
    return ladder


def recorded_run(table: Path, name: str) -> Optional[tuple[float, float, float]]:
    """(N, D, final loss) of the last row named `name`, or None."""
    if not table.is_file():
        return None
    found = None
    with table.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("name") == name:
                try:
                    found = (float(row["N"]), float(row["D"]), float(row["loss"]))
                except (KeyError, TypeError, ValueError):
                    found = None
    return found


def finished_losses(table: Path) -> dict[str, float]:
    """name -> final loss of every run the trainer recorded (non-numbers read as NaN)."""
    if not table.is_file():
        return {}
    losses = {}
    with table.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                losses[row["name"]] = float(row["loss"])
            except (KeyError, TypeError, ValueError):
                losses[row.get("name", "?")] = float("nan")
    return losses

"""Read a table of finished training runs (N, D, loss) and reject bad rows with one clear line.

Accepted layouts, by header (case-insensitive, aliases below):
  N, D, loss [, C]      our `runs/runs.csv` (name,N,D,C,loss) and the chinchilla library's df.csv (C,N,D,loss)
  C, N, loss            tokens derived as D = C / (6 N)
  budget (optional)     the nominal compute budget an isoFLOP run belongs to (groups runs by budget)
Extra columns (a run name, an index) are ignored.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from planner.errors import UserError
from planner.user_files import read_text
from planner.scaling.law import FLOPS_PER_PARAM_TOKEN

MIN_RUNS = 5    # five parameters: fewer runs than that cannot pin down the law

# Column aliases, so the Epoch replication data ("Model Size", "Training FLOP") reads as is.
ALIASES = {
    "n": "N", "params": "N", "parameters": "N", "model size": "N", "model_size": "N",
    "d": "D", "tokens": "D", "data": "D",
    "c": "C", "flops": "C", "flop": "C", "compute": "C", "training flop": "C", "training_flop": "C",
    "loss": "loss", "final_loss": "loss", "val_loss": "loss",
    "budget": "budget", "flops_budget": "budget", "compute_budget": "budget",
}


@dataclass(frozen=True)
class Runs:
    """Finished runs as float arrays of equal length."""

    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    source: str = ""
    budget: Optional[np.ndarray] = None   # nominal isoFLOP budget per run, when the table names one

    @property
    def C(self) -> np.ndarray:
        return FLOPS_PER_PARAM_TOKEN * self.N * self.D

    def __len__(self) -> int:
        return len(self.loss)

    def subset(self, index: np.ndarray) -> "Runs":
        budget = None if self.budget is None else self.budget[index]
        return Runs(self.N[index], self.D[index], self.loss[index], self.source, budget)

    def without_highest_loss(self, count: int) -> "Runs":
        """Drop the `count` highest-loss runs (Besiroglu et al. 2024 drop five outliers this way)."""
        if count <= 0:
            return self
        keep = np.sort(np.argsort(self.loss, kind="stable")[: max(len(self) - count, 0)])
        return self.subset(keep)


def _canonical(header: list[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        key = ALIASES.get(name.strip().lower())
        if key is not None and key not in columns:
            columns[key] = index
    return columns


def _parse_cell(text: str, path: str, line: int, column: str) -> float:
    where = f"{path} row {line}, column {column}"
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: '{text.strip()}' is not a number") from None
    if math.isnan(value) or math.isinf(value):
        raise UserError(f"{where}: '{text.strip()}' is not a finite number")
    if value <= 0:
        raise UserError(f"{where}: {text.strip()} must be positive")
    return value


def read_runs(path: str | Path, min_runs: Optional[int] = MIN_RUNS) -> Runs:
    """Read and validate a runs CSV. Row numbers in errors are file line numbers (header = 1)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"runs file not found: {path}")
    rows = list(csv.reader(io.StringIO(read_text(path, "runs file"), newline="")))
    rows = [(line, row) for line, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not rows:
        raise UserError(f"{path} is empty: expected a header with N, D, loss (or C, N, loss)")
    _, header = rows[0]
    columns = _canonical(header)
    if "loss" not in columns or "N" not in columns or not ({"D", "C"} & columns.keys()):
        raise UserError(f"{path}: header {','.join(header)} must name N, loss and D or C "
                        f"(e.g. N,D,loss or C,N,loss)")
    wanted = [key for key in ("N", "D", "C", "loss", "budget") if key in columns]
    values: dict[str, list[float]] = {key: [] for key in wanted}
    for line, row in rows[1:]:
        if [cell.strip() for cell in row] == [cell.strip() for cell in header]:
            raise UserError(f"{path} row {line}: the header is repeated (two files concatenated?)")
        for key in wanted:
            index = columns[key]
            name = header[index].strip()
            if index >= len(row) or not row[index].strip():
                raise UserError(f"{path} row {line}, column {name}: missing value")
            values[key].append(_parse_cell(row[index], str(path), line, name))
    N = np.array(values["N"], dtype=float)
    loss = np.array(values["loss"], dtype=float)
    D = (np.array(values["D"], dtype=float) if "D" in values
         else np.array(values["C"], dtype=float) / (FLOPS_PER_PARAM_TOKEN * N))
    if min_runs is not None and len(loss) < min_runs:
        raise UserError(f"{path} has {len(loss)} runs; the 5-parameter law needs at least {min_runs}")
    budget = np.array(values["budget"], dtype=float) if "budget" in values else None
    return Runs(N=N, D=D, loss=loss, source=str(path), budget=budget)


def write_runs(path: str | Path, runs: Runs) -> None:
    """Write runs as name,N,D,C,loss (the trainer's runs table layout)."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "N", "D", "C", "loss"])
        for i, (n, d, c, loss) in enumerate(zip(runs.N, runs.D, runs.C, runs.loss)):
            writer.writerow([f"run{i}", repr(float(n)), repr(float(d)), repr(float(c)), repr(float(loss))])

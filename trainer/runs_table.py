"""The runs table `runs/runs.csv`: one row per finished run, read by `scaleplan fit`."""
from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ("name", "N", "D", "C", "loss")


def append_run(table: Path, name: str, n_params: int, tokens: int, loss: float) -> None:
    """Append (N, D, C = 6ND, final validation loss); writes the header when the file is new."""
    table.parent.mkdir(parents=True, exist_ok=True)
    new = not table.exists() or table.stat().st_size == 0
    with open(table, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(COLUMNS)
        writer.writerow((name, n_params, tokens, f"{6.0 * n_params * tokens:.6g}", f"{loss:.6f}"))

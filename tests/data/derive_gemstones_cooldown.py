"""Derive gemstones_cooldown.csv from the Gemstones suite's cooled-down runs (standard library only).

Input: wandb_dfs/wandb_df_for_fitting_cool_end.jsonl of github.com/mcleish7/gemstone-scaling-laws
(commit 5f420478f6057b0cbb4d13405fb10ca64675bccb): one JSON object per cooldown, with the model's
width, depth, parameter count, the tokens seen at the end of the cooldown and the validation loss there.

    python tests/data/derive_gemstones_cooldown.py RAW.jsonl > tests/data/gemstones_cooldown.csv
"""
from __future__ import annotations

import csv
import json
import sys
from typing import TextIO


def derive(raw_path: str, out: TextIO) -> int:
    """Write name,N,D,C,loss for every cooldown; return the number of rows written."""
    with open(raw_path) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    # Only the cooldown ends are finished runs: the learning rate has been decayed there. The
    # constant-rate checkpoints they branch from are not, so they are not read at all.
    records.sort(key=lambda r: (r["params_active_precise"], r["tokens"]))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "N", "D", "C", "loss"])
    for record in records:
        n, d = int(record["params_active_precise"]), int(record["tokens"])
        name = f"{record['width']}x{record['depth']}@{d / 1e9:.0f}B"
        writer.writerow([name, n, d, f"{6 * n * d:.6e}", repr(float(record["final_loss"]))])
    return len(records)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: derive_gemstones_cooldown.py wandb_df_for_fitting_cool_end.jsonl > gemstones_cooldown.csv")
    derive(sys.argv[1], sys.stdout)

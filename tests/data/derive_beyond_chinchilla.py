"""Derive beyond_chinchilla.csv from Sardana et al.'s 47 MPT-style training runs (standard library only).

Input: trainingresults.csv of github.com/nikhilsardana/beyond-chinchilla
(commit 190f70e365dc75037a2b3178609d00243f24b4b9): one row per run with its parameter count, tokens,
tokens per parameter and smoothed final training loss (plus downstream scores we do not use).

    python tests/data/derive_beyond_chinchilla.py trainingresults.csv > tests/data/beyond_chinchilla.csv
"""
from __future__ import annotations

import csv
import sys
from typing import TextIO


def derive(raw_path: str, out: TextIO) -> int:
    """Write name,N,D,C,loss for every run; return the number of rows written."""
    with open(raw_path, newline="") as handle:
        records = list(csv.DictReader(handle))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "N", "D", "C", "loss"])
    for record in records:
        n, d = int(float(record["Parameters"])), int(float(record["Tokens"]))
        # The source's "Tokens" is Parameters x Tokens/Params; check it so a column mix-up cannot pass.
        if d != round(n * float(record["Tokens/Params"])):
            raise ValueError(f"{record['Model Name']}: Tokens {d} != Parameters x Tokens/Params")
        name = f"{record['Model Name']}@{record['Tokens/Params']}tpp"
        writer.writerow([name, n, d, f"{6 * n * d:.6e}", repr(float(record["Smoothed Loss"]))])
    return len(records)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: derive_beyond_chinchilla.py trainingresults.csv > beyond_chinchilla.csv")
    derive(sys.argv[1], sys.stdout)

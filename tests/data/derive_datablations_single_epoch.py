"""Derive datablations_single_epoch.csv from Muennighoff et al.'s run table (standard library only).

Input: utils/parametric_fit.ipynb of github.com/huggingface/datablations
(commit 13701315b163f1c54642b94ad237b2699187c3ee). Its first code cell holds three dict literals:
NAMES_TO_VAL_LOSSES (run name -> final C4 validation loss), PARAMS_MAP (size prefix -> parameters)
and TOKENS_MAP (token strings that do not read as "<int>b<frac>" billions). A run name is
<size><tokens><unique tokens>[c4][v2][seedK][opt...], e.g. 2b855b55bc4seed1 = 2.8B parameters,
55B tokens of which 55B unique, C4, seed 1. We keep the runs that saw every token once (tokens ==
unique tokens): repeated data changes the law being fitted, and the paper's repeated runs are
what it studies, not what scaleplan forecasts.

    python tests/data/derive_datablations_single_epoch.py parametric_fit.ipynb > tests/data/datablations_single_epoch.csv
"""
from __future__ import annotations

import ast
import csv
import json
import re
import sys
from typing import TextIO

# Only plain C4 runs and their seed / second-version repeats: any other letters in a name mark a
# different data set or recipe (oscar, py, dedup, perplexity filters), and those runs are left out.
NAME = re.compile(r"(?P<body>[0-9bm]+)(?P<tags>(?:c4|v2|seed\d)*)")


def _tables(notebook_path: str) -> dict[str, dict]:
    """The three dict literals of the notebook's data cell, read without executing anything."""
    with open(notebook_path) as handle:
        cells = json.load(handle)["cells"]
    source = next("".join(c["source"]) for c in cells
                  if c["cell_type"] == "code" and "NAMES_TO_VAL_LOSSES" in "".join(c["source"]))
    tables = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            tables[node.targets[0].id] = ast.literal_eval(node.value)
    return tables


def _billions(text: str, tokens_map: dict[str, float]) -> float:
    """'55b' -> 55, '4b8' -> 4.8, '100m' -> 0.1 (through the source's own map)."""
    return tokens_map[text] if text in tokens_map else float(text.replace("b", ".").strip("."))


def _split(body: str, params_map: dict[str, float]) -> tuple[str, str] | None:
    """(size prefix, rest): the shortest prefix the source lists as a model size."""
    for end in range(2, len(body)):
        if body[:end] in params_map:
            return body[:end], body[end:]
    return None


def derive(notebook_path: str, out: TextIO) -> int:
    """Write name,N,D,C,loss for every single-epoch run; return the number of rows written."""
    tables = _tables(notebook_path)
    losses, params_map, tokens_map = (tables[k] for k in ("NAMES_TO_VAL_LOSSES", "PARAMS_MAP", "TOKENS_MAP"))
    rows = []
    for name, loss in losses.items():
        match = NAME.fullmatch(name)
        split = _split(match["body"], params_map) if match and loss > 0 else None   # 0 = unfinished
        if split is None:
            continue
        size, rest = split
        half = len(rest) // 2
        if len(rest) % 2 or rest[:half] != rest[half:]:      # tokens != unique tokens: repeated data
            continue
        n, d = params_map[size], _billions(rest[:half], tokens_map) * 1e9
        rows.append((6 * n * d, name, n, d, loss))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "N", "D", "C", "loss"])
    for c, name, n, d, loss in sorted(rows):
        writer.writerow([name, int(n), int(d), f"{c:.6e}", repr(float(loss))])
    return len(rows)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: derive_datablations_single_epoch.py parametric_fit.ipynb > datablations_single_epoch.csv")
    derive(sys.argv[1], sys.stdout)

"""Arguments and output shared by the scaling-law commands (fit, allocate, next, simulate)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Optional

from planner.grid import DEFAULT_SLICES, DEFAULT_STARTS, default_grid, load_grid
from planner.law import PRESETS
from planner.objectives import ASYMMETRIC_WEIGHT, HUBER_DELTA, OBJECTIVES, Objective
from planner.runs_io import Runs

if TYPE_CHECKING:
    from planner.fit import FitResult


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fit")
    group.add_argument("--objective", choices=OBJECTIVES, default="huber",
                       help="huber: Hoffmann et al.'s Huber on log loss (default); asymmetric: lower envelope; "
                            "mse-log: squared log error")
    group.add_argument("--delta", type=float, default=HUBER_DELTA, help="Huber delta (default 1e-3)")
    group.add_argument("--weight", type=float, default=ASYMMETRIC_WEIGHT,
                       help="asymmetric: weight of over-predictions (default 10)")
    group.add_argument("--grid-slices", type=int, default=DEFAULT_SLICES, metavar="K",
                       help=f"values per parameter of the initial-value grid, K^5 points (default {DEFAULT_SLICES})")
    group.add_argument("--grid", metavar="GRID.yaml",
                       help="per-parameter ranges: keys log_E/log_A/log_B (or E/A/B), alpha, beta; each a list "
                            "or {start, stop, num}")
    group.add_argument("--starts", type=int, default=DEFAULT_STARTS,
                       help=f"best grid points refined with quasi-Newton (default {DEFAULT_STARTS})")
    group.add_argument("--optimizer", choices=("BFGS", "L-BFGS-B"), default="BFGS",
                       help="refinement method; both use the exact gradient (default BFGS)")


def objective_from_args(args: argparse.Namespace) -> Objective:
    return Objective(kind=args.objective, delta=args.delta, weight=args.weight)


def fit_from_args(args: argparse.Namespace, runs: Runs) -> "FitResult":
    from planner.fit import fit_law

    grid = load_grid(args.grid, runs, args.grid_slices) if args.grid else default_grid(runs, args.grid_slices)
    return fit_law(runs, objective_from_args(args), grid=grid, n_starts=max(1, args.starts), method=args.optimizer)


def add_law_argument(parser: argparse.ArgumentParser, default: Optional[str] = "chinchilla") -> None:
    parser.add_argument("--law", default=default, metavar="LAW",
                        help=f"a preset ({', '.join(PRESETS)}) or a FIT.json written by `scaleplan fit --json`")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def print_json(payload: dict) -> None:
    print(json.dumps(payload, indent=2, default=_plain))


def _plain(value: object) -> object:
    """numpy scalars and arrays in JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_warnings(warnings: list[str]) -> None:
    """Warnings go to stderr so that --json output on stdout stays parseable."""
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)


def human(value: float) -> str:
    """1.23e+09 -> 1.23B; keeps tables readable."""
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}" if math.isfinite(value) else str(value)

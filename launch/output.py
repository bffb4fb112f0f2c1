"""What the commands print: JSON on stdout, warnings on stderr, human-sized numbers."""
from __future__ import annotations

import json
import math
import sys


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

"""`make gpu-check`: what a GPU machine should measure, in one call, printed as one table.

In order, within a time budget (default 450 s: under 8 minutes on one H100 or H200):
1. `pytest -m gpu` on tests/test_gpu*.py: bf16 steps, every data-parallel backend on NCCL, compiled blocks;
2. bench/gpu_mfu.py: our compiled bf16 step on the 1.24B llama-1b preset beside an eager minimal loop;
3. bench/memory_forecast.py's runs: llama-1b under DDP, FSDP and DeepSpeed ZeRO-2, GPT-2 124M under DDP.
Each figure sits beside the planner's forecast of the same config (the one the trainer writes to
plan.json): tokens/s, MFU, peak memory and the model-state bytes a rank holds, as "measured / forecast".

    make gpu-check                          # python bench/gpu_check.py
    GPU_CHECK_DRY=1 make gpu-check          # python bench/gpu_check.py --dry-run

The dry run goes through the same parts on the CPU with a tiny model and a couple of steps, so CI
knows they start: the GPU tests are collected and skipped, the figures are the CPU's (peak memory is
the process's resident set; forecasts are for h100-sxm, as the trainer plans on a CPU). Exit code 1
when a part fails.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_mfu import TINY_MODEL  # noqa: E402
from bench.memory_forecast import measure as measure_memory  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PYTEST_WORKERS = 4   # the GPU tests are small: four at a time share one GPU
MEMORY_RUNS = [("llama-1b", "ddp"), ("llama-1b", "fsdp"), ("llama-1b", "zero2"), ("gpt2-124m", "ddp")]
DRY_MEMORY_RUNS = [("llama-1b", "ddp"), ("llama-1b", "fsdp")]
LIMITS_S = {"pytest": 240, "gpu_mfu": 240, "memory": 90}   # each part's own ceiling within the budget
HEADERS = ("part", "run", "tokens/s", "MFU", "peak GiB", "states GiB", "result")


@dataclass
class Row:
    part: str
    run: str
    ok: bool
    result: str
    figures: dict = field(default_factory=dict)   # column -> (measured, forecast)


def pair(measured, forecast, kind: str) -> str:
    """A cell: measured / forecast, '-' for what is unknown."""
    def one(value):
        if value is None:
            return "-"
        return {"rate": f"{value:,.0f}", "share": f"{value:.1%}", "gib": f"{value:.2f}"}[kind]
    return f"{one(measured)} / {one(forecast)}"


def gpu_test_files() -> list[str]:
    """Where the tests marked gpu live (tests/test_gpu_check.py holds every gpu mark to these files):
    collecting only them spares the dry run the import of every other test module."""
    return sorted(str(path) for path in (REPO / "tests").glob("test_gpu*.py"))


def run_pytest(dry_run: bool, timeout: float) -> Row:
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *gpu_test_files()]
    command += [] if dry_run else ["-n", str(PYTEST_WORKERS)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    counts = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", result.stdout.splitlines()[-1]
                        if result.stdout.strip() else "")
    summary = ", ".join(f"{n} {what}" for n, what in counts if what != "deselected") or "no summary"
    return Row("pytest -m gpu", "tests marked gpu", result.returncode == 0, summary)


def run_gpu_mfu(dry_run: bool, timeout: float, scratch: Path) -> list[Row]:
    out = scratch / "gpu_mfu.json"
    command = [sys.executable, str(REPO / "bench" / "gpu_mfu.py"), "--json", str(out)]
    command += ["--dry-run"] if dry_run else []
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if not out.exists():
        return [Row("gpu_mfu", "llama-1b", False, last_line(result.stderr))]
    figures = json.loads(out.read_text())
    forecast = figures["forecast"]
    rows = []
    for label, text in (("ours", "ours, " + ("compiled" if figures["compiled"] else "not compiled")),
                        ("reference", "reference, eager")):
        own = figures[label]
        shown = (forecast["tokens_per_s"], forecast["mfu"]) if label == "ours" else (None, None)
        rows.append(Row("gpu_mfu", f"{figures['model'].split(',')[0]} {text}", figures["ok"],
                        "losses fall" if figures["ok"] else "losses WRONG",
                        {"tokens/s": pair(own["tokens_per_s"], shown[0], "rate"),
                         "MFU": pair(own["mfu"], shown[1], "share")}))
    rows[0].result += f"; {figures['ratio']:.2f}× the reference"
    rows[0].figures["device"] = figures["device"]
    return rows


def run_memory(preset: str, backend: str, dry_run: bool, timeout: float, scratch: Path) -> Row:
    if backend.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        return Row("memory_forecast", f"{preset} {backend}", True, "skipped: DeepSpeed is not installed")
    row = measure_memory(preset, backend, 3, scratch, TINY_MODEL if dry_run else (), timeout=timeout)
    if "error" in row:
        return Row("memory_forecast", f"{preset} {backend}", False, row["error"])
    ratio = row["peak"] / row["forecast_peak"]
    return Row("memory_forecast", f"{preset} {backend}", True, f"peak {ratio:.2f}× forecast",
               {"tokens/s": pair(row["tokens_per_s"], row["forecast_tokens_per_s"], "rate"),
                "MFU": pair(row["mfu"], row["forecast_mfu"], "share"),
                "peak GiB": pair(row["peak"], row["forecast_peak"], "gib"),
                "states GiB": pair(row["states"], row["forecast_states"], "gib")})


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:120] if lines else "failed without a message"


def timed(part: str, run: str, deadline: float, limit: float, action) -> list[Row]:
    """`action(timeout)`'s rows, with the seconds it took; a row saying why when out of time."""
    timeout = min(limit, deadline - time.monotonic())
    if timeout < 10:
        return [Row(part, run, False, "not run: the time budget is spent")]
    start = time.monotonic()
    try:
        rows = action(timeout)
    except subprocess.TimeoutExpired:
        return [Row(part, run, False, f"timed out after {timeout:.0f} s")]
    rows = rows if isinstance(rows, list) else [rows]
    rows[-1].result += f" ({time.monotonic() - start:.0f} s)"
    return rows


def table(rows: list[Row]) -> str:
    cells = [HEADERS] + [(r.part, r.run, r.figures.get("tokens/s", ""), r.figures.get("MFU", ""),
                          r.figures.get("peak GiB", ""), r.figures.get("states GiB", ""),
                          ("" if r.ok else "FAILED: ") + r.result) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", default=os.environ.get("GPU_CHECK_DRY") == "1",
                        help="CPU, tiny models, a couple of steps (also GPU_CHECK_DRY=1)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="time for all parts together")
    args = parser.parse_args()
    start = time.monotonic()
    deadline = start + args.budget_s
    runs = DRY_MEMORY_RUNS if args.dry_run else MEMORY_RUNS
    with tempfile.TemporaryDirectory() as scratch:
        rows = timed("pytest -m gpu", "tests marked gpu", deadline, LIMITS_S["pytest"],
                     lambda t: run_pytest(args.dry_run, t))
        rows += timed("gpu_mfu", "llama-1b", deadline, LIMITS_S["gpu_mfu"],
                      lambda t: run_gpu_mfu(args.dry_run, t, Path(scratch)))
        for preset, backend in runs:
            rows += timed("memory_forecast", f"{preset} {backend}", deadline, LIMITS_S["memory"],
                          lambda t, p=preset, b=backend: run_memory(p, b, args.dry_run, t, Path(scratch)))
    device = next((r.figures.pop("device") for r in rows if "device" in r.figures), "device unknown")
    mode = "DRY RUN on the CPU with tiny models (forecasts for h100-sxm)" if args.dry_run else "one GPU"
    print(f"gpu-check: {device}, {mode}; {time.monotonic() - start:.0f} s in all; cells are measured / forecast")
    print(table(rows))
    failed = [r for r in rows if not r.ok]
    print(f"gpu-check: {'all parts passed' if not failed else f'{len(failed)} part(s) FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

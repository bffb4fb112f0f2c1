"""Peak GPU memory of real training steps under each data-parallel backend, beside the planner's
forecast for the same run (plan.json, written by the trainer itself).

For each preset and backend it trains a few steps on synthetic tokens with `launch/train.py` (one
process, so every rank-count-dependent term is at its largest), then prints the measured peak
(`torch.cuda.max_memory_allocated`) and model-state bytes (parameters, gradients and optimizer states
the rank holds, counted by the trainer) against the planner's `detailed` forecast of both, as ratios.

    python bench/memory_forecast.py [--presets gpt2-124m llama-1b] [--backends ddp fsdp ...] [--steps 3]

Needs a CUDA GPU (the forecast is of GPU memory); DeepSpeed for its rows.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BACKENDS = {
    "ddp": ["parallel.backend=ddp"],
    "fsdp": ["parallel.backend=fsdp", "parallel.zero_stage=3"],
    "fsdp_zero2": ["parallel.backend=fsdp", "parallel.zero_stage=2"],
    "zero1": ["parallel.backend=deepspeed", "parallel.zero_stage=1"],
    "zero2": ["parallel.backend=deepspeed", "parallel.zero_stage=2"],
    "zero3": ["parallel.backend=deepspeed", "parallel.zero_stage=3"],
}
GIB = 2**30


def synthetic_data(directory: Path, vocab_size: int, tokens: int = 2_000_000) -> Path:
    """Random token ids in the layout `scaleplan prepare` writes (memory does not depend on the text)."""
    dtype = np.uint16 if vocab_size <= 2**16 else np.uint32
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", tokens), ("val", tokens // 10)):
        rng.integers(0, vocab_size, size=size, dtype=np.int64).astype(dtype).tofile(directory / f"{split}.bin")
    meta = {"tokenizer": "byte", "vocab_size": vocab_size, "dtype": np.dtype(dtype).name,
            "tokens": {"train": tokens, "val": tokens // 10}, "files": 0, "source": "synthetic"}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def measure(preset: str, backend: str, steps: int, scratch: Path, extra: Sequence[str] = (),
            timeout: float | None = None) -> dict:
    """One run of `preset` under `backend` (`extra`: overrides after the bench's own, e.g. make
    gpu-check's CPU dry run; `timeout`: seconds, then subprocess.TimeoutExpired)."""
    sys.path.insert(0, str(REPO))
    from trainer.config import load_config

    cfg = load_config(REPO / "configs" / f"{preset}.yaml", extra)
    data = synthetic_data(scratch / f"data-{cfg.model.vocab_size}", cfg.model.vocab_size)
    name = f"{preset}-{backend}"
    args = [sys.executable, str(REPO / "launch" / "train.py"), "--config", str(REPO / "configs" / f"{preset}.yaml"),
            f"data.dir={data}", f"train.runs_dir={scratch / 'runs'}", f"train.name={name}",
            f"train.steps={steps}", f"train.global_batch={2 * cfg.parallel.micro_batch}", "train.global_batch_tokens=null",
            "train.eval_every=1000000", "train.eval_batches=1", "train.sample_tokens=0", "log.every=1",
            "log.progress=false", "log.tensorboard=false", "checkpoint.save_final=false", *BACKENDS[backend], *extra]
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            timeout=timeout)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["?"])[-1][:120]}
    run_dir = scratch / "runs" / name
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    plan = json.loads((run_dir / "plan.json").read_text())
    memory = plan["layouts"][0]["memory_gib"]
    reserve = memory["breakdown"]["reserve"]
    return {"peak": last["peak_mem_gib"], "states": last["model_states_gib"],
            # the forecast's reserve (CUDA context, fragmentation) is not in max_memory_allocated
            "forecast_peak": memory["detailed"] - reserve, "forecast_states": plan["model_states_gib"],
            "tokens_per_s": last["tokens_per_s"], "mfu": last["mfu"],
            "forecast_tokens_per_s": plan["layouts"][0]["tokens_per_s"], "forecast_mfu": plan["layouts"][0]["mfu"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["gpt2-124m", "llama-1b"])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("memory_forecast: needs a CUDA GPU", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name(0)}, one process, bf16 presets as configured; GiB")
    print(f"{'run':24s} {'peak':>7s} {'forecast':>8s} {'ratio':>6s}   {'states':>7s} {'forecast':>8s} {'ratio':>6s}"
          f"  {'tokens/s':>9s} {'MFU':>5s}")
    with tempfile.TemporaryDirectory() as scratch:
        for preset in args.presets:
            for backend in args.backends:
                row = measure(preset, backend, args.steps, Path(scratch))
                label = f"{preset} {backend}"
                if "error" in row:
                    print(f"{label:24s} failed: {row['error']}")
                    continue
                mfu = f"{row['mfu']:.0%}" if row["mfu"] else "-"
                print(f"{label:24s} {row['peak']:7.2f} {row['forecast_peak']:8.2f} "
                      f"{row['peak'] / row['forecast_peak']:6.2f}   {row['states']:7.2f} "
                      f"{row['forecast_states']:8.2f} {row['states'] / row['forecast_states']:6.2f}"
                      f"  {row['tokens_per_s']:9,.0f} {mfu:>5s}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

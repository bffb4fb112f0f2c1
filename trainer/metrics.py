"""Run metrics: one JSON line per log step in metrics.jsonl, the same scalars as TensorBoard events,
and the model-FLOP utilization against the catalog's peak for the GPU in use."""
from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Optional

import torch

from planner.hardware import identify


def peak_flops_per_device(device: torch.device, dtype: str) -> Optional[float]:
    """Dense peak FLOP/s of this device in the compute dtype; None where unknown (CPUs, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    gpu = identify(torch.cuda.get_device_name(device))
    if gpu is None:
        return None
    return {"bf16": gpu.peak_bf16, "fp16": gpu.peak_fp16, "fp32": gpu.peak_fp32}[dtype]


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated GPU memory, or this process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


class MetricsWriter:
    """Writes on rank 0 only; a no-op elsewhere so callers need not branch."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self._file = open(run_dir / "metrics.jsonl", "a") if enabled else None
        self._tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir))

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        if self._tb:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self._tb:
            self._tb.close()

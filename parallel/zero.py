"""DeepSpeed ZeRO stages 1-3 as a second backend: its JSON config, generated from ours. The engine
that runs it (DeepSpeed owns the step, accumulation, clipping and loss scaling) is
`trainer/engines/deepspeed_engine.py`, beside the torch engines."""
from __future__ import annotations

import math
from typing import Optional

import torch


def deepspeed_config(stage: int, micro_batch: int, grad_accum: int, dp_size: int, grad_clip: float,
                     dtype: str, initial_loss_scale: float, cpu_offload: bool, bucket_elements: int,
                     overrides: Optional[dict] = None) -> dict:
    """DeepSpeed's JSON config for our run; `overrides` (parallel.deepspeed) are merged in last."""
    zero = {"stage": stage, "contiguous_gradients": True, "overlap_comm": stage >= 2,
            "reduce_bucket_size": bucket_elements}
    if stage <= 2:
        zero["allgather_bucket_size"] = bucket_elements
    if cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    config = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * dp_size,
        "gradient_clipping": grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,   # our torch AdamW (fused on CUDA)
        "steps_per_print": 2**31 - 1,              # we log; DeepSpeed stays quiet
        "wall_clock_breakdown": False,
    }
    if dtype == "bf16":
        config["bf16"] = {"enabled": True}
    elif dtype == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0,   # 0: dynamic
                          "initial_scale_power": int(round(math.log2(initial_loss_scale)))}
    return _merge(config, overrides or {})


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged

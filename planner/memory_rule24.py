"""The 24-bytes-per-parameter rule of thumb, sharded.

Mixed-precision Adam holds 16 bytes of model states per parameter (Rajbhandari et al. 2020, ZeRO:
fp32 weights 4, gradients 4, two Adam moments 8); the rule adds 8 bytes per parameter for
activations and temporaries. Each part is divided by the data-parallel size where the sharding
stage shards it (ZeRO-1: optimizer; ZeRO-2: + gradients; ZeRO-3/FSDP: + weights), and the
parameters a GPU holds are the model's divided by TP × PP.
"""
from __future__ import annotations

import numpy as np

BYTES_PER_PARAM = {"weights": 4.0, "gradients": 4.0, "optimizer": 8.0, "activations": 8.0}
# The sharding stage from which each part is divided by the data-parallel size (never for activations).
SHARDED_FROM_STAGE = {"weights": 3, "gradients": 2, "optimizer": 1, "activations": 99}


def rule24_breakdown(total_params: float, tp, pp, dp, zero_stage) -> dict[str, np.ndarray]:
    """Bytes per GPU of each part under the 24-byte rule (arrays broadcast over layouts)."""
    tp, pp, dp, zero_stage = (np.asarray(x) for x in (tp, pp, dp, zero_stage))
    held = total_params / (tp * pp)
    return {part: held * per_param / np.where(zero_stage >= SHARDED_FROM_STAGE[part], dp, 1)
            for part, per_param in BYTES_PER_PARAM.items()}


def rule24_bytes(total_params: float, tp, pp, dp, zero_stage) -> np.ndarray:
    """Total bytes per GPU under the 24-byte rule."""
    return sum(rule24_breakdown(total_params, tp, pp, dp, zero_stage).values())

"""The parametric scaling law L(N, D) = E + A / N^alpha + B / D^beta, its presets and the
closed-form compute-optimal allocation under C = 6 N D (Hoffmann et al. 2022, eq. 4 and App. D.2).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from planner.errors import UserError
from planner.user_files import read_text

FLOPS_PER_PARAM_TOKEN = 6.0     # C ≈ 6 N D: forward 2, backward 4 FLOPs per weight per token (Kaplan et al. 2020)
PARAM_NAMES = ("E", "A", "B", "alpha", "beta")

ArrayLike = Union[float, np.ndarray]


@dataclass(frozen=True)
class ScalingLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta.

    `tokens_per_param`, when set, overrides the law's own optimum with a fixed ratio D = r N
    (the "20 tokens per parameter" rule of thumb); the loss is still predicted with E..beta.
    `isoflop`, when set (exponent a, log_coefficient c: N_opt = e^c C^a), overrides it with an
    isoFLOP fit's power law (`scaleplan fit --method isoflop --out`).
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = "fit"
    tokens_per_param: Optional[float] = None
    isoflop: Optional[tuple[float, float]] = None

    def params(self) -> dict[str, float]:
        return {key: float(getattr(self, key)) for key in PARAM_NAMES}

    def predict(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        """Predicted loss at N parameters trained on D tokens."""
        return self.E + self.A * np.power(N, -self.alpha) + self.B * np.power(D, -self.beta)

    def optimal_allocation(self, C: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """(N_opt, D_opt) minimizing L subject to 6 N D = C.

        Setting dL/dN = 0 along D = C / (6N) gives alpha A / N^alpha = beta B / D^beta, hence
        N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = G^-1 (C/6)^(alpha/(alpha+beta)) with
        G = (alpha A / (beta B))^(1/(alpha+beta)).
        """
        C = np.asarray(C, dtype=float)
        if self.isoflop is not None:
            exponent, log_coefficient = self.isoflop
            N = np.exp(log_coefficient) * C ** exponent
            return _scalar(N), _scalar(C / (FLOPS_PER_PARAM_TOKEN * N))
        if self.tokens_per_param is not None:
            N = np.sqrt(C / (FLOPS_PER_PARAM_TOKEN * self.tokens_per_param))
            return _scalar(N), _scalar(self.tokens_per_param * N)
        exponent_sum = self.alpha + self.beta
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / exponent_sum)
        half_budget = C / FLOPS_PER_PARAM_TOKEN
        N = G * half_budget ** (self.beta / exponent_sum)
        D = half_budget ** (self.alpha / exponent_sum) / G
        return _scalar(N), _scalar(D)

    def optimal_tokens_per_param(self, C: float) -> float:
        N, D = self.optimal_allocation(C)
        return float(D / N)

    def to_json(self) -> dict:
        out = {"params": self.params(), "name": self.name}
        if self.tokens_per_param is not None:
            out["tokens_per_param"] = self.tokens_per_param
        if self.isoflop is not None:
            out["allocation"] = {"method": "isoflop", "exponent": self.isoflop[0], "log_coefficient": self.isoflop[1]}
        return out


def _scalar(x: np.ndarray) -> ArrayLike:
    return float(x) if np.ndim(x) == 0 else x


# Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", Approach 3 (eq. 10),
# unrounded values from their fit as quoted by Besiroglu et al. 2024.
CHINCHILLA = ScalingLaw(E=1.69337, A=406.401, B=410.723, alpha=0.33917, beta=0.28491, name="chinchilla")
# Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", Table 1 (their estimate).
EPOCH2024 = ScalingLaw(E=1.817, A=482.01, B=2085.43, alpha=0.3478, beta=0.3659, name="epoch2024")
# The rule of thumb from Hoffmann et al. 2022 (Table 3: ~20 tokens per parameter); loss from their law.
TOKENS20 = ScalingLaw(**CHINCHILLA.params(), name="tokens20", tokens_per_param=20.0)

PRESETS: dict[str, ScalingLaw] = {law.name: law for law in (CHINCHILLA, EPOCH2024, TOKENS20)}


def law_from_dict(data: dict, name: str = "fit") -> ScalingLaw:
    """A law from `{"params": {...}}` (what `scaleplan fit --json` prints) or a flat mapping."""
    params = data.get("params", data) if isinstance(data, dict) else None
    if not isinstance(params, dict):
        raise UserError(f"{name}: expected a JSON object with 'params' {{E, A, B, alpha, beta}}")
    missing = [key for key in PARAM_NAMES if key not in params]
    if missing:
        raise UserError(f"{name}: law is missing parameter(s) {', '.join(missing)}")
    values = {}
    for key in PARAM_NAMES:
        try:
            values[key] = float(params[key])
        except (TypeError, ValueError):
            raise UserError(f"{name}: parameter {key}={params[key]!r} is not a number") from None
        if not np.isfinite(values[key]) or values[key] <= 0:
            raise UserError(f"{name}: parameter {key}={params[key]!r} must be a positive finite number")
    return ScalingLaw(**values, name=name, tokens_per_param=data.get("tokens_per_param"),
                      isoflop=_isoflop_allocation(data.get("allocation"), name))


def _isoflop_allocation(allocation, name: str) -> Optional[tuple[float, float]]:
    """An isoFLOP fit's N_opt = e^c C^a, from a fit JSON's `allocation` (absent: the law's own)."""
    if allocation is None:
        return None
    try:
        exponent, log_coefficient = float(allocation["exponent"]), float(allocation["log_coefficient"])
    except (TypeError, KeyError, ValueError):
        raise UserError(f"{name}: 'allocation' needs numeric exponent and log_coefficient") from None
    if not (np.isfinite(exponent) and np.isfinite(log_coefficient) and 0 < exponent < 1):
        raise UserError(f"{name}: allocation exponent {exponent:g} must lie in (0, 1)")
    return exponent, log_coefficient


def load_law(spec: str) -> ScalingLaw:
    """A preset name (chinchilla, epoch2024, tokens20) or the path of a fit JSON file."""
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--law '{spec}' is neither a preset ({', '.join(PRESETS)}) nor an existing JSON file")
    try:
        data = json.loads(read_text(path, "law file"))
    except json.JSONDecodeError as error:
        raise UserError(f"{spec} is not valid JSON (line {error.lineno})") from None
    return law_from_dict(data, name=str(path))


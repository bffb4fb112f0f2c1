"""Compute budgets in any unit, and the allocation of a budget to (N, D), optionally when unique
data is scarce (the data-constrained law of Muennighoff et al. 2023)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from planner.errors import UserError
from planner.hardware import CATALOG
from planner.scaling.law import FLOPS_PER_PARAM_TOKEN, ScalingLaw

PF_DAY = 1e15 * 86400.0           # one petaFLOP/s sustained for a day (Kaplan et al. 2020)
# Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", eq. 5: repeated tokens decay
# in value with this half-life-like constant, in epochs beyond the first.
REPEAT_DECAY_EPOCHS = 15.39       # R_D*
SAFE_EPOCHS = 4.0                 # same paper: up to ~4 epochs cost almost nothing versus fresh data


def budget_flops(flops: Optional[float] = None, pf_days: Optional[float] = None,
                 gpu_hours: Optional[float] = None, gpu: Optional[str] = None,
                 mfu: Optional[float] = None) -> float:
    """Exactly one of FLOPs, PF-days, or GPU-hours (with the GPU id and the model FLOP utilisation)."""
    given = [name for name, value in (("--flops", flops), ("--pf-days", pf_days), ("--gpu-hours", gpu_hours))
             if value is not None]
    if len(given) != 1:
        raise UserError("give the budget exactly once: --flops C, --pf-days X, or --gpu-hours H --gpu ID --mfu F"
                        + (f" (got {', '.join(given)})" if given else ""))
    if flops is not None:
        value = flops
    elif pf_days is not None:
        value = pf_days * PF_DAY
    else:
        if gpu is None or mfu is None:
            raise UserError("--gpu-hours needs --gpu ID and --mfu F (model FLOP utilisation, e.g. 0.4)")
        if gpu not in CATALOG:
            raise UserError(f"unknown --gpu '{gpu}': choose one of {', '.join(sorted(CATALOG))}")
        if not 0 < mfu <= 1:
            raise UserError(f"--mfu must lie in (0, 1], got {mfu}")
        value = gpu_hours * 3600.0 * CATALOG[gpu].peak_bf16 * mfu
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"the budget must be a positive number of FLOPs, got {value:g}")
    return float(value)


def effective_tokens(D: float, unique_tokens: float) -> float:
    """D' = U + U R* (1 - exp(-R / R*)), R = D/U - 1 repeated epochs (Muennighoff et al. 2023)."""
    if D <= unique_tokens:
        return D
    repeats = D / unique_tokens - 1.0
    return unique_tokens * (1.0 + REPEAT_DECAY_EPOCHS * (1.0 - math.exp(-repeats / REPEAT_DECAY_EPOCHS)))


@dataclass
class Allocation:
    C: float
    N: float
    D: float
    loss: float
    law: str
    unique_tokens: Optional[float] = None
    effective_tokens: Optional[float] = None
    warnings: list[str] = field(default_factory=list)
    epochs_per_source: dict[str, float] = field(default_factory=dict)   # a mixture's epochs over each source

    @property
    def tokens_per_param(self) -> float:
        return self.D / self.N

    @property
    def epochs(self) -> Optional[float]:
        return None if self.unique_tokens is None else self.D / self.unique_tokens

    def to_json(self) -> dict:
        out = {"C": self.C, "N": self.N, "D": self.D, "tokens_per_param": self.tokens_per_param,
               "loss": self.loss, "law": self.law}
        if self.unique_tokens is not None:
            out.update(unique_tokens=self.unique_tokens, epochs=self.epochs, effective_tokens=self.effective_tokens)
        if self.epochs_per_source:
            out["epochs_per_source"] = self.epochs_per_source
        return out


def mixture_effective_tokens(D: float, sources: Sequence[tuple[str, float, float]]) -> float:
    """D tokens drawn from sources (name, share of the draws, unique tokens): each source's tokens
    count at their own decayed value, so a small source repeated many times is worth less."""
    total = sum(share for _, share, _ in sources)
    return sum(effective_tokens(D * share / total, unique) for _, share, unique in sources)


def allocate(law: ScalingLaw, C: float, unique_tokens: Optional[float] = None,
             sources: Optional[Sequence[tuple[str, float, float]]] = None) -> Allocation:
    """The loss-minimising (N, D) with 6 N D = C; with `unique_tokens`, D counts repeated data at
    its decayed value D' and the optimum moves towards bigger models and fewer epochs. With `sources`
    (a mixture: name, weight, unique tokens), each source's share of D is decayed on its own."""
    N, D = law.optimal_allocation(C)
    if sources:
        unique_tokens = sum(unique for _, _, unique in sources)
        if any(not unique > 0 for _, weight, unique in sources if weight > 0):
            raise UserError("a source of the mixture has no training tokens: prepare it first")
    if unique_tokens is None:
        return Allocation(C=C, N=N, D=D, loss=float(law.predict(N, D)), law=law.name)
    if not math.isfinite(unique_tokens) or unique_tokens <= 0:
        raise UserError(f"--unique-tokens must be positive, got {unique_tokens}")
    used = [s for s in sources or () if s[1] > 0]

    def worth(D: float) -> float:   # what D tokens are worth in fresh ones: one source, or the mixture's sum
        return mixture_effective_tokens(D, used) if used else effective_tokens(D, unique_tokens)

    if law.tokens_per_param is None and worth(D) < D:
        from scipy.optimize import minimize_scalar

        def constrained_loss(log_N: float) -> float:
            n = math.exp(log_N)
            return float(law.predict(n, worth(C / (FLOPS_PER_PARAM_TOKEN * n))))

        # The constrained optimum lies between the unconstrained N and the N that sees U once
        # times a generous margin; Brent's bounded search on log N is exact to ~1e-9.
        low, high = math.log(N) - 1.0, math.log(C / (FLOPS_PER_PARAM_TOKEN * unique_tokens)) + 3.0
        best = minimize_scalar(constrained_loss, bounds=(low, high), method="bounded", options={"xatol": 1e-9})
        N = math.exp(best.x)
        D = C / (FLOPS_PER_PARAM_TOKEN * N)
    D_effective = worth(D)
    allocation = Allocation(C=C, N=N, D=D, loss=float(law.predict(N, D_effective)), law=law.name,
                            unique_tokens=unique_tokens, effective_tokens=D_effective)
    total_weight = sum(weight for _, weight, _ in used)
    allocation.epochs_per_source = {name: D * weight / total_weight / unique for name, weight, unique in used}
    for name, epochs in allocation.epochs_per_source.items():
        if epochs > SAFE_EPOCHS:
            allocation.warnings.append(f"{epochs:.1f} epochs over source {name}: past ~{SAFE_EPOCHS:.0f} epochs "
                                       f"its repeated tokens are worth markedly less than fresh ones")
    if allocation.epochs > SAFE_EPOCHS and not used:
        allocation.warnings.append(
            f"{allocation.epochs:.1f} epochs over the unique data: past ~{SAFE_EPOCHS:.0f} epochs repeated tokens "
            f"are worth markedly less than fresh ones (Muennighoff et al. 2023); find more data or spend less compute")
    return allocation

"""The fit of a trained ladder: its usable runs, the law and its bootstrap, the allocation at the
target, and the interval the next run's loss should land in.

A ladder's 9 runs do not pin five parameters: the fit is made under the exponent prior of
`priors.py` (alpha and beta inside the plausible range, pulled weakly towards published fits), on
squared log residuals, the likelihood that prior is weighed against (see docs/scaling-laws.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from planner.errors import UserError
from planner.scaling.allocate import Allocation, allocate
from planner.scaling.bootstrap import BootstrapResult
from planner.scaling.fit import FitResult
from planner.scaling.ladder_interval import diverged, prediction_error, predictive_interval, residual_noise
from planner.scaling.objectives import Objective
from planner.scaling.prior_fit import bootstrap_under_prior, fit_under_prior, leave_one_out_under_prior
from planner.scaling.priors import DEFAULT_NOISE, ExponentPrior
from planner.scaling.runs import Runs

BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.9
OBJECTIVE = Objective("mse-log")


def usable_rungs(rungs: list[dict], losses: dict[str, float], ceiling: float) -> tuple[list[tuple[dict, float]],
                                                                                      list[str]]:
    """(rung, final loss) of each finished rung that did not diverge, and a warning for each left out."""
    kept, warnings = [], []
    for rung in rungs:
        loss = losses.get(rung["name"])
        if loss is None:
            warnings.append(f"{rung['name']} has not finished: left out of the fit")
        elif diverged(loss, ceiling):
            warnings.append(f"{rung['name']} diverged (final loss {loss:g}, a uniform guess is {ceiling:.3f}): "
                            f"left out of the fit")
        else:
            kept.append((rung, loss))
    return kept, warnings


@dataclass
class LadderFit:
    """`noise`: the runs' residual spread around the law; `loo`: each run's leave-one-out error;
    `spread`: the noise the next run's interval uses; `prior`: what held the exponents."""

    runs: Runs
    fit: FitResult
    boot: BootstrapResult
    allocation: Allocation
    noise: float
    loo: np.ndarray
    spread: float
    prior: ExponentPrior

    def forecast(self, N: float, D: float) -> tuple[float, float, float]:
        """(predicted loss, low, high) of one run at (N, D), at CONFIDENCE."""
        predicted = float(self.fit.law.predict(N, D))
        low, high = predictive_interval(self.boot.params, N, D, self.spread, CONFIDENCE)
        return predicted, low, high


def fit_rungs(kept: list[tuple[dict, float]], target: float, unique_tokens: Optional[float], source: str,
              data_sources: Optional[list] = None, stated_noise: float = DEFAULT_NOISE) -> LadderFit:
    """Fit the law to the kept runs under the exponent prior (weighed against `stated_noise`, the ladder's
    stated run-to-run noise) and allocate `target` FLOPs by it (with `data_sources`, a mixture's
    (name, weight, unique tokens): each source's repetition counted on its own)."""
    runs = Runs(N=np.array([float(r['N']) for r, _ in kept]), D=np.array([float(r['D']) for r, _ in kept]),
                loss=np.array([loss for _, loss in kept]), source=source)
    prior = ExponentPrior(noise=stated_noise)
    fit = fit_under_prior(runs, prior, OBJECTIVE)
    allocation = allocate(fit.law, target, None if data_sources else unique_tokens, data_sources)
    if not (math.isfinite(allocation.N) and allocation.N > 0):
        raise UserError(f"the fitted law gives no finite optimum at {target:.3g} FLOPs (alpha {fit.law.alpha:.3g}, "
                        f"beta {fit.law.beta:.3g}): add runs or widen the ladder")
    noise = residual_noise(fit.law, runs.N, runs.D, runs.loss)
    # The interval's noise is how well the law predicts a rung it was not fitted to (leave-one-out):
    # the fit's residual spread alone leaves out what the law's form misses at these sizes.
    loo = leave_one_out_under_prior(runs, fit, prior, OBJECTIVE)
    spread = max(noise, prediction_error(loo)) if np.isfinite(prediction_error(loo)) else noise
    # The laws the interval draws are refitted to losses redrawn with that same noise (prior_fit.py: why).
    boot = bootstrap_under_prior(runs, fit, prior, OBJECTIVE, spread, BOOTSTRAP_RESAMPLES, target, CONFIDENCE)
    return LadderFit(runs=runs, fit=fit, boot=boot, allocation=allocation, noise=noise, loo=loo, spread=spread,
                     prior=prior)


def exponent_warnings(fit: LadderFit) -> list[str]:
    """An exponent on an edge of the plausible range: the runs push it past what published fits allow."""
    low, high = fit.prior.bounds
    return [f"{name} = {value:.3g} sits on the plausible range's {'lower' if value <= low else 'upper'} edge "
            f"[{low:g}, {high:g}]: the runs push it further than any published fit; look for runs off the law "
            f"(too short, mistuned) before trusting the forecast"
            for name, value in (("alpha", fit.fit.law.alpha), ("beta", fit.fit.law.beta))
            if value <= low * (1 + 1e-6) or value >= high * (1 - 1e-6)]

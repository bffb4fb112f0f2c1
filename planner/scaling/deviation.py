"""Small-scale deviation: runs at the smallest budgets that sit off the trend of the larger ones.

Small models are often trained with hyperparameters tuned for larger ones (learning rate, warmup,
batch), so their losses sit above the law the rest follow; a fit that weighs them like the rest
bends its exponents to their curvature and carries the bend into the extrapolation. The test: fit
the Chinchilla form to the budgets above budget b, and ask whether b's runs sit on one side of it
by more than the noise allows (a t statistic on their mean log residual, with most residuals of one
sign). The smallest budgets are tested in turn, and the flags stop at the first budget that passes.

Remedies (what `--min-flops` and `--small-weight` do, and what the default chooses between by its
inner backtest): leave the flagged budgets out, or down-weight their runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from planner.scaling.form_fit import fit_forms
from planner.scaling.law_forms import FORMS

T_THRESHOLD = 4.0        # |mean residual| / its standard error: beyond noise
SAME_SIGN = 0.8          # ... and at least this share of the budget's runs on that side
MIN_REST_BUDGETS = 3     # the trend is fitted to at least this many larger budgets
DOWN_WEIGHT = 0.1        # the down-weighting remedy's weight for flagged runs


@dataclass(frozen=True)
class Deviation:
    flagged: np.ndarray      # (P, K) bool: budget k of repetition p is off the trend
    offset: np.ndarray       # (P, K) mean log residual (≈ relative loss offset) of each budget vs the rest
    t: np.ndarray            # (P, K)


def detect(log_N: np.ndarray, log_D: np.ndarray, log_loss: np.ndarray, label: np.ndarray,
           found: np.ndarray, start: Optional[np.ndarray] = None) -> Deviation:
    """Test the smallest budgets of P repetitions (log_loss (P, n)) against the trend of the rest;
    `start` (P, 5): each repetition's whole-table Chinchilla fit, to start the refits from."""
    P, K = log_loss.shape[0], len(found)
    tested = max(0, K - MIN_REST_BUDGETS)
    offset, t = np.zeros((P, K)), np.zeros((P, K))
    flagged = np.zeros((P, K), bool)
    if tested == 0:
        return Deviation(flagged, offset, t)
    weights = np.array([(label > found[k]).astype(float) for k in range(tested)])       # (tested, n)
    fits = fit_forms(FORMS["chinchilla"], log_N, log_D, np.repeat(log_loss, tested, axis=0),
                     np.tile(weights, (P, 1)), None if start is None else np.repeat(start, tested, axis=0)[:, None, :])
    predicted = FORMS["chinchilla"].log_predict(fits.theta, np.exp(log_N), np.exp(log_D))     # (P*tested, n)
    residual = (np.repeat(log_loss, tested, axis=0) - predicted).reshape(P, tested, -1)
    noise = fits.noise.reshape(P, tested)
    for k in range(tested):
        members = label == found[k]
        r = residual[:, k, members]
        mean = r.mean(axis=1)
        offset[:, k] = mean
        t[:, k] = mean / (noise[:, k] / np.sqrt(members.sum()))
        same = np.mean(np.sign(r) == np.sign(mean)[:, None], axis=1)
        flagged[:, k] = (np.abs(t[:, k]) > T_THRESHOLD) & (same >= SAME_SIGN)
    # Only a run of flags from the smallest budget up counts: a lone budget in the middle is noise.
    flagged = np.cumprod(flagged, axis=1).astype(bool)
    return Deviation(flagged, offset, t)


def warnings_for(deviation: Deviation, found: np.ndarray) -> list[str]:
    """One warning with the remedies, for the first repetition (a runs table)."""
    flags = np.flatnonzero(deviation.flagged[0])
    if flags.size == 0:
        return []
    last = flags[-1]
    above = found[last + 1]
    mean = float(np.mean(deviation.offset[0, flags]))
    return [f"small-scale deviation: the runs at budget(s) up to {found[last]:.3g} FLOPs sit "
            f"{100 * (np.exp(mean) - 1):+.1f} % off the trend of the larger budgets (t = "
            f"{', '.join(f'{v:.1f}' for v in deviation.t[0, flags])}), beyond noise; a fit that weighs them like the "
            f"rest extrapolates their curvature: try --min-flops {above:.3g} or --small-weight {DOWN_WEIGHT:g} "
            f"(`scaleplan backtest` shows which extrapolates better; the default method chooses by it)"]

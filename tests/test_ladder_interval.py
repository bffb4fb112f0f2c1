"""The ladder's predictive interval: leave-one-out errors of the rungs measure how well the law
predicts a run it was not fitted to, which a robust fit's residuals hide."""
from __future__ import annotations

import numpy as np

from planner.scaling.bootstrap import warm_starts
from planner.scaling.fit import fit_law
from planner.scaling.ladder import leave_one_out_errors, prediction_error, residual_noise
from planner.scaling.runs import Runs

# Three IsoFLOP slices of three runs, as `make ladder` places them.
N = np.array([98e3, 74e3, 45e3, 271e3, 98e3, 45e3, 590e3, 160e3, 45e3])
C = np.repeat([2.83e11, 8.93e11, 2.83e12], 3)
D = C / (6.0 * N)


def law(N: np.ndarray, D: np.ndarray) -> np.ndarray:
    return 0.9 + 300.0 * N ** -0.45 + 400.0 * D ** -0.35


def test_leave_one_out_errors_vanish_on_the_law_itself() -> None:
    loss = law(N, D)
    errors = leave_one_out_errors(N, D, loss, warm_starts(fit_law(Runs(N=N, D=D, loss=loss, source="law"))))
    assert np.all(np.isfinite(errors)) and prediction_error(errors) < 0.01


def test_leave_one_out_error_sees_what_the_residuals_hide() -> None:
    """Runs off the law's form (the shortest run of each slice 10 % worse, as warmup-dominated runs
    are): the Huber fit treats them as outliers and its residual spread stays small, while leaving
    each out and predicting it shows the error, and the predictive noise must use it."""
    loss = law(N, D) * np.where(np.arange(9) % 3 == 0, 1.10, 1.0) * (1 + 0.005 * np.sin(np.arange(9)))
    fit = fit_law(Runs(N=N, D=D, loss=loss, source="off-law"))
    errors = leave_one_out_errors(N, D, loss, warm_starts(fit))
    assert prediction_error(errors) > 0.02
    assert prediction_error(errors) > 2 * residual_noise(fit.law, N, D, loss)

"""Named forms of the loss law L(N, D), each with the log prediction u = ln L̂ and its Jacobian in
the form's parameters (written over R parameter rows at once), for the batched fit of
`form_fit.py` and the forecasts of a backtest.

- chinchilla: E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 2).
- tied:       E + A/N^eta + B/D^eta, one exponent for both terms. Hoffmann et al.'s Approaches 1 and 2
              find N_opt ∝ C^0.5 (alpha ≈ beta); Gadre et al. 2024 (eq. 4) write this form as
              E + (a M^eta + b M^-eta) C^-eta to fit runs trained far past 20 tokens/param.
              One exponent fewer keeps the extrapolation from bending where the small runs did.
- kaplan:     E + ((Nc/N)^(alpha_N/alpha_D) + Dc/D)^alpha_D (Kaplan et al. 2020, eq. 1.5, with a floor
              E): N and D trade off inside one power, so the D-direction at fixed N decays more slowly
              once D/N is large, as over-trained runs do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from planner.errors import UserError
from planner.scaling.law import FLOPS_PER_PARAM_TOKEN

LogJacobian = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _chinchilla(theta: np.ndarray, log_N: np.ndarray, log_D: np.ndarray, jacobian: bool = True):
    log_E, log_A, log_B, alpha, beta = (theta[:, i:i + 1] for i in range(5))
    t0, t1, t2 = np.exp(log_E + 0 * log_N), np.exp(log_A - alpha * log_N), np.exp(log_B - beta * log_D)
    total = t0 + t1 + t2
    if not jacobian:
        return np.log(total), None
    s0, s1, s2 = t0 / total, t1 / total, t2 / total
    return np.log(total), np.stack([s0, s1, s2, -log_N * s1, -log_D * s2], axis=2)


def _tied(theta: np.ndarray, log_N: np.ndarray, log_D: np.ndarray, jacobian: bool = True):
    full = np.concatenate([theta, theta[:, 3:4]], axis=1)
    u, J = _chinchilla(full, log_N, log_D, jacobian)
    if not jacobian:
        return u, None
    return u, np.concatenate([J[:, :, :3], J[:, :, 3:4] + J[:, :, 4:5]], axis=2)


def _kaplan(theta: np.ndarray, log_N: np.ndarray, log_D: np.ndarray, jacobian: bool = True):
    log_E, log_Nc, log_Dc, alpha_N, alpha_D = (theta[:, i:i + 1] for i in range(5))
    ratio = alpha_N / alpha_D
    t1, t2 = np.exp(ratio * (log_Nc - log_N)), np.exp(log_Dc - log_D)
    inner = t1 + t2
    T = np.exp(alpha_D * np.log(inner))
    E = np.exp(log_E) + 0 * T
    total = E + T
    if not jacobian:
        return np.log(total), None
    share = T / total
    J = np.stack([E / total, share * alpha_N * t1 / inner, share * alpha_D * t2 / inner,
                  share * t1 * (log_Nc - log_N) / inner,
                  share * (np.log(inner) - t1 * ratio * (log_Nc - log_N) / inner)], axis=2)
    return np.log(total), J


def _from_chinchilla_tied(theta: np.ndarray) -> np.ndarray:
    return np.concatenate([theta[:, :3], theta[:, 3:4] * 0.5 + theta[:, 4:5] * 0.5], axis=1)


def _from_chinchilla_kaplan(theta: np.ndarray) -> np.ndarray:
    return np.column_stack([theta[:, 0], theta[:, 1] / theta[:, 3], theta[:, 2] / theta[:, 4], theta[:, 3],
                            theta[:, 4]])


@dataclass(frozen=True)
class LawForm:
    name: str
    params: tuple[str, ...]
    exponents: tuple[int, ...]          # indices that must stay positive
    log_jacobian: LogJacobian
    from_chinchilla: Callable[[np.ndarray], np.ndarray]   # starting points from Chinchilla-form fits
    source: str

    def log_predict(self, theta: np.ndarray, N, D) -> np.ndarray:
        """ln L̂ (R, m) for R parameter rows at m points."""
        log_N, log_D = (np.log(np.atleast_1d(np.asarray(v, float)))[None, :] for v in (N, D))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self.log_jacobian(np.atleast_2d(theta), log_N, log_D, False)[0]

    def predict(self, theta: np.ndarray, N, D) -> np.ndarray:
        return np.exp(self.log_predict(theta, N, D))

    def predict_rows(self, theta: np.ndarray, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        """Loss (R, m) where row r has its own points N[r], D[r]."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return np.exp(self.log_jacobian(theta, np.log(N), np.log(D), False)[0])

    def optimal_allocation(self, theta: np.ndarray, C) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt), each (R, m): closed form for chinchilla and tied, else a search along 6 N D = C
        (a log-N grid, then a parabola through the best point and its neighbours)."""
        theta = np.atleast_2d(theta)
        C = np.atleast_1d(np.asarray(C, float))
        if self.name in ("chinchilla", "tied"):
            if self.name == "tied":
                theta = np.concatenate([theta, theta[:, 3:4]], axis=1)
            log_E, log_A, log_B, alpha, beta = (theta[:, i:i + 1] for i in range(5))
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):   # a wild draw: inf, not a warning
                G = ((alpha * np.exp(log_A)) / (beta * np.exp(log_B))) ** (1.0 / (alpha + beta))
                N = G * (C[None, :] / FLOPS_PER_PARAM_TOKEN) ** (beta / (alpha + beta))
                return N, C[None, :] / (FLOPS_PER_PARAM_TOKEN * N)
        step = 0.05
        offsets = np.arange(-12.0, 12.0 + step / 2, step)
        centre = 0.5 * np.log(C / (FLOPS_PER_PARAM_TOKEN * 20.0))          # 20 tokens/param
        log_N = centre[:, None] + offsets[None, :]                          # (m, G)
        log_D = np.log(C / FLOPS_PER_PARAM_TOKEN)[:, None] - log_N
        values = np.stack([self.log_predict(theta, np.exp(log_N[j]), np.exp(log_D[j])) for j in range(len(C))],
                          axis=1)                                           # (R, m, G)
        values = np.where(np.isfinite(values), values, np.inf)
        best = np.clip(np.argmin(values, axis=2), 1, len(offsets) - 2)
        y0, y1, y2 = (np.take_along_axis(values, (best + k)[..., None], axis=2)[..., 0] for k in (-1, 0, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            shift = np.where(y0 + y2 - 2 * y1 > 0, 0.5 * (y0 - y2) / (y0 + y2 - 2 * y1), 0.0)
        N = np.exp(centre[None, :] + offsets[best] + step * np.clip(np.nan_to_num(shift), -1, 1))
        return N, C[None, :] / (FLOPS_PER_PARAM_TOKEN * N)


FORMS: dict[str, LawForm] = {form.name: form for form in (
    LawForm("chinchilla", ("log_E", "log_A", "log_B", "alpha", "beta"), (3, 4), _chinchilla, lambda t: t,
            "Hoffmann et al. 2022, eq. 2"),
    LawForm("tied", ("log_E", "log_A", "log_B", "eta"), (3,), _tied, _from_chinchilla_tied,
            "one exponent for N and D (Hoffmann et al. 2022 Approaches 1-2: a ≈ b ≈ 0.5; "
            "Gadre et al. 2024, eq. 4)"),
    LawForm("kaplan", ("log_E", "log_Nc", "log_Dc", "alpha_N", "alpha_D"), (3, 4), _kaplan, _from_chinchilla_kaplan,
            "Kaplan et al. 2020, eq. 1.5, plus an irreducible loss E"),
)}
LAW_FORM_CHOICES = ("auto", *FORMS)


def law_form(name: str) -> LawForm:
    if name not in FORMS:
        raise UserError(f"unknown --law-form '{name}': choose one of {', '.join(LAW_FORM_CHOICES)}")
    return FORMS[name]

"""The grid of initial values for the law's fit, and its vectorised evaluation.

Coordinates are those the fit works in, theta = (log E, log A, log B, alpha, beta), as in
Hoffmann et al. 2022 (App. D.2). A grid is a Cartesian product of one 1-D array per coordinate.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from planner.errors import UserError
from planner.user_files import read_text
from planner.scaling.objectives import Objective
from planner.scaling.runs import Runs

GRID_KEYS = ("log_E", "log_A", "log_B", "alpha", "beta")
LINEAR_KEYS = {"E": "log_E", "A": "log_A", "B": "log_B"}   # YAML may give E, A, B unlogged
DEFAULT_SLICES = 8
DEFAULT_STARTS = 8    # best grid points handed to the quasi-Newton refinement
GRID_DTYPE = np.float32
EXPONENT_RANGE = (0.05, 1.2)    # alpha, beta: published fits lie in 0.07 (Kaplan) .. 0.7 (chinchilla lib)

Grid = dict[str, np.ndarray]


def default_grid(runs: Runs, slices: int = DEFAULT_SLICES) -> Grid:
    """A slices^5 grid derived from the data.

    E lies below the lowest observed loss (the law never predicts under E). log A is placed so that
    the N-term A / N^alpha at the geometric-mean run spans 0.5 % of the lowest loss up to twice the
    highest, for every alpha in the range; log B alike with D.
    """
    if slices < 1:
        raise UserError(f"--grid-slices must be at least 1, got {slices}")
    low_loss, high_loss = float(runs.loss.min()), float(runs.loss.max())
    exponents = np.linspace(*EXPONENT_RANGE, slices) if slices > 1 else np.array([0.3])
    mean_log_N, mean_log_D = float(np.log(runs.N).mean()), float(np.log(runs.D).mean())

    def log_coefficient(mean_log_size: float) -> np.ndarray:
        lowest = EXPONENT_RANGE[0] * mean_log_size + np.log(0.005 * low_loss)
        highest = EXPONENT_RANGE[1] * mean_log_size + np.log(2.0 * high_loss)
        return np.linspace(lowest, highest, slices) if slices > 1 else np.array([0.3 * mean_log_size])

    log_E = (np.linspace(np.log(0.05 * low_loss), np.log(0.99 * low_loss), slices) if slices > 1
             else np.array([np.log(0.9 * low_loss)]))
    return {"log_E": log_E, "log_A": log_coefficient(mean_log_N), "log_B": log_coefficient(mean_log_D),
            "alpha": exponents, "beta": exponents.copy()}


def _axis_values(key: str, spec: object, path: str) -> np.ndarray:
    """A list of values, or {start, stop, num} (optionally `log: true` for geometric spacing)."""
    if isinstance(spec, (list, tuple)):
        values = spec
    elif isinstance(spec, dict):
        unknown = set(spec) - {"start", "stop", "num", "log"}
        if unknown or not {"start", "stop", "num"} <= set(spec):
            raise UserError(f"{path}: '{key}' needs start, stop, num (and optional log), got {sorted(spec)}")
        try:
            start, stop, num = float(spec["start"]), float(spec["stop"]), int(spec["num"])
        except (TypeError, ValueError):
            raise UserError(f"{path}: '{key}' start/stop/num must be numbers") from None
        if num < 1:
            raise UserError(f"{path}: '{key}' num must be at least 1")
        values = np.geomspace(start, stop, num) if spec.get("log") else np.linspace(start, stop, num)
    else:
        raise UserError(f"{path}: '{key}' must be a list of values or a mapping with start, stop, num")
    try:
        array = np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        raise UserError(f"{path}: '{key}' has a value that is not a number") from None
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise UserError(f"{path}: '{key}' must hold at least one finite value")
    return array


def grid_from_mapping(mapping: dict, runs: Runs, slices: int = DEFAULT_SLICES, path: str = "grid") -> Grid:
    """Per-parameter ranges from a mapping; keys log_E/log_A/log_B (natural log) or E/A/B (plain,
    must be positive), alpha, beta. Parameters left out keep the data-derived default range."""
    if not isinstance(mapping, dict):
        raise UserError(f"{path}: expected a mapping of parameter ranges")
    grid = default_grid(runs, slices)
    for key, spec in mapping.items():
        values = _axis_values(str(key), spec, path)
        if key in LINEAR_KEYS:
            if np.any(values <= 0):
                raise UserError(f"{path}: '{key}' values must be positive (or give log_{key})")
            grid[LINEAR_KEYS[key]] = np.log(values)
        elif key in GRID_KEYS:
            grid[key] = values
        else:
            raise UserError(f"{path}: unknown grid key '{key}': use {', '.join(GRID_KEYS)} (or E, A, B)")
    return grid


def load_grid(path: str | Path, runs: Runs, slices: int = DEFAULT_SLICES) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"grid file not found: {path}")
    try:
        mapping = yaml.safe_load(read_text(path, "grid"))
    except yaml.YAMLError:
        raise UserError(f"{path} is not valid YAML") from None
    return grid_from_mapping(mapping or {}, runs, slices, str(path))


def grid_size(grid: Grid) -> int:
    return int(np.prod([len(grid[key]) for key in GRID_KEYS]))


def evaluate_grid(grid: Grid, runs: Runs, objective: Objective, workers: Optional[int] = None) -> np.ndarray:
    """The objective at every grid point, shape (len log_E, len log_A, len log_B, len alpha, len beta).

    For a fixed (alpha, beta) the A- and B-terms are outer sums of two small tables, so each block
    costs one log and a handful of in-place ufuncs per (point, run); threads share the (alpha, beta)
    pairs because numpy releases the GIL inside ufuncs.
    """
    log_N, log_D = np.log(runs.N), np.log(runs.D)
    # float32 halves the memory traffic; the grid only ranks starting points, and the refinement
    # and every reported objective are computed in float64.
    log_loss = np.log(runs.loss).astype(GRID_DTYPE)
    E_values = np.exp(grid["log_E"]).astype(GRID_DTYPE)
    shape = tuple(len(grid[key]) for key in GRID_KEYS)
    result = np.empty(shape)
    pairs = [(i, j) for i in range(shape[3]) for j in range(shape[4])]

    def evaluate_pair(pair: tuple[int, int]) -> None:
        i, j = pair
        N_terms = np.exp(grid["log_A"][:, None] - grid["alpha"][i] * log_N[None, :])
        D_terms = np.exp(grid["log_B"][:, None] - grid["beta"][j] * log_D[None, :])
        scaling_part = (N_terms[:, None, :] + D_terms[None, :, :]).astype(GRID_DTYPE)
        block = np.empty_like(scaling_part)
        for k, E in enumerate(E_values):
            np.add(scaling_part, E, out=block)
            np.log(block, out=block)
            np.subtract(log_loss, block, out=block)
            result[k, :, :, i, j] = objective.summed_over_last_axis(block)

    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(pairs) == 1:
        for pair in pairs:
            evaluate_pair(pair)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(evaluate_pair, pairs))
    return result


def best_points(grid: Grid, values: np.ndarray, count: int) -> list[tuple[np.ndarray, float]]:
    """The `count` grid points with the lowest objective, best first, as (theta, objective)."""
    flat = values.ravel()
    finite = np.isfinite(flat)
    count = min(count, int(finite.sum()))
    if count == 0:
        return []
    candidates = np.argpartition(np.where(finite, flat, np.inf), count - 1)[:count]
    candidates = candidates[np.argsort(flat[candidates], kind="stable")]
    points = []
    for index in candidates:
        position = np.unravel_index(index, values.shape)
        theta = np.array([grid[key][p] for key, p in zip(GRID_KEYS, position)])
        points.append((theta, float(flat[index])))
    return points


def landscape(grid: Grid, values: np.ndarray) -> dict[str, np.ndarray]:
    """Best objective along each parameter: for each value of it, the minimum over all the others."""
    sweep = {}
    for axis, key in enumerate(GRID_KEYS):
        others = tuple(a for a in range(values.ndim) if a != axis)
        sweep[key] = np.min(values, axis=others)
    return sweep

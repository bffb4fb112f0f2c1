"""Fit speed: our vectorised grid + quasi-Newton refinement against the chinchilla library.

Data: the 245 points Besiroglu et al. (2024) extracted from Chinchilla's Figure 4, less the 5
highest-loss ones (240 runs). Both fits use Hoffmann et al.'s objective (Huber, delta 1e-3, on log
loss) and grids spanning Hoffmann's ranges (log E in [-1, 1], log A and log B in [0, 25], alpha and
beta in [0, 2]); ours has 16 values per parameter (1,048,576 points), chinchilla's 4 (1,024), since
it runs a finite-difference BFGS from every point. Both resulting laws are scored with the same
summed objective.

    .venv/bin/pip install -r bench/requirements.txt   # optional: without it only ours is timed
    .venv/bin/python bench/fit_speed.py

Bootstrap section: 4000 resamples of a 20-run fit (seed runs of a Chinchilla-like law, 1 % noise),
the batched path (every resample refined together, one process) beside the refit path (one scipy
BFGS per resample, in spawned worker processes), each timed as a whole `scaleplan fit --bootstrap`
process; the 5 s target is for the batched path's whole process on 2 cores.

    .venv/bin/python bench/fit_speed.py --bootstrap-only

isoFLOP section: Approach 2 on the same 240 runs (their isoFLOP slices, planner/scaling/slices.py)
and 4000 resamples of its parabolas' residuals, in this process; the target is under 2 s.

    .venv/bin/python bench/fit_speed.py --isoflop-only

Wall-clock figures need a quiet machine; the CPU seconds printed beside them do not.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from planner.scaling.fit import fit_law, objective_at  # noqa: E402
from planner.scaling.grid import evaluate_grid  # noqa: E402
from planner.scaling.law import ScalingLaw  # noqa: E402
from planner.scaling.objectives import Objective  # noqa: E402
from planner.scaling.runs import read_runs  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "chinchilla_fig4_epoch.csv"
# Besiroglu et al. 2024's exact replication of Hoffmann's method on these 240 points.
BESIROGLU = ScalingLaw(E=1.8172, A=477.84, B=2143.86, alpha=0.3473, beta=0.3672, name="besiroglu")
HOFFMANN_RANGES = {"log_E": (-1.0, 1.0), "log_A": (0.0, 25.0), "log_B": (0.0, 25.0), "alpha": (0.0, 2.0),
                   "beta": (0.0, 2.0)}


def hoffmann_grid(slices: int) -> dict[str, np.ndarray]:
    return {key: np.linspace(low, high, slices) for key, (low, high) in HOFFMANN_RANGES.items()}


def log_huber_1e3(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Hoffmann et al.'s loss for the chinchilla library (which averages it over runs)."""
    error = np.log(y_true) - np.log(y_pred)
    size = np.abs(error)
    return np.where(size < 1e-3, 0.5 * error ** 2, 1e-3 * (size - 0.5e-3))


def time_chinchilla(runs, slices: int) -> tuple[ScalingLaw, float] | None:
    try:
        from chinchilla import Chinchilla
    except ImportError as error:
        print(f"chinchilla library not importable ({error}); install it with "
              f"`.venv/bin/pip install -r bench/requirements.txt` to time the reference. Timing ours only.")
        return None
    grid = hoffmann_grid(slices)
    param_grid = {"e": grid["log_E"], "a": grid["log_A"], "b": grid["log_B"], "alpha": grid["alpha"],
                  "beta": grid["beta"]}
    with tempfile.TemporaryDirectory() as project:
        with open(Path(project) / "df.csv", "w") as handle:
            handle.write("C,N,D,loss\n")
            for n, d, c, loss in zip(runs.N, runs.D, runs.C, runs.loss):
                handle.write(f"{float(c)!r},{float(n)!r},{float(d)!r},{float(loss)!r}\n")
        model = Chinchilla(project, param_grid=param_grid, loss_fn=log_huber_1e3, log_level=40,
                           model_search_config=None)
        start = time.perf_counter()
        model.fit(parallel=True)
        seconds = time.perf_counter() - start
    params = model.get_params()
    return ScalingLaw(**params, name="chinchilla-lib"), seconds


def time_bootstrap(resamples: int, runs_count: int) -> None:
    """Whole `scaleplan fit --bootstrap` processes (imports, fit, bootstrap), batched and refit."""
    from planner.scaling.law import CHINCHILLA
    from planner.scaling.runs import write_runs
    from planner.scaling.simulate import seed_runs

    runs = seed_runs(CHINCHILLA, (1e17, 1e19), runs_count, 0.01, np.random.default_rng(0))
    print(f"\nbootstrap: {resamples} resamples of a {runs_count}-run fit, {os.cpu_count()} CPU cores, whole process")
    seconds, intervals = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        table = Path(scratch) / "runs.csv"
        write_runs(table, runs)
        cpu = {}
        for method in ("batched", "refit"):
            out = Path(scratch) / f"{method}.json"
            command = [sys.executable, "-m", "launch.cli", "fit", str(table), "--bootstrap", str(resamples),
                       "--bootstrap-method", method, "--at-flops", "1e21", "--out", str(out)]
            before = _children_cpu()
            start = time.perf_counter()
            subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds[method] = time.perf_counter() - start
            cpu[method] = _children_cpu() - before
            import json
            intervals[method] = json.loads(out.read_text())["intervals"]
    for method in ("batched", "refit"):
        low, high = intervals[method]["N_opt"]
        print(f"  {method:>7}: {seconds[method]:6.2f} s ({cpu[method]:.2f} CPU s)   N_opt at 1e21 FLOPs in "
              f"[{low:.4g}, {high:.4g}]")
    worst = max(abs(a / b - 1) for name in intervals["refit"] if name != "E"
                for a, b in zip(intervals["batched"][name], intervals["refit"][name]))
    print(f"  refit / batched = {seconds['refit'] / seconds['batched']:.1f}x; largest interval-bound difference "
          f"(all but E) {100 * worst:.2g} %")
    print(f"  {'PASS' if seconds['batched'] < 5 else 'SLOWER THAN'} the 5 s target")


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_isoflop(runs, resamples: int) -> None:
    """Approach 2's fit and its residual bootstrap on the same runs, in this process."""
    from planner.scaling.isoflop import bootstrap_isoflop, fit_isoflop

    start, cpu = time.perf_counter(), time.process_time()
    fit = fit_isoflop(runs)
    laws = bootstrap_isoflop(fit, resamples, seed=0)
    N, _ = laws.optimal_allocation(5.76e23)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    low, high = np.nanpercentile(N[:, 0], [5, 95])
    print(f"\nisoFLOP: {len(fit.budgets)} slices of {len(runs)} runs, fit + {resamples} resamples in {seconds:.2f} s "
          f"({cpu:.2f} CPU s); N_opt at Chinchilla's 5.76e23 FLOPs {fit.law.optimal_allocation(5.76e23)[0][0, 0]:.3g} "
          f"in [{low:.3g}, {high:.3g}]")
    print(f"  {'PASS' if seconds < 2 else 'SLOWER THAN'} the 2 s target")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--slices", type=int, default=16, help="our grid: values per parameter")
    parser.add_argument("--chinchilla-slices", type=int, default=4, help="chinchilla's grid: values per parameter")
    parser.add_argument("--skip-chinchilla", action="store_true")
    parser.add_argument("--bootstrap-resamples", type=int, default=4000)
    parser.add_argument("--bootstrap-runs", type=int, default=20)
    parser.add_argument("--bootstrap-only", action="store_true", help="time only the bootstrap section")
    parser.add_argument("--isoflop-only", action="store_true", help="time only the isoFLOP section")
    args = parser.parse_args()
    if args.bootstrap_only:
        time_bootstrap(args.bootstrap_resamples, args.bootstrap_runs)
        return 0
    if args.isoflop_only:
        time_isoflop(read_runs(args.data).without_highest_loss(5), args.bootstrap_resamples)
        return 0
    if not Path(args.data).is_file():
        print(f"data file not found: {args.data}")
        return 2
    runs = read_runs(args.data).without_highest_loss(5)
    objective = Objective("huber")
    print(f"{len(runs)} runs, {os.cpu_count()} CPU cores, objective: summed Huber(1e-3) on log loss")

    grid = hoffmann_grid(args.slices)
    points = args.slices ** 5
    start = time.perf_counter()
    evaluate_grid(grid, runs, objective)
    grid_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ours = fit_law(runs, objective, grid=grid)
    our_seconds = time.perf_counter() - start
    print(f"\nscaleplan: {args.slices}^5 = {points:,} grid points in {our_seconds:.2f} s "
          f"(grid evaluation alone {grid_seconds:.2f} s), {our_seconds / points * 1e6:.2f} us per point")
    print(f"  {ours.law.params()}")
    print(f"  objective {ours.objective:.10g}  (Besiroglu et al.'s parameters: "
          f"{objective_at(BESIROGLU, runs, objective):.10g})")
    verdict = "PASS" if our_seconds < 10 else "SLOWER THAN"
    print(f"  {verdict} the 10 s target")

    time_bootstrap(args.bootstrap_resamples, args.bootstrap_runs)
    time_isoflop(runs, args.bootstrap_resamples)
    if args.skip_chinchilla:
        return 0
    reference = time_chinchilla(runs, args.chinchilla_slices)
    if reference is None:
        return 0
    law, seconds = reference
    reference_points = args.chinchilla_slices ** 5
    print(f"\nchinchilla 0.2.0: {args.chinchilla_slices}^5 = {reference_points:,} grid points in {seconds:.2f} s, "
          f"{seconds / reference_points * 1e6:.0f} us per point")
    print(f"  {law.params()}")
    print(f"  objective {objective_at(law, runs, objective):.10g} (same summed objective)")
    ratio = (seconds / reference_points) / (our_seconds / points)
    print(f"\ntime per grid point: chinchilla / scaleplan = {ratio:,.0f}x")
    print(f"extrapolated: chinchilla on {args.slices}^5 points ~ {seconds / reference_points * points / 3600:.1f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

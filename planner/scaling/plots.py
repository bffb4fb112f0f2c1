"""PNG figures of a fit (matplotlib, Agg backend: works without a display)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from planner.scaling.bootstrap import BootstrapResult  # noqa: E402
from planner.scaling.fit import FitResult  # noqa: E402
from planner.scaling.grid import GRID_KEYS  # noqa: E402
from planner.scaling.law import FLOPS_PER_PARAM_TOKEN, ScalingLaw  # noqa: E402
from planner.scaling.runs import Runs  # noqa: E402


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_fit_quality(law: ScalingLaw, runs: Runs, path: Path) -> Path:
    """Predicted vs observed loss (with the identity line), and a histogram of log residuals."""
    predicted = law.predict(runs.N, runs.D)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    scatter = left.scatter(runs.loss, predicted, c=np.log10(runs.C), cmap="viridis", s=14)
    low, high = min(runs.loss.min(), predicted.min()), max(runs.loss.max(), predicted.max())
    left.plot([low, high], [low, high], "k--", lw=1)
    left.set(xlabel="observed loss", ylabel="predicted loss", title="predicted vs observed")
    figure.colorbar(scatter, ax=left, label="log10 C (FLOPs)")
    right.hist(np.log(runs.loss) - np.log(predicted), bins=max(10, len(runs) // 8), color="tab:blue")
    right.axvline(0, color="k", lw=1)
    right.set(xlabel="log observed - log predicted", ylabel="runs", title="residuals")
    return _save(figure, path)


def plot_frontier(law: ScalingLaw, runs: Runs, path: Path, next_point: Optional[tuple[float, float]] = None) -> Path:
    """Iso-loss contours with the compute-efficient frontier, the runs and the next point, in the
    N-C, D-C and N-D planes."""
    C_values = runs.C if next_point is None else np.append(runs.C, FLOPS_PER_PARAM_TOKEN * np.prod(next_point))
    C_grid = np.geomspace(C_values.min() / 3, C_values.max() * 3, 160)
    N_opt, D_opt = law.optimal_allocation(C_grid)
    N_span = np.geomspace(min(runs.N.min(), N_opt.min()) / 3, max(runs.N.max(), N_opt.max()) * 3, 160)
    D_span = np.geomspace(min(runs.D.min(), D_opt.min()) / 3, max(runs.D.max(), D_opt.max()) * 3, 160)
    # Contour levels over the observed losses (and a little below, towards the frontier's future),
    # not over the whole plane, whose corners hold absurd losses that would swallow every level.
    levels = np.linspace(0.9 * runs.loss.min() + 0.1 * law.E, np.quantile(runs.loss, 0.95), 12)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    planes = [
        ("C (FLOPs)", "N (parameters)", C_grid, N_span, lambda c, n: law.predict(n, c / (FLOPS_PER_PARAM_TOKEN * n)),
         (C_grid, N_opt), (runs.C, runs.N)),
        ("C (FLOPs)", "D (tokens)", C_grid, D_span, lambda c, d: law.predict(c / (FLOPS_PER_PARAM_TOKEN * d), d),
         (C_grid, D_opt), (runs.C, runs.D)),
        ("N (parameters)", "D (tokens)", N_span, D_span, lambda n, d: law.predict(n, d), (N_opt, D_opt),
         (runs.N, runs.D)),
    ]
    for axis, (x_label, y_label, xs, ys, loss_at, frontier, observed) in zip(axes, planes):
        X, Y = np.meshgrid(xs, ys)
        contours = axis.contour(X, Y, loss_at(X, Y), levels=levels, cmap="viridis", linewidths=0.8)
        axis.clabel(contours, fontsize=6, fmt="%.2f")
        axis.plot(*frontier, "r-", lw=1.5, label="efficient frontier")
        axis.scatter(*observed, s=10, c="k", label="runs", zorder=3)
        if next_point is not None:
            n, d = next_point
            point = {"N (parameters)": n, "D (tokens)": d, "C (FLOPs)": FLOPS_PER_PARAM_TOKEN * n * d}
            axis.scatter(point[x_label], point[y_label], marker="*", s=180, c="tab:red", label="next run", zorder=4)
        axis.set(xscale="log", yscale="log", xlabel=x_label, ylabel=y_label)
        axis.legend(fontsize=7, loc="best")
    figure.suptitle("iso-loss contours")
    return _save(figure, path)


def plot_landscape(fit: FitResult, path: Path) -> Path:
    """Best grid objective along each parameter (minimum over all the others), refined optimum marked."""
    figure, axes = plt.subplots(1, 5, figsize=(16, 3.4), sharey=True)
    for index, (axis, key) in enumerate(zip(axes, GRID_KEYS)):
        axis.plot(fit.grid[key], fit.landscape[key], "o-", ms=3)
        axis.axvline(fit.theta[index], color="tab:red", ls="--", lw=1)
        axis.axhline(fit.objective, color="tab:gray", ls=":", lw=1)
        axis.set(xlabel=key, yscale="log")
    axes[0].set_ylabel(f"best {fit.objective_kind} objective")
    figure.suptitle("loss landscape sweep (red: refined optimum, dotted: its objective)")
    return _save(figure, path)


def plot_bootstrap(result: BootstrapResult, point: dict[str, float], path: Path) -> Path:
    """Histogram of every bootstrapped quantity with its interval and the point estimate."""
    quantities, intervals = result.quantities(), result.intervals()
    figure, axes = plt.subplots(2, 4, figsize=(16, 6.4))
    for axis, (name, values) in zip(axes.ravel(), quantities.items()):
        logarithmic = name in ("A", "B", "N_opt", "D_opt")
        with np.errstate(divide="ignore"):
            shown = np.log10(values) if logarithmic else values
        shown = shown[np.isfinite(shown)]
        # Resamples that all agree (to rounding) leave no range to bin: one bar.
        flat = np.ptp(shown) <= 1e-9 * max(float(np.abs(shown).max()), 1.0)
        axis.hist(shown, bins=1 if flat else max(10, len(values) // 10), color="tab:blue", alpha=0.8)
        for bound in intervals[name]:
            axis.axvline(np.log10(bound) if logarithmic else bound, color="k", ls="--", lw=1)
        if name in point:
            axis.axvline(np.log10(point[name]) if logarithmic else point[name], color="tab:red", lw=1.5)
        axis.set(xlabel=f"log10 {name}" if logarithmic else name)
    figure.suptitle(f"bootstrap ({len(result.params)} resamples, {100 * result.confidence:.0f} % intervals dashed, "
                    f"N_opt/D_opt/loss at C = {result.budget:.3g})")
    return _save(figure, path)


def write_fit_plots(directory: str | Path, fit: FitResult, runs: Runs, next_point: Optional[tuple[float, float]] = None,
                    boot: Optional[BootstrapResult] = None, point: Optional[dict[str, float]] = None) -> list[Path]:
    """All figures for a fit into `directory` (created if missing); returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [plot_fit_quality(fit.law, runs, directory / "fit_quality.png"),
             plot_frontier(fit.law, runs, directory / "isoloss_frontier.png", next_point)]
    if fit.landscape is not None:
        paths.append(plot_landscape(fit, directory / "landscape.png"))
    if boot is not None:
        paths.append(plot_bootstrap(boot, point or {}, directory / "bootstrap.png"))
    return paths

"""The backtest's figure: each method's N_opt forecasts (with intervals) against the optima the
larger budgets measured, and its loss forecasts against the larger runs' losses."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from planner.scaling.backtest import Backtest  # noqa: E402

COLORS = {"parametric": "tab:blue", "isoflop": "tab:orange", "auto": "tab:green"}


def plot_backtest(result: Backtest, path: str | Path) -> Path:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    for shift, score in zip((-0.03, 0.0, 0.03), result.scores):
        color = COLORS.get(score.method, "tab:gray")
        rows = [r for r in score.rows if r["kind"] == "N_opt"]
        if rows:
            C = np.array([r["C"] for r in rows]) * 10 ** shift
            point = np.array([r["forecast"] for r in rows])
            left.errorbar(C, point, yerr=[point - [r["low"] for r in rows], [r["high"] for r in rows] - point],
                          fmt="o", color=color, capsize=3, label=score.method)
        losses = [r for r in score.rows if r["kind"] == "loss"]
        truth = np.array([r["truth"] for r in losses])
        point = np.array([r["forecast"] for r in losses])
        right.errorbar(truth, point, yerr=[point - [r["low"] for r in losses], [r["high"] for r in losses] - point],
                       fmt=".", color=color, alpha=0.6, capsize=2, label=score.method)
    measured = {r["C"]: r["truth"] for s in result.scores for r in s.rows if r["kind"] == "N_opt"}
    if measured:
        left.scatter(list(measured), list(measured.values()), marker="*", s=120, color="k", label="measured", zorder=5)
    left.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="N_opt",
             title=f"N_opt beyond the cut at {result.cut:.2g} FLOPs")
    left.legend(fontsize=8)
    if right.has_data():
        low, high = right.get_xlim()
        right.plot([low, high], [low, high], "k--", lw=1)
    right.set(xscale="log", yscale="log", xlabel="measured loss", ylabel="forecast loss",
              title="loss of each larger run")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)

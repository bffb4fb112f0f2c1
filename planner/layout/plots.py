"""PNG plots of a plan (matplotlib, Agg): memory breakdown of the best layouts, and every layout's
memory against the GPU's capacity."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from planner.errors import UserError
from planner.layout.memory import PARTS
from planner.layout.search import PlanResult, describe

GIB = 2**30


def write_plots(result: PlanResult, directory: str, best: int = 8) -> list[Path]:
    """Write memory_breakdown.png and memory_vs_capacity.png into `directory`; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--plots: cannot create {directory}: {error.strerror}") from None
    capacity = result.inputs.gpu.hbm_bytes / GIB
    chosen = [int(i) for i in result.ranked[:best]]
    labels = [f"#{k + 1}" for k in range(len(chosen))]

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(chosen) + 3), 5))
    bottom = np.zeros(len(chosen))
    for part in PARTS:
        values = np.array([result.memory["breakdown"][part][i] for i in chosen]) / GIB
        ax.bar(labels, values, bottom=bottom, label=part)
        bottom += values
    ax.axhline(capacity, color="black", linestyle="--", label=f"{result.inputs.gpu.id} capacity")
    ax.set_ylabel("GiB per GPU (detailed, peak stage)")
    ax.set_title("Memory per GPU of the best layouts")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    text = "\n".join(f"{label}: {describe(result.layouts.layout(i))}" for label, i in zip(labels, chosen))
    fig.text(0.01, 0.01, text, fontsize=6, va="bottom")
    fig.subplots_adjust(bottom=0.12 + 0.025 * len(chosen), right=0.8)
    breakdown_path = out / "memory_breakdown.png"
    fig.savefig(breakdown_path, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    order = np.argsort(result.memory["detailed"])
    rank = np.arange(len(order))
    ax.scatter(rank, result.memory["rule24"][order] / GIB, s=2, alpha=0.4, color="tab:orange",
               label="rule24 (blind to micro-batch, schedule, recomputation)")
    ax.plot(rank, result.memory["detailed"][order] / GIB, lw=1.5, color="tab:blue", label="detailed")
    ax.axhline(capacity, color="black", linestyle="--", label="capacity")
    ax.set_yscale("log")
    ax.set_xlabel("layouts, by detailed memory")
    ax.set_ylabel("GiB per GPU")
    ax.set_title(f"{len(order)} layouts against the {result.inputs.gpu.id}'s memory")
    ax.legend(fontsize=8)
    capacity_path = out / "memory_vs_capacity.png"
    fig.savefig(capacity_path, dpi=110)
    plt.close(fig)
    return [breakdown_path, capacity_path]

"""A trained ladder's report in Markdown: the fit, the intervals at the target, the next run and
its forecast (and measured loss, once trained), plots and warnings."""
from __future__ import annotations

from pathlib import Path

from planner.scaling.bootstrap import BootstrapResult
from planner.scaling.fit import FitResult, describe


def write_markdown(path: Path, report: dict, fit: FitResult, boot: BootstrapResult) -> None:
    """report.md beside report.json, from the same dict."""
    nxt = report["next_run"]
    lines = ["# Seed ladder report", "", "```", describe(fit), "```", ""]
    if "prior" in report:
        prior = report["prior"]
        lines += [f"Exponents: alpha, beta held to [{prior['bounds'][0]:g}, {prior['bounds'][1]:g}], with a normal prior "
                  f"around ({prior['centre']['alpha']:g}, {prior['centre']['beta']:g}), sd {prior['width']:g} "
                  f"({', '.join(prior['sources'])}; docs/scaling-laws.md).", ""]
    lines += [f"Runs used: {len(report['runs_used'])}; left out: {len(report['left_out'])}.", ""]
    lines += [f"- {line}" for line in report["left_out"]]
    lines += ["", f"## At {report['target_flops']:.3g} FLOPs ({100 * boot.confidence:.0f} % bootstrap intervals)", "",
              "| quantity | low | high |", "| --- | --- | --- |"]
    lines += [f"| {name} | {low:.5g} | {high:.5g} |" for name, (low, high) in report["intervals"].items()]
    lines += ["", "## Next run", "", f"{nxt['shape']}, {nxt['D']:,} tokens: `{nxt['config']}`", "",
              f"Predicted loss {nxt['predicted_loss']:.4f}, interval [{nxt['loss_interval'][0]:.4f}, "
              f"{nxt['loss_interval'][1]:.4f}]."]
    if nxt.get("measured_loss") is not None:
        lines.append(f"Measured loss {nxt['measured_loss']:.4f} "
                     f"({'inside' if nxt['inside_interval'] else 'outside'} the interval).")
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}](plots/{Path(p).name})" for p in report["plots"]]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    path.write_text("\n".join(lines) + "\n")

"""`scaleplan plan`: which data / context / tensor / pipeline layouts fit in GPU memory, and how fast
each runs.

Searches every dp × cp × tp × pp split of the GPUs (cp for long sequences) with sharding stage,
micro-batch, recomputation and pipeline schedule (or evaluates one `--layout`), shows the `rule24`
and `detailed` memory models side by side, ranks what fits by predicted tokens/s, and can write the
first-ranked layout as a training config.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from launch.arguments import add_layout_plan_arguments
from launch.layout_inputs import build_inputs, config_layout, plan

NAME = "plan"
HELP = "plan memory and parallel layout: which dp × cp × tp × pp layouts fit, and how fast they run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_layout_plan_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from planner.layout.report import render, to_json
    from planner.layout.search import describe

    if args.calibration:
        return show_calibration(args.json)
    cfg = None
    if args.config:
        from trainer.config import load_config

        cfg = load_config(args.config)
    inputs = build_inputs(args, cfg)
    layout = None
    if cfg is not None and args.layout is None and not (args.emit_config or args.emit_sbatch):
        layout, backend = config_layout(cfg, inputs.n_gpus)   # the config's own layout, as --dry-run, read once
        if args.backend == "auto":
            inputs = replace(inputs, backend=backend)
    result, elapsed = plan(inputs, args.layout, layout)

    emitted, instead = None, None
    config_out = args.emit_config or (str(Path(args.emit_sbatch).with_suffix(".yaml")) if args.emit_sbatch else None)
    if config_out:
        from launch.run_configs import emit_best_runnable

        emitted, instead = emit_best_runnable(config_out, result, args.config)
        if instead and args.json:   # the JSON on stdout stays parseable
            print(instead, file=sys.stderr)
    if args.emit_sbatch:
        from launch.slurm_script import write_for_plan

        write_for_plan(args.emit_sbatch, config_out, inputs.n_gpus, inputs.gpus_per_node)
    if args.json:
        print(json.dumps(to_json(result, args.top), indent=1))
    else:
        render(result, top=args.top if args.top > 0 else len(result.ranked), elapsed_s=elapsed)
        if emitted is not None:
            print(f"wrote {config_out}: {describe(result.layouts.layout(emitted))}" + (f" ({instead})" if instead else ""))
        if args.emit_sbatch:
            print(f"wrote {args.emit_sbatch}: {inputs.n_gpus // inputs.gpus_per_node} node(s) × "
                  f"{inputs.gpus_per_node} GPU(s); submit with `sbatch {args.emit_sbatch}`")
    if args.plots:
        from planner.layout.plots import write_plots

        for path in write_plots(result, args.plots):
            if not args.json:
                print(f"wrote {path}")
    return 0


def show_calibration(as_json: bool) -> int:
    """Published runs vs the cost model's forecast of each, with its published layout."""
    from planner.layout.calibration import compare, median_abs_error, render_calibration

    comparisons = compare()
    if as_json:
        print(json.dumps({"median_abs_error": median_abs_error(comparisons), "runs": [
            {"id": c.measurement.id, "source": c.measurement.source, "gpus": c.measurement.n_gpus,
             "gpu": c.measurement.gpu.id, "layout": c.measurement.layout, "published": c.measurement.published,
             "published_step_s": c.measurement.step_time_s, "predicted_step_s": c.predicted_step_s,
             "error": c.error, "published_mfu": c.measurement.published_mfu, "predicted_mfu": c.predicted_mfu}
            for c in comparisons]}, indent=1))
    else:
        render_calibration(comparisons)
    return 0

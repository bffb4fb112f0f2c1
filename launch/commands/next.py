"""`scaleplan next RUNS.csv`: fit the runs, scale the largest run's compute, and write the next
run's training config (the chinchilla library's loop: fit -> allocate -> train -> refit)."""
from __future__ import annotations

import argparse

from launch.arguments import add_fit_arguments, add_json_flag, add_shape_arguments, fit_from_args
from launch.output import human, print_json, print_warnings
from launch.run_configs import next_run_config, write_config
from launch.scaling_arguments import add_method_arguments
from planner.errors import UserError
from planner.model_spec import ModelSpec, count_params
from planner.scaling.allocate import allocate
from planner.scaling.runs import read_runs
from planner.scaling.shape import shape_for_params
from trainer.config import PRESETS_DIR, load_config

NAME = "next"
HELP = "fit the runs and plan the next, larger run (N, D, shape and a training config)"
DEFAULT_SCALING_FACTOR = 2.0   # the chinchilla library's advice: grow compute moderately between refits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv", help="finished runs: N, D, loss (e.g. runs/runs.csv)")
    parser.add_argument("--scaling-factor", type=float, default=DEFAULT_SCALING_FACTOR,
                        help="next budget = factor x the largest run's compute (default 2)")
    parser.add_argument("--flops", type=float, metavar="C", help="use this budget instead of --scaling-factor")
    add_fit_arguments(parser)
    add_method_arguments(parser, ("parametric", "isoflop", "auto"), "parametric")
    parser.add_argument("--config", default=str(PRESETS_DIR / "default.yaml"),
                        help="base training config; its data, optimizer and batch settings are kept")
    add_shape_arguments(parser, arch_default=None)
    parser.add_argument("--batch-from", metavar="RUN_DIR",
                        help="size the batch by the gradient noise scale this run measured (its metrics.jsonl): "
                             "the critical batch of McCandlish et al. 2018")
    parser.add_argument("--out", default="next_run.yaml", help="where to write the training config")
    parser.add_argument("--name", default=None, help="train.name of the next run (default next-<N>)")
    parser.add_argument("--plots", metavar="DIR", help="write PNG figures (with the next point) into DIR")
    add_json_flag(parser)


def measured_noise_scale(run_dir: str) -> float:
    """The last gradient noise scale (tokens) a run logged; UserError if it has none."""
    import json
    from pathlib import Path

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"--batch-from: {path} not found (give a run directory)")
    values = [record["grad_noise_scale"] for record in map(json.loads, path.read_text().splitlines())
              if "grad_noise_scale" in record]
    if not values:
        raise UserError(f"--batch-from: {path} has no grad_noise_scale (it is measured when a step has 2 or "
                        f"more micro-batches per rank under ddp or one process, and log.noise_scale=true)")
    return float(values[-1])


def run(args: argparse.Namespace) -> int:
    from planner.scaling.diagnostics import all_warnings
    from planner.scaling.fit import describe

    if args.flops is None and not args.scaling_factor > 0:
        raise UserError(f"--scaling-factor must be positive, got {args.scaling_factor}")
    runs = read_runs(args.runs)
    base = load_config(args.config)
    fit = fit_from_args(args, runs)
    C = args.flops if args.flops is not None else args.scaling_factor * float(runs.C.max())
    if C <= 0:
        raise UserError(f"--flops must be positive, got {C:g}")
    law = fit.law
    if args.method != "parametric":   # N_opt from Approach 2 where the method picks it; the loss from the law
        from dataclasses import replace
        from planner.scaling.method_fit import forecast_at

        forecast = forecast_at(runs, C, args.method, args.law_form, min_flops=args.min_flops,
                               small_weight=args.small_weight)
        if next(iter(forecast["forecasts"].values()))["chosen"].startswith("isoflop"):
            power = forecast["isoflop_law"]["N_opt"]
            law = replace(law, isoflop=(power["exponent"], power["log_coefficient"]))
    allocation = allocate(law, C)
    model = base.model
    shape = shape_for_params(allocation.N, args.arch or model.arch, args.vocab_size or model.vocab_size,
                             args.seq_len or model.seq_len, args.tie_embeddings or model.tie_embeddings,
                             bias=model.bias)
    # Train the shaped model on the budget's tokens: D = C / (6 N_shape) keeps the compute exact.
    tokens = C / (6.0 * shape.params)
    name = args.name or f"next-{human(shape.params)}"
    critical = measured_noise_scale(args.batch_from) if args.batch_from else None
    config = next_run_config(args.config, shape, tokens, name, batch_tokens=critical)
    path = write_config(config, args.out)
    trained_tokens = config.train.steps * config.tokens_per_step
    assert count_params(ModelSpec.from_config(config.model)) == shape.params
    warnings = all_warnings(fit, runs, C)
    if config.train.steps < 10:
        warnings.append(f"the next run has only {config.train.steps} steps: raise --scaling-factor or lower the "
                        f"batch in {args.config}")
    payload = {"C": C, "N": shape.params, "D": trained_tokens, "tokens_per_param": trained_tokens / shape.params,
               "loss": float(fit.law.predict(shape.params, trained_tokens)),
               "law_optimum": allocation.to_json(), "shape": shape.to_json(), "config": str(path),
               "steps": config.train.steps, "tokens_per_step": config.tokens_per_step,
               "critical_batch_tokens": critical,
               "fit": {"params": fit.law.params(), "objective": fit.objective}, "warnings": warnings}
    if args.plots:
        from planner.scaling.plots import write_fit_plots
        payload["plots"] = [str(p) for p in write_fit_plots(args.plots, fit, runs, (shape.params, trained_tokens))]
    print_warnings(warnings)
    if args.json:
        print_json(payload)
        return 0
    print(describe(fit))
    print(f"next budget {C:.4g} FLOPs ({C / runs.C.max():.3g}x the largest run)")
    print(f"law optimum: N {human(allocation.N)}, D {human(allocation.D)}")
    print(f"next run: {shape.describe()}")
    print(f"  {config.train.steps} steps x {config.tokens_per_step:,} tokens = {human(trained_tokens)} tokens "
          f"({trained_tokens / shape.params:.1f} per param), predicted loss {payload['loss']:.4f}")
    if critical is not None:
        print(f"  batch from the measured critical batch of {human(critical)} tokens ({args.batch_from})")
    print(f"wrote {path}  (train with: torchrun --standalone --nproc_per_node=N launch/train.py --config {path})")
    return 0

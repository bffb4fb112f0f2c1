"""Fitting a trained ladder: the law from its usable runs, the compute-optimal next run's config at
the target, and the report (JSON, Markdown, plots, a summary), with the next run's measured loss
beside its forecast once `--train-next` has trained it."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from launch.ladder.files import finished_losses, recorded_run
from launch.ladder.rung_config import ladder_config
from launch.ladder.training import Train
from launch.output import human, print_json, print_warnings
from launch.run_configs import write_config_with_header
from planner.errors import UserError
from planner.scaling.diagnostics import all_warnings
from planner.scaling.fit import describe
from planner.scaling.ladder_fit import CONFIDENCE, exponent_warnings, fit_rungs, usable_rungs
from planner.scaling.ladder_report import write_markdown
from planner.scaling.ladder_rungs import rung_shape
from planner.scaling.plots import write_fit_plots
from planner.scaling.priors import DEFAULT_NOISE
from planner.scaling.runs import MIN_RUNS
from trainer.config import load_config


def fit_ladder(args: argparse.Namespace, directory: Path, ladder: dict, train: Train) -> int:
    """Fit the finished runs, write the next run's config, report.json, report.md and plots (and with
    --train-next, train the next run with `train` and compare its loss with the forecast)."""
    base = load_config(ladder["base_config"])
    ceiling = math.log(base.model.vocab_size)
    kept, warnings = usable_rungs(ladder["runs"], finished_losses(directory / "runs" / "runs.csv"), ceiling)
    print_warnings(warnings)
    if len(kept) < MIN_RUNS:
        raise UserError(f"only {len(kept)} of {len(ladder['runs'])} ladder runs finished with a usable loss; the "
                        f"law needs at least {MIN_RUNS}: train the rest (`scaleplan ladder run {directory}`)")
    target = float(ladder["target_flops"])
    data = ladder.get("data", {})
    result = fit_rungs(kept, target, data.get("unique_tokens"), str(directory), data.get("sources"),
                       float(ladder.get("noise", DEFAULT_NOISE)))
    runs, fit, boot, allocation = result.runs, result.fit, result.boot, result.allocation
    model = base.model
    smallest = float(min(r["N"] for r in ladder["runs"]))
    if allocation.N < smallest:
        fit_warnings_extra = [f"the fitted optimum at {target:.3g} FLOPs, N {human(allocation.N)}, lies below the "
                              f"ladder's smallest model: the next run uses the smallest shape ({human(smallest)}); a "
                              f"ladder spanning more tokens per parameter would place the optimum"]
        allocation.N, allocation.D = smallest, target / (6.0 * smallest)
    else:
        fit_warnings_extra = []
    shape = rung_shape(allocation.N, model.spec())
    tokens = target / (6.0 * shape.params)
    config = ladder_config(ladder["base_config"], shape, tokens, "next", str(directory / "runs"),
                           lr=ladder.get("lr", {}).get("value"), mup_base_width=ladder.get("mup_base_width"))
    next_path = write_config_with_header(config, directory / "next_run.yaml",
                                         f"Written by `scaleplan ladder run`: the compute-optimal run at {target:.3g} FLOPs")
    N_next, D_next = shape.params, config.train.steps * config.tokens_per_step
    noise, loo, spread = result.noise, result.loo, result.spread
    predicted, low, high = result.forecast(N_next, D_next)
    plots = write_fit_plots(directory / "plots", fit, runs, (N_next, D_next), boot,
                            dict(fit.law.params(), N_opt=allocation.N, D_opt=allocation.D, loss=allocation.loss))
    fit_warnings = all_warnings(fit, runs, target) + exponent_warnings(result) + allocation.warnings + fit_warnings_extra
    report = {"fit": fit.to_json(), "prior": result.prior.to_json(), "runs_used": [r["name"] for r, _ in kept], "left_out": warnings,
              "target_flops": target, "allocation": allocation.to_json(), "intervals": boot.to_json()["intervals"],
              "next_run": {"config": str(next_path), "N": N_next, "D": D_next, "shape": shape.describe(),
                           "predicted_loss": predicted, "loss_interval": [low, high], "run_noise": noise,
                           "leave_one_out_errors": dict(zip([r["name"] for r, _ in kept], loo.tolist())),
                           "prediction_error": spread},
              "plots": [str(p) for p in plots], "warnings": fit_warnings}
    if args.train_next:
        table = directory / "runs" / "runs.csv"
        if recorded_run(table, "next") is None:
            print(f"[ladder] training the next run {shape.describe()}", flush=True)
            code = train(str(next_path), args.nproc)
            if code != 0:
                raise UserError(f"the next run ({next_path}) exited with code {code}")
        measured = recorded_run(table, "next")
        if measured is not None and (measured[0], measured[1]) != (N_next, D_next):
            # A next run trained for an earlier plan: its loss says nothing about this forecast.
            fit_warnings.append(f"the trained next run (N {human(measured[0])}, D {human(measured[1])}) is not the one "
                                f"planned now (N {human(N_next)}, D {human(D_next)}): remove {directory / 'runs' / 'next'} "
                                f"and its row in {table} to train it")
            measured = None
        measured = None if measured is None else measured[2]
        report["next_run"]["measured_loss"] = measured
        report["next_run"]["inside_interval"] = measured is not None and low <= measured <= high
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=lambda v: v.tolist()))
    write_markdown(directory / "report.md", report, fit, boot)
    print_warnings(fit_warnings)
    if args.json:
        print_json(report)
        return 0
    print(describe(fit))
    print(f"exponents: {result.prior.describe()}")
    n_low, n_high = boot.intervals()["N_opt"]
    print(f"at {target:.3g} FLOPs: N_opt {human(allocation.N)} [{human(n_low)}, {human(n_high)}], D_opt "
          f"{human(allocation.D)} ({100 * CONFIDENCE:.0f} % bootstrap over {len(runs)} runs)")
    if allocation.epochs_per_source:
        print("epochs per source: " + ", ".join(f"{name} {epochs:.2f}"
                                                for name, epochs in allocation.epochs_per_source.items()))
    print(f"next run: {shape.describe()}, {human(D_next)} tokens -> {next_path}")
    print(f"predicted loss {predicted:.4f} in [{low:.4f}, {high:.4f}] ({100 * CONFIDENCE:.0f} %: the bootstrap's "
          f"laws with the rungs' leave-one-out error {100 * spread:.1f} %; residual noise {100 * noise:.1f} %)")
    if report["next_run"].get("measured_loss") is not None:
        measured = report["next_run"]["measured_loss"]
        verdict = "inside" if report["next_run"]["inside_interval"] else "OUTSIDE"
        print(f"measured loss  {measured:.4f}: {verdict} the interval")
    print(f"wrote {directory / 'report.md'}, {directory / 'report.json'} and plots in {directory / 'plots'}")
    return 0

"""`scaleplan fit RUNS.csv`: fit L(N, D) = E + A/N^alpha + B/D^beta to finished runs."""
from __future__ import annotations

import argparse

from launch.arguments import add_fit_arguments, add_json_flag, fit_from_args, objective_from_args
from launch.output import human, print_json, print_warnings
from launch.scaling_arguments import add_method_arguments
from planner.errors import UserError
from planner.scaling.runs import read_runs

NAME = "fit"
HELP = "fit the scaling law L(N, D) to a table of runs (N, D, loss)"
DEFAULT_CONFIDENCE = 0.9
DEFAULT_BUDGET_FACTOR = 10.0   # intervals for N_opt/D_opt are reported at 10x the largest run unless --at-flops


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv", help="CSV with N, D, loss (C optional) or C, N, loss")
    add_fit_arguments(parser)
    parser.add_argument("--drop-highest-loss", type=int, default=0, metavar="K",
                        help="leave out the K highest-loss runs (Besiroglu et al. 2024 drop 5 outliers)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N", help="bootstrap resamples (0: none)")
    parser.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE, help="interval level (default 0.9)")
    parser.add_argument("--bootstrap-method", choices=("batched", "refit"), default="batched",
                        help="batched: all resamples refined together in this process (default); refit: one "
                             "scipy fit per resample in --workers processes")
    parser.add_argument("--workers", type=int, default=None, help="refit bootstrap processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap random seed")
    parser.add_argument("--at-flops", type=float, default=None, metavar="C",
                        help="budget for the N_opt / D_opt / loss intervals (default 10x the largest run)")
    parser.add_argument("--plots", metavar="DIR", help="write PNG figures into DIR")
    parser.add_argument("--out", metavar="FIT.json", help="also write the JSON result here (for allocate --law)")
    add_method_arguments(parser, ("auto", "parametric", "isoflop", "both"), "auto")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    # Heavy imports (scipy, matplotlib) on use, so `scaleplan <any command>` starts quickly.
    from planner.scaling.bootstrap import bootstrap
    from planner.scaling.diagnostics import all_warnings
    from planner.scaling.fit import describe

    if args.drop_highest_loss < 0:
        raise UserError("--drop-highest-loss must be 0 or more")
    runs = read_runs(args.runs, min_runs=None).without_highest_loss(args.drop_highest_loss)
    if len(runs) < 5:
        raise UserError(f"{args.runs}: {len(runs)} runs left; the 5-parameter law needs at least 5")
    from planner.scaling.budgets import require_budgets

    require_budgets(runs)   # before the grid: one budget cannot pin a law down, however it is fitted
    fit = fit_from_args(args, runs)
    budget = args.at_flops if args.at_flops is not None else DEFAULT_BUDGET_FACTOR * float(runs.C.max())
    if budget <= 0:
        raise UserError(f"--at-flops must be positive, got {budget:g}")
    fit.warnings = all_warnings(fit, runs, args.at_flops)
    payload = fit.to_json()
    N_opt, D_opt = fit.law.optimal_allocation(budget)
    payload["at_budget"] = {"C": budget, "N": N_opt, "D": D_opt, "loss": float(fit.law.predict(N_opt, D_opt))}
    from planner.scaling.method_fit import forecast_at

    payload["forecast"] = forecast_at(runs, budget, args.method, args.law_form, args.confidence, args.min_flops,
                                      args.small_weight, seed=args.seed)
    fit.warnings += payload["forecast"]["warnings"]
    if "isoflop_law" in payload["forecast"] and args.method in ("isoflop", "auto"):
        chosen = next(iter(payload["forecast"]["forecasts"].values()))["chosen"]
        if chosen.startswith("isoflop"):   # allocate / next / ladder then take N_opt from Approach 2
            payload["allocation"] = dict(payload["forecast"]["isoflop_law"]["N_opt"], method="isoflop")
    boot = None
    if args.bootstrap:
        boot = bootstrap(runs, fit, args.bootstrap, budget, objective_from_args(args), confidence=args.confidence,
                         seed=args.seed, workers=args.workers, method=args.bootstrap_method)
        payload["intervals"] = boot.to_json()["intervals"]
        payload["bootstrap"] = boot.to_json()
    if args.plots:
        from planner.scaling.plots import write_fit_plots
        point = dict(fit.law.params(), N_opt=N_opt, D_opt=D_opt, loss=payload["at_budget"]["loss"])
        payload["plots"] = [str(p) for p in write_fit_plots(args.plots, fit, runs, boot=boot, point=point)]
    if args.out:
        import json
        with open(args.out, "w") as handle:
            json.dump(payload, handle, indent=2, default=lambda v: v.tolist())
    print_warnings(fit.warnings)
    if args.json:
        print_json(payload)
        return 0
    print(describe(fit))
    at = payload["at_budget"]
    print(f"at C = {budget:.3g} FLOPs: N_opt {human(at['N'])}, D_opt {human(at['D'])} "
          f"({at['D'] / at['N']:.1f} tokens/param), loss {at['loss']:.4f}")
    print_forecast(payload["forecast"])
    if boot is not None:
        print(f"{100 * boot.confidence:.0f} % bootstrap intervals ({len(boot.params)}/{boot.requested} resamples):")
        for name, (low, high) in boot.intervals().items():
            print(f"  {name:>6}: [{low:.5g}, {high:.5g}]")
    for path in payload.get("plots", []):
        print(f"wrote {path}")
    return 0


def print_forecast(forecast: dict) -> None:
    level = f"{100 * forecast['confidence']:.0f} %"
    for method, f in forecast["forecasts"].items():
        low, high = f["N_opt_interval"]
        print(f"{method} ({f['chosen']}): N_opt {human(f['N_opt'])} [{human(low)}, {human(high)}], D_opt "
              f"{human(f['D_opt'])}, loss {f['loss']:.4f} [{f['loss_interval'][0]:.4f}, {f['loss_interval'][1]:.4f}] "
              f"({level}, widened for what the law's form misses)")
    if "disagreement" in forecast:
        print(f"parametric / isoFLOP N_opt = {forecast['disagreement']['N_opt_ratio']:.3g}")

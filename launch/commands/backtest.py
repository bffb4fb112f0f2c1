"""`scaleplan backtest RUNS.csv`: fit the runs up to a compute cut, forecast every larger budget, and
say how far the law carried: errors and interval coverage per method, as a table, a plot or JSON."""
from __future__ import annotations

import argparse

from launch.arguments import add_json_flag
from launch.output import human, print_json, print_warnings
from launch.scaling_arguments import add_method_arguments
from planner.errors import UserError
from planner.scaling.runs import read_runs

NAME = "backtest"
HELP = "fit runs up to a compute cut, forecast the larger ones, and score the forecasts and intervals"
METHODS = ("parametric", "isoflop", "auto")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv", help="CSV with N, D, loss (C, budget optional) or C, N, loss")
    cut = parser.add_mutually_exclusive_group()
    cut.add_argument("--cut-flops", type=float, metavar="C", help="fit the budgets up to C, forecast the rest")
    cut.add_argument("--cut-fraction", type=float, metavar="F",
                     help="cut F of the way through the budgets in log compute (default 0.5)")
    add_method_arguments(parser, ("all", *METHODS), "all")
    parser.add_argument("--confidence", type=float, default=0.9, help="interval level (default 0.9)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the interval draws")
    parser.add_argument("--plot", metavar="OUT.png", help="write the forecasts against the truth here")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from planner.scaling.backtest import backtest

    if not 0 < args.confidence < 1:
        raise UserError(f"--confidence must lie between 0 and 1, got {args.confidence}")
    if args.small_weight is not None and not 0 <= args.small_weight <= 1:
        raise UserError(f"--small-weight must lie in [0, 1], got {args.small_weight:g}")
    runs = read_runs(args.runs, min_runs=None)
    methods = METHODS if args.method == "all" else (args.method,)
    result = backtest(runs, args.cut_flops, args.cut_fraction, methods, args.law_form, args.confidence,
                      args.min_flops, args.small_weight, seed=args.seed)
    payload = result.to_json()
    if args.plot:
        from planner.scaling.backtest_plots import plot_backtest
        payload["plot"] = str(plot_backtest(result, args.plot))
    print_warnings(result.warnings)
    if args.json:
        print_json(payload)
        return 0
    print(f"fitted {len(result.fitted_budgets)} budgets up to {result.cut:.3g} FLOPs; forecast "
          f"{len(result.forecast_budgets)} budgets up to {max(result.forecast_budgets):.3g} "
          f"({payload['extrapolation']:.0f}x); {100 * result.confidence:.0f} % intervals")
    print(f"{'method':>10}  {'N_opt err':>9}  {'loss err':>8}  {'N_opt cov':>9}  {'loss cov':>8}  {'covered':>9}  "
          f"chosen")
    for score in result.scores:
        s = score.summary()
        N_err = "-" if s["N_opt_median_error"] is None else f"{100 * s['N_opt_median_error']:.1f} %"
        N_cov = "-" if s["N_opt_coverage"] is None else f"{sum(score.N_covered)}/{len(score.N_covered)}"
        print(f"{s['method']:>10}  {N_err:>9}  {100 * s['loss_mean_error']:>6.2f} %  {N_cov:>9}  "
              f"{sum(score.loss_covered):>3}/{len(score.loss_covered):<4}  {100 * s['coverage']:>7.0f} %  {s['chosen']}")
    print("N_opt err: median |forecast / measured - 1| over the larger budgets whose sizes locate a "
          "minimum; loss err: mean over the larger runs")
    for score in result.scores[-1:]:
        for row in score.rows:
            if row["kind"] == "N_opt":
                print(f"  {score.method} at {row['C']:.3g} FLOPs: N_opt {human(row['forecast'])} "
                      f"[{human(row['low'])}, {human(row['high'])}], measured {human(row['truth'])}")
    if "plot" in payload:
        print(f"wrote {payload['plot']}")
    return 0

"""`scaleplan ladder`: design the seed runs that pin the scaling law, write one training config per
run, then (`scaleplan ladder run DIR`) train them, fit, allocate the target and write the next run.

    scaleplan ladder --budget-flops C | --gpu-hours H --gpu G [--runs K] [--target-flops C_target]
                     [--noise S] [--law LAW] [--config base.yaml] [--unique-tokens U] [--no-mup] [--tune-lr] --out DIR
    scaleplan ladder run DIR [--local --nproc N | --slurm] [--tune-lr] [--train-next]

The runs use µP (`model.mup`, base width the smallest rung's d_model), so a learning rate tuned on the
smallest rung holds for all of them; `--tune-lr` sweeps it there (LR_SWEEP) before the ladder trains.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from launch.arguments import add_law_argument
from launch.ladder.lr_sweep import LR_SWEEP
from launch.ladder.training import train_one
from planner.errors import UserError
from planner.scaling.ladder_rungs import MIN_LADDER_STEPS  # noqa: F401  (the floor every rung trains, for callers)

NAME = "ladder"
HELP = "design the seed-run ladder (configs and its cost), or `ladder run DIR`: train it, fit, plan the next run"
DEFAULT_RUNS = 20
DEFAULT_NOISE = 0.01
DEFAULT_MFU = 0.4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="*", metavar="run DIR",
                        help="leave out to design a ladder; `run DIR` trains the ladder in DIR, fits and plans")
    budget = parser.add_argument_group("design: the ladder's budget (one of)")
    budget.add_argument("--budget-flops", type=float, metavar="C", help="total FLOPs all seed runs may spend")
    budget.add_argument("--gpu-hours", type=float, metavar="H", help="total GPU-hours, with --gpu (and --mfu)")
    budget.add_argument("--gpu", metavar="ID", help="GPU id from the catalog, e.g. h100-sxm")
    budget.add_argument("--mfu", type=float, default=DEFAULT_MFU, help=f"model FLOP utilisation (default {DEFAULT_MFU})")
    design = parser.add_argument_group("design")
    design.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"seed runs (default {DEFAULT_RUNS})")
    design.add_argument("--target-flops", type=float, metavar="C",
                        help="the budget the ladder forecasts (default 100x its largest run)")
    design.add_argument("--noise", type=float, default=DEFAULT_NOISE,
                        help="run-to-run noise of the final loss, as a log-normal std (default 0.01)")
    add_law_argument(parser)
    design.add_argument("--config", default=None, help="base training config (default configs/default.yaml)")
    design.add_argument("--unique-tokens", type=float, metavar="U",
                        help="unique tokens available (default: the base config's training data, when prepared)")
    design.add_argument("--out", metavar="DIR", help="the ladder directory: configs/, ladder.json, later runs/")
    design.add_argument("--force", action="store_true", help="overwrite a ladder designed from another config")
    design.add_argument("--mup", action=argparse.BooleanOptionalAction, default=True,
                        help="train the runs under µP, base width the smallest rung's (default; --no-mup: the "
                             "base config's parametrization)")
    parser.add_argument("--tune-lr", action="store_true",
                        help=f"before the ladder trains, sweep {len(LR_SWEEP)} learning rates (the base's x "
                             f"{', '.join(f'{f:.3g}' for f in LR_SWEEP)}) on the smallest rung only and write the "
                             f"best into every rung's config (at design, or on `ladder run`)")
    run = parser.add_argument_group("ladder run DIR")
    run.add_argument("--local", action="store_true", help="train the runs here, one after another (default)")
    run.add_argument("--nproc", type=int, default=1, help="torchrun processes per run (default 1)")
    run.add_argument("--slurm", action="store_true",
                     help="write DIR/ladder.sbatch, a SLURM job array of the unfinished runs, instead of training")
    run.add_argument("--train-next", action="store_true",
                     help="after the fit, train the planned next run too and compare its loss with the forecast")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    if not args.action:
        from launch.ladder.design import design

        return design(args)
    if args.action[0] != "run" or len(args.action) != 2:
        raise UserError(f"expected `scaleplan ladder run DIR`, got `{' '.join(args.action)}`")
    from launch.ladder.training import run_ladder

    # `train_one` is looked up here, at call time, so a test can stand in for the trainer.
    return run_ladder(args, Path(args.action[1]), train_one)

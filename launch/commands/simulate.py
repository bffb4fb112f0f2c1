"""`scaleplan simulate`: replay the fit -> allocate -> train loop against a known law with noise."""
from __future__ import annotations

import argparse

import numpy as np

from launch.arguments import add_fit_arguments, add_json_flag, add_law_argument, objective_from_args
from launch.output import human, print_json
from planner.scaling.grid import load_grid
from planner.scaling.law import load_law
from planner.scaling.simulate import seed_runs, simulate

NAME = "simulate"
HELP = "check that seed runs and a fit grid recover a known law, by simulating the scaling loop"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_law_argument(parser)
    parser.add_argument("--seed-flops", type=float, nargs=2, default=(1e17, 1e19), metavar=("LOW", "HIGH"),
                        help="compute range of the seed runs (default 1e17 1e19)")
    parser.add_argument("--seeds", type=int, default=20, help="number of seed runs (default 20)")
    parser.add_argument("--noise", type=float, default=0.01, help="std of log-normal loss noise (default 0.01)")
    parser.add_argument("--iterations", type=int, default=5, help="fit -> allocate -> train rounds (default 5)")
    parser.add_argument("--scaling-factor", type=float, default=2.0, help="compute growth per round (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    add_fit_arguments(parser)
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    truth = load_law(args.law)
    grid = None
    if args.grid:
        # Grid files may leave parameters out; their defaults come from the seed runs' losses.
        grid = load_grid(args.grid, seed_runs(truth, tuple(args.seed_flops), args.seeds, args.noise,
                                              np.random.default_rng(args.seed)), args.grid_slices)
    steps = simulate(truth, tuple(args.seed_flops), args.seeds, args.noise, args.iterations, args.scaling_factor,
                     objective_from_args(args), args.grid_slices, grid, args.seed)
    if args.json:
        print_json({"truth": truth.params(), "steps": [s.to_json(truth) for s in steps]})
        return 0
    true = truth.params()
    print("truth: " + ", ".join(f"{k} {v:.5g}" for k, v in true.items()))
    print(f"{'iter':>4} {'runs':>4} {'C':>9} {'N':>7} {'N err':>7} {'D err':>7} {'loss excess':>11}   "
          f"{'E':>7} {'A':>9} {'B':>9} {'alpha':>6} {'beta':>6}")
    for s in steps:
        e = s.relative_errors(truth)
        p = s.fitted.params()
        print(f"{s.iteration:>4} {s.n_runs:>4} {s.C:>9.3g} {human(s.N):>7} {100 * e['N_opt']:>+6.1f}% "
              f"{100 * e['D_opt']:>+6.1f}% {s.loss_excess:>11.2e}   {p['E']:>7.4f} {p['A']:>9.4g} {p['B']:>9.4g} "
              f"{p['alpha']:>6.3f} {p['beta']:>6.3f}")
    last = steps[-1].relative_errors(truth)
    print("final relative errors: " + ", ".join(f"{k} {100 * v:+.1f}%" for k, v in last.items()))
    return 0

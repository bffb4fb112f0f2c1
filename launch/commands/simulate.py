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
    parser.add_argument("--design", choices=("loguniform", "isoflop"), default="loguniform",
                        help="seed placement: log-uniform random (default) or IsoFLOP slices spanning 1-400 "
                             "tokens/param, as `scaleplan ladder` places them (same runs, same mean compute)")
    parser.add_argument("--slices", type=int, default=4, help="isoflop: budget slices (default 4)")
    parser.add_argument("--repeats", type=int, default=50,
                        help="repetitions of the seed ladder for N_opt's bias and scatter (default 50; 0: skip)")
    parser.add_argument("--target-factor", type=float, default=100.0,
                        help="bias and scatter of N_opt at this x the top of --seed-flops (default 100)")
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
                     objective_from_args(args), args.grid_slices, grid, args.seed, args.design, args.slices)
    spread = None
    if args.repeats > 0:
        from planner.scaling.ladder import score
        from planner.scaling.simulate import design_for_range

        design, total = design_for_range(args.design, tuple(args.seed_flops), args.seeds, args.slices)
        target = args.target_factor * args.seed_flops[1]    # the same target for every design
        spread = score(design, truth, total, target, args.noise, args.repeats, args.seed,
                       objective=objective_from_args(args))
    if args.json:
        print_json({"truth": truth.params(), "steps": [s.to_json(truth) for s in steps],
                    "seed_design": spread.to_json() if spread else None})
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
    if spread is not None:
        print(f"seed design {spread.design.describe()}: N_opt at {spread.target_flops:.3g} FLOPs over {args.repeats} "
              f"repetitions: bias {100 * spread.bias:+.1f} %, scatter ±{100 * spread.scatter:.1f} % (90 % range), "
              f"median |error| {100 * spread.median_error:.1f} %")
    return 0

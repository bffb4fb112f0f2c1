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
import csv
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from launch.arguments import add_law_argument
from launch.output import human, print_json, print_warnings
from planner.errors import UserError

NAME = "ladder"
HELP = "design the seed-run ladder (configs and its cost), or `ladder run DIR`: train it, fit, plan the next run"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_RUNS = 20
DEFAULT_NOISE = 0.01
DEFAULT_MFU = 0.4
MIN_LADDER_STEPS = 100       # a shorter run is mostly warmup: its loss says more about the schedule than N, D
LADDER_WIDTH_STEP = 32       # one 32-wide head per 32: the shaper's tiny models, for CPU ladders
SHAPE_TOLERANCE = 0.25       # a rung's size may miss its target: its tokens keep the budget exact
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.9
LR_SWEEP = tuple(10 ** (k / 2) for k in range(-2, 3))   # x the base config's learning rate: 0.1 to 10, half a decade apart


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
        return design(args)
    if args.action[0] != "run" or len(args.action) != 2:
        raise UserError(f"expected `scaleplan ladder run DIR`, got `{' '.join(args.action)}`")
    return run_ladder(args, Path(args.action[1]))


# ---------------------------------------------------------------- design

def config_hash(path: Path) -> str:
    """The base config as the trainer resolves it (comments and key order do not count)."""
    from trainer.config import load_config

    return hashlib.sha256(load_config(path).to_yaml().encode()).hexdigest()[:16]


def data_tokens(config) -> Optional[float]:
    meta = Path(config.data.dir) / "meta.json"
    try:
        return float(json.loads(meta.read_text())["tokens"]["train"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def without_spike_skips(config):
    """A ladder run keeps no checkpoints, so the spike guard cannot roll back: it can only skip steps,
    and a short run's gradient norm rises for real as its loss leaves the early plateau (the guard
    then skipped every later step and stopped 2 of 9 CPU rungs at step ~100). Non-finite steps are
    still skipped; a run that diverges shows in its final loss, which the fit leaves out."""
    from trainer.config import Config

    tree = config.model_dump(mode="json")
    tree["guards"].update(spike_sigma=0.0)
    return Config.model_validate(tree)


def design(args: argparse.Namespace) -> int:
    from launch.run_configs import ladder_run_config, write_config_with_header
    from planner.model_spec import ModelSpec, count_params
    from planner.scaling.allocate import SAFE_EPOCHS, allocate, budget_flops
    from planner.scaling.ladder import design_ladder, place
    from planner.scaling.law import load_law
    from planner.scaling.shape import shape_for_params
    from trainer.config import PRESETS_DIR, load_config

    if args.out is None:
        raise UserError("give --out DIR: where the ladder's configs and ladder.json go")
    if args.budget_flops is None and args.gpu_hours is None:
        raise UserError("give the ladder's budget: --budget-flops C or --gpu-hours H --gpu ID")
    total = budget_flops(flops=args.budget_flops, gpu_hours=args.gpu_hours, gpu=args.gpu,
                         mfu=args.mfu if args.gpu_hours is not None else None)
    if args.noise < 0 or not math.isfinite(args.noise):
        raise UserError(f"--noise must be a non-negative number, got {args.noise}")
    base_path = Path(args.config) if args.config else PRESETS_DIR / "default.yaml"
    base = load_config(base_path)
    out = Path(args.out)
    digest = config_hash(base_path)
    existing = out / "ladder.json"
    if existing.is_file() and not args.force:
        previous = json.loads(existing.read_text())
        if previous.get("config_hash") != digest:
            raise UserError(f"{out} holds a ladder designed from another config ({previous.get('base_config')}); "
                            f"give a new --out, or --force to replace it")
    model = base.model
    prior = load_law(args.law)
    smallest = ModelSpec(arch=model.arch, n_layers=1, d_model=LADDER_WIDTH_STEP, n_heads=1, vocab_size=model.vocab_size,
                         seq_len=model.seq_len, n_kv_heads=1 if model.arch == "llama" else None,
                         tie_embeddings=model.tie_embeddings, bias=model.bias)
    min_params = float(count_params(smallest))
    # The cheapest run must train at least MIN_LADDER_STEPS steps of the base batch (kept at that length).
    min_tokens = MIN_LADDER_STEPS * base.global_batch * model.seq_len
    if total < 6.0 * min_params * min_tokens * args.runs:
        raise UserError(f"a budget of {total:.3g} FLOPs is too small for {args.runs} runs: one run of the smallest "
                        f"model ({min_params:,.0f} params, {min_tokens:,} tokens) costs "
                        f"{6.0 * min_params * min_tokens:.3g} FLOPs; raise the budget or lower --runs")
    # The shaper may build a rung up to SHAPE_TOLERANCE larger than placed, and its tokens shrink to keep
    # the budget: place with that margin so every rung still trains MIN_LADDER_STEPS steps.
    placed_tokens = min_tokens * (1.0 + SHAPE_TOLERANCE)
    chosen = design_ladder(prior, total, args.runs, args.noise, args.target_flops, min_params, placed_tokens)
    placement = place(chosen.best.design, total, min_params=min_params, min_tokens=placed_tokens)
    target = chosen.best.target_flops
    configs_dir, runs_dir = out / "configs", out / "runs"
    rungs, warnings = [], []
    budgets = 6.0 * placement.N * placement.D
    shapes = [shape_for_params(N, model.arch, model.vocab_size, model.seq_len, model.tie_embeddings, model.bias,
                               tolerance=SHAPE_TOLERANCE, width_step=LADDER_WIDTH_STEP) for N in placement.N]
    # µP's base width is the smallest rung's: the learning rate tuned (or set) there holds for the rest.
    base_width = min(shape.spec.d_model for shape in shapes) if args.mup else None
    for i, (shape, C, s) in enumerate(zip(shapes, budgets, placement.slice_index)):
        tokens = C / (6.0 * shape.params)
        name = f"rung{i:02d}-s{int(s)}-{human(shape.params)}"
        config = without_spike_skips(ladder_run_config(base_path, shape, tokens, name, str(runs_dir), seed_offset=i,
                                                       mup_base_width=base_width))
        if config.train.steps < MIN_LADDER_STEPS:
            raise UserError(f"a budget of {total:.3g} FLOPs is too small: run {name} would train only "
                            f"{config.train.steps} steps; raise the budget or lower --runs")
        path = write_config_with_header(config, configs_dir / f"{name}.yaml",
                                        f"Written by `scaleplan ladder`: seed run {i} of {len(placement.N)}, "
                                        f"slice {int(s)}, {C:.3g} FLOPs")
        trained = config.train.steps * config.tokens_per_step
        rungs.append({"name": name, "config": str(path), "slice": int(s), "N": shape.params, "D": trained,
                      "C": 6.0 * shape.params * trained, "tokens_per_param": trained / shape.params,
                      "steps": config.train.steps, "global_batch": config.global_batch,
                      "shape": shape.describe()})
    planned = sum(r["C"] for r in rungs)
    N_prior, _ = prior.optimal_allocation(target)
    low, high = chosen.best.interval(N_prior)
    unique = args.unique_tokens if args.unique_tokens is not None else data_tokens(base)
    advice = {}
    if unique is not None:
        allocation = allocate(prior, target, unique)
        warnings += allocation.warnings
        advice = {"unique_tokens": unique, "target_allocation": allocation.to_json()}
        largest_D = max(r["D"] for r in rungs)
        if largest_D / unique > SAFE_EPOCHS:
            warnings.append(f"the ladder's longest run reads {largest_D / unique:.1f} epochs of the {human(unique)} "
                            f"unique tokens: past ~{SAFE_EPOCHS:.0f} epochs repeated data is worth less (Muennighoff "
                            f"et al. 2023) and the fitted law would be biased; prepare more data or lower the budget")
    payload = {"base_config": str(base_path), "config_hash": digest, "law": prior.name, "noise": args.noise,
               "budget_flops": total, "planned_flops": planned, "target_flops": target,
               "design": chosen.best.design.to_json(), "simulated": chosen.to_json(),
               "forecast": {"N_opt_prior": N_prior, "N_opt_interval": [low, high], "confidence": CONFIDENCE,
                            "loguniform_median_error": chosen.reference.median_error,
                            "median_error": chosen.best.median_error, "bias": chosen.best.bias,
                            "scatter": chosen.best.scatter},
               "data": advice, "runs": rungs, "warnings": warnings, "mup_base_width": base_width,
               "lr": {"value": base.optim.lr, "tune": args.tune_lr, "sweep": None}}
    out.mkdir(parents=True, exist_ok=True)
    existing.write_text(json.dumps(payload, indent=2))
    print_warnings(warnings)
    if args.json:
        print_json(payload)
        return 0
    print(f"ladder: {chosen.best.design.describe()}")
    print(f"  {len(rungs)} runs, {planned:.3g} FLOPs planned of {total:.3g}; models {human(min(r['N'] for r in rungs))}"
          f"-{human(max(r['N'] for r in rungs))} params, {min(r['tokens_per_param'] for r in rungs):.1f}-"
          f"{max(r['tokens_per_param'] for r in rungs):.0f} tokens/param")
    for r in rungs:
        print(f"  {r['name']:<22} N {human(r['N']):>6}  D {human(r['D']):>6}  {r['steps']:>5} steps x "
              f"{r['global_batch']} seqs  {r['C']:.3g} FLOPs")
    print(f"forecast before training (law {prior.name}, noise {100 * args.noise:g} %): N_opt at {target:.3g} FLOPs "
          f"in [{human(low)}, {human(high)}] ({100 * CONFIDENCE:.0f} %); median error {100 * chosen.best.median_error:.0f} %"
          f" vs {100 * chosen.reference.median_error:.0f} % for log-uniform seeds")
    smallest_rung = min(rungs, key=lambda r: r["N"])
    parametrization = (f"µP, base width {base_width} (the smallest rung's d_model)" if base_width is not None
                       else "the base config's parametrization (no µP: a learning rate may not hold across widths)")
    tuning = (f"; --tune-lr: {len(LR_SWEEP)} runs of {smallest_rung['name']} ({len(LR_SWEEP) * smallest_rung['C']:.3g} "
              f"FLOPs) choose it before the ladder trains" if args.tune_lr else "")
    print(f"learning rate {base.optim.lr:g} for every run, {parametrization}{tuning}")
    print(f"wrote {existing} and {len(rungs)} configs in {configs_dir}; train with: scaleplan ladder run {out} "
          f"--local --nproc N")
    return 0


# ---------------------------------------------------------------- run

def load_ladder(directory: Path, config: Optional[str]) -> dict:
    path = directory / "ladder.json"
    if not path.is_file():
        raise UserError(f"{directory} is not a ladder directory (no ladder.json): design one with `scaleplan ladder "
                        f"--out {directory}`")
    try:
        ladder = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON (line {error.lineno})") from None
    if config is not None and config_hash(Path(config)) != ladder.get("config_hash"):
        raise UserError(f"{directory} was designed from another config ({ladder.get('base_config')}), not {config}: "
                        f"design a new ladder for it")
    return ladder


def finished_losses(table: Path) -> dict[str, float]:
    """name -> final loss of every run the trainer recorded (non-numbers read as NaN)."""
    if not table.is_file():
        return {}
    losses = {}
    with table.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                losses[row["name"]] = float(row["loss"])
            except (KeyError, TypeError, ValueError):
                losses[row.get("name", "?")] = float("nan")
    return losses


def micro_batch_for(config: str, nproc: int) -> list[str]:
    """A small run's batch may not split over `nproc` ranks at the base's micro-batch: shrink it."""
    from trainer.config import load_config

    cfg = load_config(config)
    micro = min(cfg.parallel.micro_batch, max(1, cfg.global_batch // nproc))
    while cfg.global_batch % (micro * nproc) and micro > 1:
        micro -= 1
    if cfg.global_batch % (micro * nproc):
        raise UserError(f"{config}: a global batch of {cfg.global_batch} sequences does not split over {nproc} ranks")
    return [] if micro == cfg.parallel.micro_batch else [f"parallel.micro_batch={micro}"]


def train_one(config: str, nproc: int) -> int:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(REPO / "launch" / "train.py"), "--config", config, *micro_batch_for(config, nproc)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.run(command, cwd=REPO, env=env).returncode


def run_ladder(args: argparse.Namespace, directory: Path) -> int:
    ladder = load_ladder(directory, args.config)
    rungs = ladder["runs"]
    table = directory / "runs" / "runs.csv"
    if args.nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {args.nproc}")
    done = finished_losses(table)
    if (args.tune_lr or ladder.get("lr", {}).get("tune")) and ladder.get("lr", {}).get("sweep") is None:
        if any(r["name"] in done for r in rungs):
            raise UserError(f"{directory} has runs trained at learning rate {ladder.get('lr', {}).get('value')}: a "
                            f"tuned rate now would mix two along the ladder; tune on a new ladder (--tune-lr at design)")
        if args.slurm:
            raise UserError("--tune-lr trains the sweep here, one run after another: run `scaleplan ladder run "
                            f"{directory} --local --tune-lr` first, then --slurm for the ladder")
        tune_learning_rate(directory, ladder, args.nproc)
    todo = [r for r in rungs if r["name"] not in done]
    if args.slurm:
        return write_slurm(directory, todo)
    for i, rung in enumerate(todo):
        print(f"[ladder] training {rung['name']} ({i + 1}/{len(todo)} left; {len(rungs) - len(todo)} finished before)",
              flush=True)
        code = train_one(rung["config"], args.nproc)
        if code != 0:
            print(f"warning: {rung['name']} exited with code {code}; it is left out of the fit", file=sys.stderr)
    if todo:
        print(f"[ladder] skipped {len(rungs) - len(todo)} finished run(s)" if len(todo) < len(rungs) else
              "[ladder] all runs trained", flush=True)
    else:
        print(f"[ladder] all {len(rungs)} runs already finished: fitting", flush=True)
    return fit_ladder(args, directory, ladder)


def tune_learning_rate(directory: Path, ladder: dict, nproc: int) -> float:
    """Train the smallest rung at each of LR_SWEEP x the base's learning rate (runs already in the
    sweep's table are skipped), write the best into every rung's config and ladder.json; return it."""
    from launch.run_configs import write_config_with_header
    from planner.scaling.ladder import diverged
    from trainer.config import Config, load_config

    smallest = min(ladder["runs"], key=lambda r: r["N"])
    sweep_dir = directory / "lr_sweep"
    base_lr = float(ladder["lr"]["value"])
    rung_config = load_config(smallest["config"])
    ceiling = math.log(rung_config.model.vocab_size)
    names = {}
    for factor in LR_SWEEP:
        lr = float(f"{base_lr * factor:.3g}")
        tree = rung_config.model_dump(mode="json")
        name = f"lr{lr:.3g}"
        tree["optim"].update(lr=lr)
        tree["train"].update(name=name, runs_dir=str(sweep_dir))
        names[name] = write_config_with_header(Config.model_validate(tree), sweep_dir / "configs" / f"{name}.yaml",
                                               f"Written by `scaleplan ladder --tune-lr`: {smallest['name']} at "
                                               f"learning rate {lr:g}"), lr
    done = finished_losses(sweep_dir / "runs.csv")
    for i, (name, (path, lr)) in enumerate(names.items()):
        if name in done:
            continue
        print(f"[ladder] tuning the learning rate on {smallest['name']}: {lr:g} ({i + 1}/{len(names)})", flush=True)
        code = train_one(str(path), nproc)
        if code != 0:
            print(f"warning: the sweep's run at learning rate {lr:g} exited with code {code}", file=sys.stderr)
    losses = finished_losses(sweep_dir / "runs.csv")
    sweep = {lr: losses.get(name, float("nan")) for name, (_, lr) in names.items()}
    usable = {lr: loss for lr, loss in sweep.items() if not diverged(loss, ceiling)}
    if not usable:
        raise UserError(f"every learning rate of the sweep in {sweep_dir} diverged or did not finish: lower the base "
                        f"config's optim.lr and design the ladder again")
    best = min(usable, key=usable.get)
    if best in (min(sweep), max(sweep)):
        print_warnings([f"the best learning rate {best:g} is at the edge of the sweep: the optimum may lie beyond it; "
                        f"set the base config's optim.lr to {best:g} and design the ladder again to centre the sweep"])
    for rung in ladder["runs"]:
        path = Path(rung["config"])
        tree = load_config(path).model_dump(mode="json")
        tree["optim"].update(lr=best)
        header = path.read_text().splitlines()[0].lstrip("# ")
        write_config_with_header(Config.model_validate(tree), path,
                                 f"{header}; learning rate {best:g}, tuned on {smallest['name']}")
    ladder["lr"] = {"value": best, "tune": True, "sweep": {f"{lr:g}": loss for lr, loss in sweep.items()},
                    "tuned_on": smallest["name"]}
    (directory / "ladder.json").write_text(json.dumps(ladder, indent=2))
    table = "  ".join(f"{lr:g}: {loss:.4f}" for lr, loss in sweep.items())
    print(f"[ladder] learning rate {best:g} (final loss by learning rate: {table}); written into {len(ladder['runs'])} "
          f"configs", flush=True)
    return best


def write_slurm(directory: Path, todo: list[dict]) -> int:
    from launch.slurm_script import SlurmJob, render

    if not todo:
        print(f"every run of {directory} has finished: `scaleplan ladder run {directory}` fits them")
        return 0
    job = SlurmJob(configs=[r["config"] for r in todo], nodes=1, gpus_per_node=1,
                   log_dir=str((directory / "logs").resolve()))
    text, _ = render(job)
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    out = directory / "ladder.sbatch"
    out.write_text(text)
    out.chmod(0o755)
    print(f"wrote {out}: a job array of {len(todo)} run(s), one GPU each; submit with `sbatch {out}`, then "
          f"`scaleplan ladder run {directory}` fits what finished")
    return 0


def fit_ladder(args: argparse.Namespace, directory: Path, ladder: dict) -> int:
    import numpy as np

    from launch.run_configs import ladder_run_config, write_config_with_header
    from planner.scaling.allocate import allocate
    from planner.scaling.bootstrap import bootstrap, warm_starts
    from planner.scaling.diagnostics import all_warnings
    from planner.scaling.fit import fit_law
    from planner.scaling.ladder import (diverged, leave_one_out_errors, prediction_error, predictive_interval,
                                        residual_noise)
    from planner.scaling.runs import MIN_RUNS, Runs
    from planner.scaling.shape import shape_for_params
    from trainer.config import load_config

    base = load_config(ladder["base_config"])
    ceiling = math.log(base.model.vocab_size)
    losses = finished_losses(directory / "runs" / "runs.csv")
    kept, warnings = [], []
    for rung in ladder["runs"]:
        loss = losses.get(rung["name"])
        if loss is None:
            warnings.append(f"{rung['name']} has not finished: left out of the fit")
        elif diverged(loss, ceiling):
            warnings.append(f"{rung['name']} diverged (final loss {loss:g}, a uniform guess is {ceiling:.3f}): "
                            f"left out of the fit")
        else:
            kept.append((rung, loss))
    print_warnings(warnings)
    if len(kept) < MIN_RUNS:
        raise UserError(f"only {len(kept)} of {len(ladder['runs'])} ladder runs finished with a usable loss; the "
                        f"law needs at least {MIN_RUNS}: train the rest (`scaleplan ladder run {directory}`)")
    runs = Runs(N=np.array([float(r['N']) for r, _ in kept]), D=np.array([float(r['D']) for r, _ in kept]),
                loss=np.array([loss for _, loss in kept]), source=str(directory))
    target = float(ladder["target_flops"])
    fit = fit_law(runs)
    boot = bootstrap(runs, fit, BOOTSTRAP_RESAMPLES, target, confidence=CONFIDENCE)
    unique = ladder.get("data", {}).get("unique_tokens")
    allocation = allocate(fit.law, target, unique)
    if not (math.isfinite(allocation.N) and allocation.N > 0):
        raise UserError(f"the fitted law gives no finite optimum at {target:.3g} FLOPs (alpha {fit.law.alpha:.3g}, "
                        f"beta {fit.law.beta:.3g}): add runs or widen the ladder")
    model = base.model
    smallest = float(min(r["N"] for r in ladder["runs"]))
    if allocation.N < smallest:
        fit_warnings_extra = [f"the fitted optimum at {target:.3g} FLOPs, N {human(allocation.N)}, lies below the "
                              f"ladder's smallest model: the next run uses the smallest shape ({human(smallest)}); a "
                              f"ladder spanning more tokens per parameter would place the optimum"]
        allocation.N, allocation.D = smallest, target / (6.0 * smallest)
    else:
        fit_warnings_extra = []
    shape = shape_for_params(allocation.N, model.arch, model.vocab_size, model.seq_len, model.tie_embeddings,
                             model.bias, tolerance=SHAPE_TOLERANCE, width_step=LADDER_WIDTH_STEP)
    tokens = target / (6.0 * shape.params)
    config = without_spike_skips(ladder_run_config(ladder["base_config"], shape, tokens, "next",
                                                   str(directory / "runs"), lr=ladder.get("lr", {}).get("value"),
                                                   mup_base_width=ladder.get("mup_base_width")))
    next_path = write_config_with_header(config, directory / "next_run.yaml",
                                         f"Written by `scaleplan ladder run`: the compute-optimal run at {target:.3g} FLOPs")
    N_next, D_next = shape.params, config.train.steps * config.tokens_per_step
    noise = residual_noise(fit.law, runs.N, runs.D, runs.loss)
    # The interval's noise is how well the law predicts a rung it was not fitted to (leave-one-out):
    # the fit's residual spread alone leaves out what the law's form misses at these sizes.
    loo = leave_one_out_errors(runs.N, runs.D, runs.loss, warm_starts(fit))
    spread = max(noise, prediction_error(loo)) if np.isfinite(prediction_error(loo)) else noise
    predicted = float(fit.law.predict(N_next, D_next))
    low, high = predictive_interval(boot.params, N_next, D_next, spread, CONFIDENCE)
    from planner.scaling.plots import write_fit_plots

    plots = write_fit_plots(directory / "plots", fit, runs, (N_next, D_next), boot,
                            dict(fit.law.params(), N_opt=allocation.N, D_opt=allocation.D, loss=allocation.loss))
    fit_warnings = all_warnings(fit, runs, target) + allocation.warnings + fit_warnings_extra
    report = {"fit": fit.to_json(), "runs_used": [r["name"] for r, _ in kept], "left_out": warnings,
              "target_flops": target, "allocation": allocation.to_json(), "intervals": boot.to_json()["intervals"],
              "next_run": {"config": str(next_path), "N": N_next, "D": D_next, "shape": shape.describe(),
                           "predicted_loss": predicted, "loss_interval": [low, high], "run_noise": noise,
                           "leave_one_out_errors": dict(zip([r["name"] for r, _ in kept], loo.tolist())),
                           "prediction_error": spread},
              "plots": [str(p) for p in plots], "warnings": fit_warnings}
    if args.train_next:
        previous = finished_losses(directory / "runs" / "runs.csv").get("next")
        if previous is None:
            print(f"[ladder] training the next run {shape.describe()}", flush=True)
            code = train_one(str(next_path), args.nproc)
            if code != 0:
                raise UserError(f"the next run ({next_path}) exited with code {code}")
        measured = finished_losses(directory / "runs" / "runs.csv").get("next")
        report["next_run"]["measured_loss"] = measured
        report["next_run"]["inside_interval"] = measured is not None and low <= measured <= high
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=lambda v: v.tolist()))
    write_markdown(directory / "report.md", report, fit, boot)
    print_warnings(fit_warnings)
    if args.json:
        print_json(report)
        return 0
    from planner.scaling.fit import describe

    print(describe(fit))
    n_low, n_high = boot.intervals()["N_opt"]
    print(f"at {target:.3g} FLOPs: N_opt {human(allocation.N)} [{human(n_low)}, {human(n_high)}], D_opt "
          f"{human(allocation.D)} ({100 * CONFIDENCE:.0f} % bootstrap over {len(runs)} runs)")
    print(f"next run: {shape.describe()}, {human(D_next)} tokens -> {next_path}")
    print(f"predicted loss {predicted:.4f} in [{low:.4f}, {high:.4f}] ({100 * CONFIDENCE:.0f} %: the bootstrap's "
          f"laws with the rungs' leave-one-out error {100 * spread:.1f} %; residual noise {100 * noise:.1f} %)")
    if "measured_loss" in report["next_run"]:
        measured = report["next_run"]["measured_loss"]
        verdict = "inside" if report["next_run"]["inside_interval"] else "OUTSIDE"
        print(f"measured loss  {measured:.4f}: {verdict} the interval")
    print(f"wrote {directory / 'report.md'}, {directory / 'report.json'} and plots in {directory / 'plots'}")
    return 0


def write_markdown(path: Path, report: dict, fit, boot) -> None:
    from planner.scaling.fit import describe

    nxt = report["next_run"]
    lines = ["# Seed ladder report", "", "```", describe(fit), "```", "",
             f"Runs used: {len(report['runs_used'])}; left out: {len(report['left_out'])}.", ""]
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

"""Designing a ladder: the rungs the planner places for the budget, one training config per rung and
ladder.json (the design, its forecast before training, the data advice), then a summary."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from launch.ladder.files import config_hash, data_sources
from launch.ladder.lr_sweep import LR_SWEEP
from launch.ladder.rung_config import ladder_config
from launch.output import human, print_json, print_warnings
from launch.run_configs import write_config_with_header
from planner.errors import UserError
from planner.scaling.allocate import SAFE_EPOCHS, allocate, budget_flops
from planner.scaling.ladder_fit import CONFIDENCE
from planner.scaling.ladder_rungs import MIN_LADDER_STEPS, plan_rungs
from planner.scaling.law import load_law
from trainer.config import PRESETS_DIR, load_config


def design(args: argparse.Namespace) -> int:
    """`scaleplan ladder --out DIR`: choose the design, write a config per run and DIR/ladder.json."""
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
    plan = plan_rungs(prior, total, args.runs, args.noise, args.target_flops, model.spec(), base.global_batch,
                      args.mup)
    chosen, placement, shapes, base_width = plan.chosen, plan.placement, plan.shapes, plan.base_width
    target = chosen.best.target_flops
    configs_dir, runs_dir = out / "configs", out / "runs"
    rungs, warnings = [], []
    for i, (shape, C, s) in enumerate(zip(shapes, plan.budgets, placement.slice_index)):
        tokens = C / (6.0 * shape.params)
        name = f"rung{i:02d}-s{int(s)}-{human(shape.params)}"
        config = ladder_config(base_path, shape, tokens, name, str(runs_dir), seed_offset=i, mup_base_width=base_width)
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
    # the user's count, or each source of the base config's data (epochs counted per source)
    sources = None if args.unique_tokens is not None else data_sources(base)
    unique = args.unique_tokens if sources is None else sum(tokens for _, _, tokens in sources)
    advice = {}
    if unique is not None:
        allocation = allocate(prior, target, None if sources else unique, sources)
        warnings += allocation.warnings
        advice = {"unique_tokens": unique, "sources": sources, "target_allocation": allocation.to_json()}
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

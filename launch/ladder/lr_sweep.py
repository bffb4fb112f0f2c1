"""The learning-rate sweep of `--tune-lr`: the smallest rung trained at LR_SWEEP x the base's rate,
the best written into every rung's config. Under µP it then holds for every width."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from launch.ladder.files import finished_losses
from launch.ladder.training import Train
from launch.output import print_warnings
from launch.run_configs import write_config_with_header
from planner.errors import UserError
from planner.scaling.ladder_interval import diverged
from trainer.config import Config, load_config

LR_SWEEP = tuple(10 ** (k / 2) for k in range(-2, 3))   # x the base config's learning rate: 0.1 to 10, half a decade apart


def tune_learning_rate(directory: Path, ladder: dict, nproc: int, train: Train) -> float:
    """Train the smallest rung at each of LR_SWEEP x the base's learning rate (runs already in the
    sweep's table are skipped) with `train`, write the best into every rung's config and ladder.json;
    return it."""
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
        code = train(str(path), nproc)
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

"""Training configs the planner's commands write, each validated by the trainer's own loader (and a
planned layout by the layout rules the trainer applies) before it is written: the next run of the
scaling loop (`scaleplan next`: the planned shape, a step count that trains on the planned tokens)
and a planned layout (`scaleplan plan --emit-config`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

from parallel.layout import BACKEND_STAGES, BACKENDS, Layout, trainer_refusals
from planner.errors import UserError
from planner.layout.search import describe
from planner.scaling.shape import Shape
from trainer.config import Config, load_config

MIN_STEPS = 50     # below this the warmup and schedule do not mean much: shrink the batch instead


def plan_batch(config: Config, tokens: float) -> tuple[int, int]:
    """(sequences per step, steps): the preset's batch, halved while the run would be under
    MIN_STEPS steps, kept a multiple of the micro-batch so gradient accumulation still divides."""
    sequences = config.global_batch
    seq_len = config.model.seq_len
    while tokens / (sequences * seq_len) < MIN_STEPS and sequences // 2 >= config.parallel.micro_batch \
            and (sequences // 2) % config.parallel.micro_batch == 0:
        sequences //= 2
    steps = max(1, round(tokens / (sequences * seq_len)))
    return sequences, steps


def next_run_config(base: Optional[str | Path], shape: Shape, tokens: float, name: str,
                    batch_tokens: Optional[float] = None) -> Config:
    """The base preset with `model` set from the shape and `train` sized to `tokens`; `batch_tokens`
    replaces the preset's batch (the critical batch a run measured)."""
    config = load_config(base)
    tree = config.model_dump(mode="json")
    spec = shape.spec
    tree["model"].update(arch=spec.arch, n_layers=spec.n_layers, d_model=spec.d_model, n_heads=spec.n_heads,
                         n_kv_heads=spec.n_kv_heads, ffn_hidden=spec.ffn_hidden, vocab_size=spec.vocab_size,
                         seq_len=spec.seq_len, tie_embeddings=spec.tie_embeddings, bias=spec.bias)
    if batch_tokens is not None:   # the measured critical batch, in whole micro-batches
        micro = config.parallel.micro_batch
        tree["train"]["global_batch"] = max(1, round(batch_tokens / (spec.seq_len * micro))) * micro
        tree["train"]["global_batch_tokens"] = None
    sequences, steps = plan_batch(Config.model_validate(tree), tokens)
    if tree["train"].get("global_batch_tokens") is not None:
        tree["train"]["global_batch_tokens"] = sequences * spec.seq_len
    else:
        tree["train"]["global_batch"] = sequences
    tree["train"].update(steps=steps, name=name)
    if tree["optim"]["warmup_steps"] >= steps:
        tree["optim"]["warmup_steps"] = steps // 10
    return Config.model_validate(tree)


def write_config(config: Config, path: str | Path) -> Path:
    """Write YAML, then read it back with the trainer's loader: what we write is what trains."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by `scaleplan next`: the next run of the scaling loop.\n" + config.to_yaml())
    load_config(path)
    return path


def parallel_section(layout: Layout, backend: str) -> dict:
    """The trainer config's `parallel` section for this layout: every layout key, so that keys a base
    config sets cannot change the layout that runs."""
    return {"backend": backend, "dp_replicate": layout.dp_replicate, "dp_shard": layout.dp_shard,
            "cp": layout.cp, "tp": layout.tp, "pp": layout.pp, "zero_stage": layout.zero_stage,
            "micro_batch": layout.micro_batch, "recompute": layout.recompute,
            "sequence_parallel": layout.sequence_parallel, "lean_sp": layout.lean_sp,
            "pp_schedule": layout.pp_schedule, "vpp": layout.vpp,
            "pp_layers": list(layout.pp_layers) if layout.pp_layers else None}


def emit_config(path: str, result, index: int, base_config: Optional[str]) -> None:
    """Write layout `index` of `result` as a config `load_config` accepts and the trainer runs, both
    checked before writing: the config by the trainer's schema, the layout by the layout rules."""
    spec, layout, backend = result.inputs.spec, result.layouts.layout(index), result.layouts.backend_name(index)
    # the base config was validated by load_config already, so it reads as a mapping
    tree = (yaml.safe_load(Path(base_config).read_text()) or {}) if base_config else {}
    model = dict(tree.get("model", {}))
    model.update(arch=spec.arch, n_layers=spec.n_layers, d_model=spec.d_model, n_heads=spec.n_heads,
                 n_kv_heads=spec.n_kv_heads, ffn_hidden=spec.ffn_hidden, vocab_size=spec.vocab_size,
                 seq_len=spec.seq_len, tie_embeddings=spec.tie_embeddings, bias=spec.bias)
    train = {k: v for k, v in dict(tree.get("train", {})).items() if k not in ("global_batch_tokens", "micro_batch")}
    train.update(global_batch=result.inputs.global_batch)
    tree.update(model=model, train=train, precision={**dict(tree.get("precision", {})),
                                                     "dtype": result.inputs.precision},
                parallel={**dict(tree.get("parallel", {})), **parallel_section(layout, backend)})
    text = "# Written by `scaleplan plan --emit-config`; layout " + describe(layout) + "\n" + \
        yaml.safe_dump(tree, sort_keys=False)
    config = Config.model_validate(yaml.safe_load(text))   # what load_config makes of the file
    problems = layout.problems(layout.world_size, spec.n_heads, spec.kv_heads, spec.n_layers, spec.ffn,
                               backend=backend, global_batch=config.global_batch, seq_len=spec.seq_len,
                               key="parallel.")
    problems += trainer_refusals(backend, layout.tp, layout.pp, spec.tie_embeddings, config.parallel.cpu_offload,
                                 key="parallel.", cp=layout.cp, zero_stage=layout.zero_stage,
                                 schedule=layout.pp_schedule)
    if problems:
        raise UserError(f"the trainer would not run {describe(layout)}: " + "; ".join(problems))
    out = Path(path)
    if out.parent and not out.parent.exists():
        raise UserError(f"--emit-config: directory {out.parent} does not exist")
    out.write_text(text)


def trainer_can_run() -> list[str]:
    """What the trainer runs, for the message when nothing can be emitted (from the layout rules)."""
    return [f"{backend} at zero_stage {'/'.join(map(str, BACKEND_STAGES[backend]))}" for backend in BACKENDS] + \
        ["deepspeed without tp, pp or cp", "recompute none, selective or full"]


def emit_best_runnable(path: str, result, base_config: Optional[str]) -> tuple[int, Optional[str]]:
    """Write the first-ranked layout to `path`, or, when the trainer does not run it, the best-ranked
    one it does; return its index and, in the second case, one line saying which and why."""
    runnable = [int(i) for i in result.ranked if result.runnable[int(i)]]
    best = int(result.ranked[0])
    if not runnable:
        raise UserError("none of the fitting layouts can be written as a training config yet (the trainer runs "
                        + ", ".join(trainer_can_run()) + f"; the best, {describe(result.layouts.layout(best))}: "
                        f"{result.refused[best]}); pass --layout with those")
    emit_config(path, result, runnable[0], base_config)
    if runnable[0] == best:
        return best, None
    rank = [int(i) for i in result.ranked].index(runnable[0]) + 1
    return runnable[0], (f"#1 ({describe(result.layouts.layout(best))}) is not run by this project's trainer "
                         f"({result.refused[best]}): wrote #{rank} instead")


def ladder_run_config(base: Optional[str | Path], shape: Shape, tokens: float, name: str, runs_dir: str,
                      seed_offset: int = 0, mup_base_width: Optional[int] = None, lr: Optional[float] = None) -> Config:
    """One run of a seed ladder: `next_run_config`'s model and batch, its run directory under the
    ladder's, one evaluation at the end (the loss the fit reads), no sample, no intermediate checkpoints;
    its own data/initialisation seed, so two runs of the same shape are replicates, not copies.
    `mup_base_width`: µP with that base width (the ladder's smallest), so one learning rate holds for
    every rung; `lr`: the peak learning rate (a tuned one) instead of the base's."""
    tree = next_run_config(base, shape, tokens, name).model_dump(mode="json")
    steps = tree["train"]["steps"]
    tree["train"].update(runs_dir=runs_dir, eval_every=steps, sample_tokens=0, seed=tree["train"]["seed"] + seed_offset)
    if mup_base_width is not None:
        tree["model"].update(mup=True, mup_base_width=mup_base_width)
    if lr is not None:
        tree["optim"].update(lr=lr)
    tree["checkpoint"].update(every=0)
    tree["log"].update(progress=False, tensorboard=False)
    return Config.model_validate(tree)


def write_config_with_header(config: Config, path: str | Path, header: str) -> Path:
    """`write_config` with our own first line; read back by the trainer's loader."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {header}\n" + config.to_yaml())
    load_config(path)
    return path

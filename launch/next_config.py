"""Write the training config for the next run of the scaling loop: a preset with the planned model
shape and a step count that trains on the planned tokens. Validated by the trainer's own loader."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from planner.shape import Shape
from trainer.config import Config, load_config

MIN_STEPS = 50     # below this the warmup and schedule do not mean much: shrink the batch instead


def plan_batch(config: Config, tokens: float) -> tuple[int, int]:
    """(sequences per step, steps): the preset's batch, halved while the run would be under
    MIN_STEPS steps, kept a multiple of the micro-batch so gradient accumulation still divides."""
    sequences = config.global_batch
    seq_len = config.model.seq_len
    while tokens / (sequences * seq_len) < MIN_STEPS and sequences // 2 >= config.train.micro_batch \
            and (sequences // 2) % config.train.micro_batch == 0:
        sequences //= 2
    steps = max(1, round(tokens / (sequences * seq_len)))
    return sequences, steps


def next_run_config(base: Optional[str | Path], shape: Shape, tokens: float, name: str) -> Config:
    """The base preset with `model` set from the shape and `train` sized to `tokens`."""
    config = load_config(base)
    tree = config.model_dump(mode="json")
    spec = shape.spec
    tree["model"].update(arch=spec.arch, n_layers=spec.n_layers, d_model=spec.d_model, n_heads=spec.n_heads,
                         n_kv_heads=spec.n_kv_heads, ffn_hidden=spec.ffn_hidden, vocab_size=spec.vocab_size,
                         seq_len=spec.seq_len, tie_embeddings=spec.tie_embeddings, bias=spec.bias)
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

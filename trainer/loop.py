"""The training loop: repeat the engine's step, and let the callbacks (trainer/callbacks/) do the rest
— evaluation, metrics, the spike guard and rollback, checkpoints, preemption, the noise scale and
fault drills — each at its own cadence. Construction lives in trainer/build.py."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from parallel.layout import Layout
from planner.layout.search import describe as describe_layout
from planner.model_spec import count_params
from trainer.build import Run, build_run
from trainer.callbacks import StepOutcome, default_callbacks
from trainer.callbacks.preemption import StopSignal
from trainer.config import Config
from trainer.engines import StepRequest
from trainer.optim import lr_at
from trainer.runs_table import append_run
from trainer.runtime import Runtime
from trainer.tokenizer import load_tokenizer


@dataclass
class RunResult:
    run_dir: Path
    step: int
    val_loss: Optional[float]   # None when there was nothing left to train
    sample: str
    preempted: bool = False     # stopped by a signal, with a checkpoint to resume from


def train(cfg: Config, runtime: Runtime, layout: Layout, backend: str, signals: Optional[StopSignal] = None,
          plan: Optional[dict] = None) -> RunResult:
    """Train to cfg.train.steps, or for cfg.train.stop_after steps of this invocation, or until a
    stop signal (then save and return `preempted`). `layout`: resolved once by launch/ from the
    config; `plan`: the planner's prediction, for plan.json."""
    run = build_run(cfg, runtime, layout, backend, lambda run: default_callbacks(run, signals))
    announce(run, plan)
    if run.step >= cfg.train.steps:
        return RunResult(run.run_dir, run.step, None, "")
    run.stop_at = min(cfg.train.steps, run.step + (cfg.train.stop_after or cfg.train.steps))
    run.callbacks.on_start()
    while run.step < run.stop_at and not run.preempted:
        lr = lr_at(run.step, cfg.train.steps, cfg.optim) * run.lr_scale
        run.engine.set_lr(lr)
        log = (run.step + 1) % cfg.log.every == 0 or run.step + 1 == run.stop_at
        request = StepRequest(grad_clip=cfg.optim.grad_clip, z_loss=cfg.guards.z_loss, measure=log)
        run.callbacks.before_step(request)
        data_step = run.sampler.step
        result = run.engine.train_step(run.sampler.micro_batches(cfg.parallel.micro_batch), request)
        run.step += 1
        run.callbacks.after_step(StepOutcome(run.step, data_step, lr, result, log))
    run.callbacks.on_end()
    if run.preempted:
        return RunResult(run.run_dir, run.step, run.val_loss, "", preempted=True)
    return finish(run)


def announce(run: Run, plan: Optional[dict]) -> None:
    """Once the run is built (its checkpoint, if any, loaded): its config and plan in the run
    directory, and a line saying what runs."""
    cfg, runtime = run.cfg, run.runtime
    if runtime.is_main:
        (run.run_dir / "config.yaml").write_text(cfg.to_yaml())
        if plan is not None:
            (run.run_dir / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
        if run.step >= cfg.train.steps:
            run.say(f"{run.run_dir} is already complete at step {run.step}")
        else:
            start = f"resuming from {run.resumed_from}" if run.resumed_from else "starting"
            run.say(f"{start}: {count_params(cfg.model.spec()):,} parameters, {run.backend} over "
                    f"{describe_layout(run.layout)}, {run.n_micro} micro-step(s) of {cfg.parallel.micro_batch} x "
                    f"{cfg.model.seq_len} tokens per rank")
    dist.barrier()


def finish(run: Run) -> RunResult:
    """At the end of the whole run: a sample from the model and a row in runs/runs.csv."""
    cfg, sample = run.cfg, ""
    if run.step == cfg.train.steps:
        sample = generate_sample(run)   # on every rank: a sharded model's forward is collective
    if run.step == cfg.train.steps and run.runtime.is_main:
        append_run(Path(cfg.train.runs_dir) / "runs.csv", cfg.train.name, count_params(cfg.model.spec()),
                   run.step * cfg.tokens_per_step, run.val_loss)
    dist.barrier()
    return RunResult(run.run_dir, run.step, run.val_loss, sample)


def generate_sample(run: Run) -> str:
    """A short continuation of train.sample_prompt, to see what the model has learned."""
    cfg, device = run.cfg, run.runtime.device
    if cfg.train.sample_tokens == 0 or run.layout.pp > 1:   # a pipeline has no whole-model forward to sample with
        return ""
    tokenizer = load_tokenizer(run.data.meta["tokenizer"])
    prompt = tokenizer.encode(cfg.train.sample_prompt) or [0]
    generator = torch.Generator(device=device).manual_seed(cfg.train.seed)
    run.model.eval()
    out = run.model.generate(torch.tensor([prompt], device=device), cfg.train.sample_tokens,
                             temperature=cfg.train.sample_temperature, generator=generator,
                             pad_multiple=run.layout.tp if run.layout.sequence_parallel else 1)
    return tokenizer.decode(out[0].tolist())

"""The training run: build everything from the config, then repeat train_step.

Order of construction follows the design: config -> layout -> model on meta -> materialize ->
parallelize -> optimizer -> restore checkpoint -> loop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from parallel.layout import Layout
from parallel.mesh import build_mesh
from parallel.parallelize import parallelize
from planner.errors import UserError
from planner.model_spec import count_params, flops_per_token
from trainer.checkpoint import checkpoint_steps, load_checkpoint, resolve_resume, save_checkpoint
from trainer.config import Config
from trainer.data import TokenData, WindowSampler, eval_windows
from trainer.evaluate import validation_loss
from trainer.metrics import MetricsWriter, peak_flops_per_device, peak_memory_gib
from trainer.model import Transformer
from trainer.optim import build_optimizer, lr_at, set_lr
from trainer.precision import Precision
from trainer.runs_table import append_run
from trainer.runtime import Runtime
from trainer.step import train_step
from trainer.tokenizer import load_tokenizer


@dataclass
class RunResult:
    run_dir: Path
    step: int
    val_loss: Optional[float]
    sample: str


def run_directory(cfg: Config) -> Path:
    return Path(cfg.train.runs_dir) / cfg.train.name


def train(cfg: Config, runtime: Runtime) -> RunResult:
    """Train to cfg.train.steps (or stop_after steps of this invocation); collective on all ranks."""
    device, run_dir = runtime.device, run_directory(cfg)
    ckpt_root = run_dir / "checkpoints"
    resume_from = resolve_resume(cfg.checkpoint.resume, ckpt_root)
    if resume_from is None and cfg.checkpoint.resume == "none" and checkpoint_steps(ckpt_root):
        raise UserError(f"{run_dir} already holds checkpoints: resume with checkpoint.resume=auto "
                        f"or pick another train.name")
    data = TokenData.open(cfg.data.dir)
    data.check_fits(cfg.model.vocab_size, cfg.model.seq_len)
    layout = Layout(dp_replicate=runtime.world_size, micro_batch=cfg.train.micro_batch)
    n_micro = cfg.grad_accum_steps(layout.dp)
    mesh = build_mesh(layout, device)

    with torch.device("meta"):
        raw_model = Transformer(cfg.model)
    raw_model.to_empty(device=device)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank and every layout
    raw_model.init_weights()
    model = parallelize(raw_model, layout, mesh, device, cfg.parallel.bucket_mb)
    optimizer = build_optimizer(model, cfg.optim, device.type)
    precision = Precision(cfg.precision, device.type)
    sampler = WindowSampler(data.train, cfg.model.seq_len, cfg.global_batch, runtime.rank,
                            layout.dp, cfg.train.seed)
    val_BT = eval_windows(data.val, cfg.model.seq_len, cfg.train.eval_batches * cfg.train.micro_batch,
                          cfg.train.seed)

    step = 0
    if resume_from is not None:
        saved = load_checkpoint(resume_from, model, optimizer, _train_state(0, sampler, precision),
                                runtime.rank)
        step = int(saved["step"])
        sampler.load_state_dict(saved["sampler"])
        precision.load_state_dict(saved["scaler"])
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        start = f"resuming from {resume_from}" if resume_from else "starting"
        print(f"[scaleplan] {start}: {count_params(cfg.model.spec()):,} parameters, {layout.dp} data-parallel "
              f"rank(s), {n_micro} micro-step(s) of {cfg.train.micro_batch} x {cfg.model.seq_len} tokens",
              flush=True)
    dist.barrier()
    if step >= cfg.train.steps:
        if runtime.is_main:
            print(f"[scaleplan] {run_dir} is already complete at step {step}", flush=True)
        return RunResult(run_dir, step, None, "")

    metrics = MetricsWriter(run_dir, runtime.is_main, cfg.log.tensorboard)
    spec = cfg.model.spec()
    flops_per_step = flops_per_token(spec) * cfg.tokens_per_step
    peak = peak_flops_per_device(device, cfg.precision.dtype)
    evaluate = lambda: validation_loss(raw_model, val_BT, cfg.train.micro_batch, runtime.rank,
                                       runtime.world_size, precision, device)
    last_stop = cfg.train.steps if cfg.train.stop_after is None else min(
        cfg.train.steps, step + cfg.train.stop_after)
    val_loss = None
    if step == 0:
        val_loss = evaluate()
        metrics.write(0, {"val_loss": val_loss})
    progress = tqdm(total=cfg.train.steps, initial=step, disable=not (runtime.is_main and cfg.log.progress),
                    unit="step", dynamic_ncols=True)
    window_start, window_steps = time.perf_counter(), 0
    while step < last_stop:
        lr = lr_at(step, cfg.train.steps, cfg.optim)
        set_lr(optimizer, lr)
        loss, grad_norm = train_step(model, sampler.micro_batches(cfg.train.micro_batch), n_micro,
                                     optimizer, precision, cfg.optim.grad_clip, device)
        step += 1
        window_steps += 1
        progress.update(1)
        if step % cfg.log.every == 0 or step == last_stop:
            dist.all_reduce(loss)  # SUM (gloo has no AVG); host sync only on log steps
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_steps * cfg.tokens_per_step / elapsed
            record = {"loss": loss.item() / runtime.world_size, "lr": lr, "grad_norm": grad_norm.item(),
                      "tokens_per_s": tokens_per_s, "peak_mem_gib": peak_memory_gib(device),
                      "mfu": (flops_per_step * window_steps / elapsed / (peak * runtime.world_size))
                      if peak else None}
            if step % cfg.train.eval_every == 0 or step == last_stop:
                record["val_loss"] = val_loss = evaluate()
            metrics.write(step, record)
            progress.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tokens_per_s:,.0f}")
            window_start, window_steps = time.perf_counter(), 0
        if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or (
                step == last_stop and (cfg.checkpoint.save_final or step < cfg.train.steps)):
            save_checkpoint(ckpt_root, step, model, optimizer, _train_state(step, sampler, precision),
                            cfg.to_yaml(), runtime.rank, cfg.checkpoint.keep)
    progress.close()
    metrics.close()

    sample = ""
    if step == cfg.train.steps and runtime.is_main:
        sample = _sample(raw_model, cfg, data.meta["tokenizer"], device)
        append_run(Path(cfg.train.runs_dir) / "runs.csv", cfg.train.name, count_params(spec),
                   step * cfg.tokens_per_step, val_loss)
    dist.barrier()
    return RunResult(run_dir, step, val_loss, sample)


def _train_state(step: int, sampler: WindowSampler, precision: Precision) -> dict:
    return {"step": step, "sampler": sampler.state_dict(), "scaler": precision.state_dict()}


def _sample(model: Transformer, cfg: Config, tokenizer_name: str, device: torch.device) -> str:
    """A short continuation of train.sample_prompt, to see what the model has learned."""
    if cfg.train.sample_tokens == 0:
        return ""
    tokenizer = load_tokenizer(tokenizer_name)
    prompt = tokenizer.encode(cfg.train.sample_prompt) or [0]
    generator = torch.Generator(device=device).manual_seed(cfg.train.seed)
    model.eval()
    out = model.generate(torch.tensor([prompt], device=device), cfg.train.sample_tokens, generator=generator)
    return tokenizer.decode(out[0].tolist())

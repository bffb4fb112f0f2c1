"""The training loop: repeat train_step, log, evaluate, checkpoint; finish with a sample and a row
in the runs table. Construction lives in trainer/build.py."""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from planner.layout.search import describe as describe_layout
from planner.model_spec import count_params, flops_per_token
from trainer.build import Run, build_run
from trainer.checkpoint import save_checkpoint
from trainer.config import Config
from trainer.evaluate import validation_loss
from trainer.metrics import MetricsWriter, peak_flops_per_device, peak_memory_gib
from trainer.optim import lr_at
from trainer.runs_table import append_run
from trainer.recovery import after_step_faults, gather_events, injected_fault, roll_back, stop_requested
from trainer.runtime import Runtime
from trainer.step import train_step
from trainer.tokenizer import load_tokenizer


@dataclass
class RunResult:
    run_dir: Path
    step: int
    val_loss: Optional[float]   # None when there was nothing left to train
    sample: str
    preempted: bool = False     # stopped by a signal, with a checkpoint to resume from


PREEMPTED = 75   # EX_TEMPFAIL: stopped by a signal after saving a checkpoint; run again to resume


class StopSignal:
    """A signal handler (launch/ installs it for SIGTERM and SIGUSR1): the loop finishes its step,
    saves and returns. A rank blocked in a collective (a peer died) never gets there, so unless the
    loop takes the request within two step times (10 s at least) the process exits by itself, and a
    second signal exits at once: torchrun restarts the job without waiting for its own time-out."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.taken = False
        self.step_seconds = 30.0   # the loop keeps it current

    def __call__(self, signum: int, frame=None) -> None:
        if self.received is not None:
            os._exit(PREEMPTED)
        self.received = signum
        threading.Thread(target=self._watchdog, daemon=True).start()

    def _watchdog(self) -> None:
        deadline = time.monotonic() + max(10.0, 2 * self.step_seconds)
        while time.monotonic() < deadline:
            if self.taken:
                return
            time.sleep(0.05)
        os._exit(PREEMPTED)


def train(cfg: Config, runtime: Runtime, signals: Optional[StopSignal] = None,
          plan: Optional[dict] = None) -> RunResult:
    """Train to cfg.train.steps, or for cfg.train.stop_after steps of this invocation, or until a
    stop signal (then save and return `preempted`). `plan`: the planner's prediction, for plan.json."""
    run = build_run(cfg, runtime)
    announce(run, plan)
    if run.step >= cfg.train.steps:
        return RunResult(run.run_dir, run.step, None, "")
    stop = min(cfg.train.steps, run.step + (cfg.train.stop_after or cfg.train.steps))
    metrics = MetricsWriter(run.run_dir, runtime.is_main, cfg.log.tensorboard)
    rate = ThroughputMeter(cfg, runtime, run.step)
    val_loss, events = None, EventLog(run)
    if run.step == 0:
        val_loss = evaluate(run)
        metrics.write(0, {"val_loss": val_loss})
    progress = tqdm(total=cfg.train.steps, initial=run.step, unit="step", dynamic_ncols=True,
                    disable=not (runtime.is_main and cfg.log.progress))
    while run.step < stop:
        lr = lr_at(run.step, cfg.train.steps, cfg.optim) * run.lr_scale
        run.engine.set_lr(lr)
        logs = (run.step + 1) % cfg.log.every == 0 or run.step + 1 == stop
        data_step = run.sampler.step
        loss, grad_norm, skipped = train_step(
            run.engine, run.sampler.micro_batches(cfg.parallel.micro_batch), run.n_micro, cfg.optim.grad_clip,
            runtime.device, z_loss=cfg.guards.z_loss, guard=run.guard, measure=logs,
            fault=injected_fault(run, data_step), force_skip=data_step + 1 in cfg.faults.skip_steps, noise=run.noise)
        run.step += 1
        events.note_step(run.step, data_step, skipped)
        progress.update(1)
        if logs:
            dist.all_reduce(loss)  # a SUM (gloo has no AVG); host syncs happen on log steps only
            record = {"loss": loss.item() / runtime.world_size, "lr": lr, "grad_norm": grad_norm.item(),
                      **rate.measure(run.step), "model_states_gib": model_states_gib(run), **events.flush(metrics),
                      **noise_scale_record(run)}
            if run.step % cfg.train.eval_every == 0 or run.step == stop:
                record["val_loss"] = val_loss = evaluate(run)
            metrics.write(run.step, record)
            progress.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}")
            if run.guard.wants_rollback():
                metrics.write(run.step, {"event": "rollback", "message": say(run, roll_back(run))})
                rate = ThroughputMeter(cfg, runtime, run.step)   # the step count went back
                continue
        saved = (cfg.checkpoint.every and run.step % cfg.checkpoint.every == 0) or (
            run.step == stop and (cfg.checkpoint.save_final or stop < cfg.train.steps))
        if saved:
            save(run)
        after_step_faults(run)
        if signals is not None:
            signals.step_seconds = rate.last_step_seconds()
        if stop_requested(run, bool(signals and signals.received)):
            if signals is not None:
                signals.taken = True
            if not saved:
                save(run)
            metrics.write(run.step, {"event": "preempted", "message": say(run, f"stopped by a signal at step "
                                                                                f"{run.step}, checkpoint saved")})
            progress.close()
            metrics.close()
            return RunResult(run.run_dir, run.step, val_loss, "", preempted=True)
    progress.close()
    metrics.close()
    return finish(run, val_loss)


def save(run: Run) -> None:
    save_checkpoint(run.checkpoint_root, run.step, run.engine, run.train_state(), run.cfg.to_yaml(),
                    run.runtime.rank, run.cfg.checkpoint.keep)


def say(run: Run, message: str) -> str:
    if run.runtime.is_main:
        print(f"[scaleplan] {message}", flush=True)
    return message


class EventLog:
    """Skipped updates and degenerate windows, kept on device / per rank between log steps and
    written to metrics.jsonl (with the step and the data offsets) on the next log step."""

    def __init__(self, run: Run):
        self.run, self.pending = run, []
        self.skipped_updates = int(run.guard.skipped)
        self.bad_windows = 0

    def note_step(self, step: int, data_step: int, skipped: torch.Tensor) -> None:
        self.pending.append((step, data_step, skipped))

    def flush(self, metrics: MetricsWriter) -> dict:
        """Write the events since the last log step; return the running counts for the record."""
        flags = torch.stack([skipped for _, _, skipped in self.pending]).tolist() if self.pending else []
        sampler = self.run.sampler
        for (step, data_step, _), skipped in zip(self.pending, flags):
            if skipped:
                self.skipped_updates += 1
                metrics.write(step, {"event": "skipped_update", "data_step": data_step,
                                     "offsets": sampler.global_offsets(data_step).tolist()})
        self.pending = []
        windows = gather_events(self.run, sampler.take_skipped())
        for window in windows:
            metrics.write(window["step"] + 1, {"event": "bad_window", **window})
        self.bad_windows += len(windows)
        return {"skipped_updates": self.skipped_updates, "bad_windows": self.bad_windows}


def announce(run: Run, plan: Optional[dict]) -> None:
    """Once the run is built (its checkpoint, if any, loaded): its config and plan in the run
    directory, and a line saying what runs."""
    cfg, runtime = run.cfg, run.runtime
    if runtime.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "config.yaml").write_text(cfg.to_yaml())
        if plan is not None:
            (run.run_dir / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
        if run.step >= cfg.train.steps:
            print(f"[scaleplan] {run.run_dir} is already complete at step {run.step}", flush=True)
        else:
            start = f"resuming from {run.resumed_from}" if run.resumed_from else "starting"
            print(f"[scaleplan] {start}: {count_params(cfg.model.spec()):,} parameters, {run.backend} over "
                  f"{describe_layout(run.layout)}, {run.n_micro} micro-step(s) of {cfg.parallel.micro_batch} x "
                  f"{cfg.model.seq_len} tokens per rank", flush=True)
    dist.barrier()


def model_states_gib(run: Run) -> float:
    """The largest model-state footprint of any rank at the last measured step: parameters,
    gradients and optimizer states it holds (its shards), to set beside plan.json's prediction."""
    held = torch.tensor(float(run.engine.model_state_bytes), device=run.runtime.device)
    dist.all_reduce(held, op=dist.ReduceOp.MAX)
    return held.item() / 2**30


def evaluate(run: Run) -> float:
    return validation_loss(run.engine, run.val_BT, run.dp_rank, run.layout.dp, run.runtime.device)


class ThroughputMeter:
    """tokens/s, MFU and peak memory over the steps since the last measurement."""

    def __init__(self, cfg: Config, runtime: Runtime, start_step: int):
        self.tokens_per_step = cfg.tokens_per_step
        self.flops_per_step = flops_per_token(cfg.model.spec()) * cfg.tokens_per_step
        peak = peak_flops_per_device(runtime.device, cfg.precision.dtype)
        self.peak_total = peak * runtime.world_size if peak else None
        self.device = runtime.device
        self.last_time, self.last_step = time.perf_counter(), start_step

    def last_step_seconds(self) -> float:
        """Seconds since the last measurement (an upper bound on one step's time once a step ran)."""
        return time.perf_counter() - self.last_time

    def measure(self, step: int) -> dict:
        now = time.perf_counter()
        steps, elapsed = step - self.last_step, now - self.last_time
        self.last_time, self.last_step = now, step
        tokens_per_s = steps * self.tokens_per_step / elapsed
        mfu = steps * self.flops_per_step / elapsed / self.peak_total if self.peak_total else None
        return {"tokens_per_s": tokens_per_s, "mfu": mfu, "peak_mem_gib": peak_memory_gib(self.device)}


def noise_scale_record(run: Run) -> dict:
    """`grad_noise_scale` (tokens), averaged over ranks; collective where the run measures it."""
    if run.noise is None:
        return {}
    averages = run.noise.averages().clone()
    dist.all_reduce(averages)
    value = run.noise.ratio(averages / run.runtime.world_size)
    return {} if value is None else {"grad_noise_scale": value}


def finish(run: Run, val_loss: float) -> RunResult:
    """At the end of the whole run: a sample from the model, the critical batch it measured and a
    row in runs/runs.csv."""
    cfg, sample = run.cfg, ""
    measured = noise_scale_record(run).get("grad_noise_scale")
    if measured is not None:
        say(run, f"gradient noise scale {measured:,.0f} tokens (the critical batch, McCandlish et al. 2018; "
                 f"this run's batch is {cfg.tokens_per_step:,} tokens): `scaleplan next --batch-from "
                 f"{run.run_dir}` sizes the next run's batch by it")
    if run.step == cfg.train.steps:
        sample = generate_sample(run)   # on every rank: a sharded model's forward is collective
    if run.step == cfg.train.steps and run.runtime.is_main:
        append_run(Path(cfg.train.runs_dir) / "runs.csv", cfg.train.name, count_params(cfg.model.spec()),
                   run.step * cfg.tokens_per_step, val_loss)
    dist.barrier()
    return RunResult(run.run_dir, run.step, val_loss, sample)


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
                                 temperature=cfg.train.sample_temperature, generator=generator)
    return tokenizer.decode(out[0].tolist())

"""The metrics line of each log step (metrics.jsonl and TensorBoard): loss, learning rate, gradient
norm, throughput, MFU, memory, model-state bytes, degenerate windows, a mixture's tokens per source,
and what the other callbacks put in the record; and the progress bar."""
from __future__ import annotations

import time

import torch
import torch.distributed as dist
from tqdm import tqdm

from planner.model_spec import flops_per_token
from trainer.callbacks import Callback, StepOutcome
from trainer.metrics import peak_flops_per_device, peak_memory_gib
from trainer.recovery import gather_events


class MetricsLogger(Callback):
    def __init__(self, run):
        self.run = run
        self.bad_windows = 0
        self.progress = None
        self.rate = None

    def on_start(self) -> None:
        run, cfg = self.run, self.run.cfg
        self.rate = ThroughputMeter(run, run.step)
        self.progress = tqdm(total=cfg.train.steps, initial=run.step, unit="step", dynamic_ncols=True,
                             disable=not (run.runtime.is_main and cfg.log.progress))

    def after_step(self, outcome: StepOutcome) -> None:
        self.progress.update(1)
        if not outcome.log:
            return
        run, loss = self.run, outcome.result.loss.clone()
        dist.all_reduce(loss)   # a SUM (gloo has no AVG); host syncs happen on log steps only
        record = {"loss": loss.item() / run.runtime.world_size, "lr": outcome.lr,
                  "grad_norm": outcome.result.grad_norm.item(), **self.rate.measure(outcome.step),
                  "model_states_gib": self.model_states_gib(), "bad_windows": self.log_bad_windows(),
                  **self.tokens_per_source(), **outcome.record}
        run.metrics.write(outcome.step, record)
        self.progress.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}")

    def on_rollback(self) -> None:
        self.rate = ThroughputMeter(self.run, self.run.step)   # the step count went back

    def on_end(self) -> None:
        self.progress.close()
        self.run.metrics.close()

    def log_bad_windows(self) -> int:
        """Every rank's degenerate windows since the last log step, as events; the running count."""
        windows = gather_events(self.run, self.run.sampler.take_skipped())
        for window in windows:
            self.run.metrics.write(window["step"] + 1, {"event": "bad_window", **window})
        self.bad_windows += len(windows)
        return self.bad_windows

    def tokens_per_source(self) -> dict:
        """A mixture's tokens read so far from each source, over all ranks (`tokens/<name>`): every rank
        counts the whole global batch's draw, so no communication is needed."""
        if not self.run.data.mixture:
            return {}
        return {f"tokens/{name}": tokens for name, tokens in self.run.sampler.tokens_read().items()}

    def model_states_gib(self) -> float:
        """The largest model-state footprint of any rank at the last measured step: parameters,
        gradients and optimizer states it holds (its shards), to set beside plan.json's prediction."""
        held = torch.tensor(float(self.run.engine.model_state_bytes), device=self.run.runtime.device)
        dist.all_reduce(held, op=dist.ReduceOp.MAX)
        return held.item() / 2**30

    def last_step_seconds(self) -> float:
        return self.rate.last_step_seconds()


class ThroughputMeter:
    """tokens/s, MFU and peak memory over the steps since the last measurement."""

    def __init__(self, run, start_step: int):
        cfg, runtime = run.cfg, run.runtime
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

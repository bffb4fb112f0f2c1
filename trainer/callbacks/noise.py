"""The gradient noise scale (trainer/noise_scale.py) from each step's first micro-batch and whole
gradient: logged as `grad_noise_scale` on log steps, and said once at the end of the run."""
from __future__ import annotations

import torch.distributed as dist

from trainer.callbacks import Callback, StepOutcome
from trainer.engines import StepRequest
from trainer.noise_scale import GradientNoiseScale


class NoiseScale(Callback):
    """Active where a step has two batch sizes of local gradients: one micro-batch on one rank, and the
    whole step. Its average is not checkpointed: a diagnostic that warms up again after a resume (whose
    layout may not measure it at all)."""

    def __init__(self, run):
        self.run, cfg = run, run.cfg
        measurable = cfg.log.noise_scale and run.n_micro > 1 and run.engine.local_gradients
        self.meter = GradientNoiseScale(cfg.parallel.micro_batch * cfg.model.seq_len, cfg.tokens_per_step,
                                        run.runtime.device) if measurable else None

    def before_step(self, request: StepRequest) -> None:
        request.first_grad_sq = self.meter is not None

    def after_step(self, outcome: StepOutcome) -> None:
        result = outcome.result
        if self.meter is not None and result.first_grad_sq is not None:
            self.meter.observe(result.first_grad_sq, result.grad_norm.float().square(), keep=~result.skipped)
        if outcome.log:
            outcome.record.update(self.measured())

    def measured(self) -> dict:
        """`grad_noise_scale` (tokens), averaged over ranks; collective where the run measures it."""
        if self.meter is None:
            return {}
        averages = self.meter.averages().clone()
        dist.all_reduce(averages)
        value = self.meter.ratio(averages / self.run.runtime.world_size)
        return {} if value is None else {"grad_noise_scale": value}

    def on_end(self) -> None:
        measured = self.measured().get("grad_noise_scale")
        if measured is not None and self.run.step == self.run.stop_at:
            self.run.say(f"gradient noise scale {measured:,.0f} tokens (the critical batch, McCandlish et al. 2018; "
                         f"this run's batch is {self.run.cfg.tokens_per_step:,} tokens): `scaleplan next --batch-from "
                         f"{self.run.run_dir}` sizes the next run's batch by it")

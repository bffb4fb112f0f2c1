"""Fault drills (`faults.*`): NaN gradients, loss spikes, a new level of the gradient norm, forced
skips, and SIGKILL / SIGTERM at a step or in the middle of a checkpoint save. Each fires on
`faults.rank` and in the first launch only (not after torchrun restarts the job)."""
from __future__ import annotations

from trainer import faults as drills
from trainer.callbacks import Callback, StepOutcome
from trainer.engines import StepRequest


class FaultInjection(Callback):
    def __init__(self, run, checkpoints):
        self.run, self.faults, self.checkpoints = run, run.cfg.faults, checkpoints
        runtime = run.runtime
        self.first_launch = runtime.restart_count == 0
        self.on_fault_rank = self.first_launch and runtime.rank == self.faults.rank

    def on_start(self) -> None:
        step = self.faults.kill_in_save_step
        if step is not None and self.on_fault_rank:
            def kill_mid_save(saving: int) -> None:
                if saving == step:
                    drills.kill(drills.KILL)
            self.checkpoints.checkpointer.before_commit = kill_mid_save

    def before_step(self, request: StepRequest) -> None:
        step = self.run.sampler.step + 1
        if self.first_launch:
            request.loss_hook = drills.loss_hook(self.faults, step, self.on_fault_rank)
        request.force_skip = step in self.faults.skip_steps

    def after_step(self, outcome: StepOutcome) -> None:
        if outcome.rolled_back or not self.on_fault_rank:
            return
        if self.faults.kill_step == outcome.step:
            drills.kill(drills.KILL)
        if self.faults.term_step == outcome.step:
            drills.kill(drills.TERM)

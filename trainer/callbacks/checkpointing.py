"""Checkpoints on a cadence (`checkpoint.every`), at the last step of an invocation, and on demand
(a preemption), saved asynchronously by default (trainer/async_checkpoint.py): the loop waits only
while the state is copied to host memory. Every save finishes before the process ends."""
from __future__ import annotations

from trainer.async_checkpoint import Checkpointer
from trainer.callbacks import Callback, StepOutcome


class CheckpointCallback(Callback):
    def __init__(self, run):
        self.run, cfg = run, run.cfg.checkpoint
        self.checkpointer = Checkpointer(run.checkpoint_root, run.runtime.rank, cfg.keep, cfg.async_save)
        self.saved_step = None

    def after_step(self, outcome: StepOutcome) -> None:
        if outcome.rolled_back:
            return
        cfg, step, stop_at = self.run.cfg, outcome.step, self.run.stop_at
        due = (cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or (
            step == stop_at and (cfg.checkpoint.save_final or stop_at < cfg.train.steps))
        if due:
            self.save()
            outcome.saved = True

    def save(self) -> None:
        """Collective: a checkpoint of the run as it is now (once per step)."""
        run = self.run
        if self.saved_step == run.step:
            return
        self.checkpointer.save(run.step, run.engine, run.train_state(), run.cfg.to_yaml())
        self.saved_step = run.step

    def wait(self) -> None:
        """Collective: until the last save is complete on disk."""
        self.checkpointer.wait()

    def on_end(self) -> None:
        self.checkpointer.close()

"""Validation loss at the start of a fresh run, every `train.eval_every` steps (on log steps) and at
the last step of this invocation."""
from __future__ import annotations

from trainer.callbacks import Callback, StepOutcome
from trainer.evaluate import validation_loss


class Evaluator(Callback):
    def __init__(self, run):
        self.run = run

    def evaluate(self) -> float:
        run = self.run
        run.val_loss = validation_loss(run.engine, run.val_BT, run.dp_rank, run.layout.dp, run.runtime.device)
        return run.val_loss

    def on_start(self) -> None:
        if self.run.step == 0:
            self.run.metrics.write(0, {"val_loss": self.evaluate()})

    def after_step(self, outcome: StepOutcome) -> None:
        if outcome.log and (outcome.step % self.run.cfg.train.eval_every == 0 or outcome.step == self.run.stop_at):
            outcome.record["val_loss"] = self.evaluate()

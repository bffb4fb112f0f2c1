"""Validation loss at the start of a fresh run, every `train.eval_every` steps (on log steps) and at
the last step of this invocation. A mixture is scored source by source (`val_loss/<name>`, on the
same number of windows of each); `val_loss` is then their mean weighted as the training windows are."""
from __future__ import annotations

from trainer.callbacks import Callback, StepOutcome
from trainer.evaluate import validation_loss


class Evaluator(Callback):
    def __init__(self, run):
        self.run = run

    def evaluate(self) -> dict:
        """{"val_loss": ...} and, for a mixture, {"val_loss/<name>": ...} for each source."""
        run, data = self.run, self.run.data
        if not data.mixture:
            run.val_loss = validation_loss(run.engine, run.val_BT, run.dp_rank, run.layout.dp, run.runtime.device)
            return {"val_loss": run.val_loss}
        per_source = len(run.val_BT) // len(data.sources)   # eval_windows stacks the sources' windows in order
        record, total, weights = {}, 0.0, sum(s.weight for s in data.sources)
        for number, source in enumerate(data.sources):
            windows_BT = run.val_BT[number * per_source:(number + 1) * per_source]
            loss = validation_loss(run.engine, windows_BT, run.dp_rank, run.layout.dp, run.runtime.device)
            record[f"val_loss/{source.name}"] = loss
            total += loss * source.weight / weights
        run.val_loss = total
        return {"val_loss": total, **record}

    def on_start(self) -> None:
        if self.run.step == 0:
            self.run.metrics.write(0, self.evaluate())

    def after_step(self, outcome: StepOutcome) -> None:
        if outcome.log and (outcome.step % self.run.cfg.train.eval_every == 0 or outcome.step == self.run.stop_at):
            outcome.record.update(self.evaluate())

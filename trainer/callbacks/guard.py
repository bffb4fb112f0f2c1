"""The spike guard (trainer/guards.py) as the step's skip decision, with its events and counts; and
the rollback to the last good checkpoint when too many recent steps were skipped."""
from __future__ import annotations

import torch
import torch.distributed as dist

from trainer.callbacks import Callback, StepOutcome
from trainer.engines import StepRequest
from trainer.guards import SpikeGuard
from trainer.recovery import roll_back


class SpikeGuardCallback(Callback):
    """Decides each update on device; writes a `skipped_update` event (step, data offsets) for each
    skip and the running count on log steps, reading the flags back only then."""

    name = "guard"

    def __init__(self, run):
        self.run = run
        self.guard = SpikeGuard(run.cfg.guards, run.runtime.device)
        self.pending: list[tuple[int, int, torch.Tensor]] = []   # (step, data step, skipped) since the last log

    def before_step(self, request: StepRequest) -> None:
        request.decide = lambda loss, grad_norm: self.guard.check(global_mean(loss), grad_norm, request.force_skip)

    def after_step(self, outcome: StepOutcome) -> None:
        self.pending.append((outcome.step, outcome.data_step, outcome.result.skipped))
        if not outcome.log:
            return
        flags = torch.stack([skipped for _, _, skipped in self.pending]).tolist()
        for (step, data_step, _), skipped in zip(self.pending, flags):
            if skipped:
                self.run.metrics.write(step, {"event": "skipped_update", "data_step": data_step,
                                              "offsets": self.run.sampler.global_offsets(data_step).tolist()})
        self.pending = []
        outcome.record["skipped_updates"] = int(self.guard.skipped)
        outcome.rollback_wanted = self.guard.wants_rollback()

    def state_dict(self) -> dict:
        return self.guard.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.guard.load_state_dict(state)


def global_mean(loss: torch.Tensor) -> torch.Tensor:
    """The mean of every rank's loss (a SUM all-reduce: gloo has no AVG)."""
    total = loss.clone()
    if dist.is_initialized():
        dist.all_reduce(total)
        total /= dist.get_world_size()
    return total


class Rollback(Callback):
    """Once the log line is written: restore the last good checkpoint (waiting for one in flight),
    keep reading data where we are, lower the learning rate by `guards.rollback_lr_factor`."""

    name = "rollback"

    def __init__(self, run, guard: SpikeGuardCallback, checkpoints):
        self.run, self.guard, self.checkpoints = run, guard, checkpoints

    def after_step(self, outcome: StepOutcome) -> None:
        if not outcome.rollback_wanted:
            return
        self.checkpoints.wait()
        message = roll_back(self.run, self.guard.guard)
        self.run.metrics.write(outcome.step, {"event": "rollback", "message": self.run.say(message)})
        self.run.callbacks.on_rollback()
        outcome.rolled_back = True

    def state_dict(self) -> dict:
        return {"lr_scale": self.run.lr_scale, "rollbacks": self.run.rollbacks}

    def load_state_dict(self, state: dict) -> None:
        self.run.lr_scale = float(state["lr_scale"])
        self.run.rollbacks = int(state["rollbacks"])

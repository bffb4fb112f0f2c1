"""Callbacks: the side jobs of training, each owning its cadence and its saved state. The loop calls
their hooks in list order; `default_callbacks` gives the order and says why it matters."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from trainer.engines import StepRequest, StepResult

if TYPE_CHECKING:
    from trainer.build import Run
    from trainer.callbacks.preemption import StopSignal


@dataclass
class StepOutcome:
    """One finished optimizer step, as the callbacks see it and add to it."""

    step: int                  # the step just taken (1-based)
    data_step: int             # the data position it read
    lr: float
    result: StepResult
    log: bool                  # a log step: the record is written (host syncs allowed)
    record: dict = field(default_factory=dict)   # what the metrics line of a log step holds
    rollback_wanted: bool = False
    rolled_back: bool = False  # the run went back to its last good checkpoint: later side jobs skip this step
    saved: bool = False        # a checkpoint of this step was started


class Callback:
    """Hooks the loop calls; all optional. `name` keys the callback's state in checkpoints."""

    name = ""

    def on_start(self) -> None: ...
    def before_step(self, request: StepRequest) -> None: ...
    def after_step(self, outcome: StepOutcome) -> None: ...
    def on_rollback(self) -> None: ...
    def on_end(self) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class Callbacks:
    """Calls each hook on every callback, in order."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = callbacks

    def __iter__(self):
        return iter(self.callbacks)

    def on_start(self) -> None:
        for callback in self.callbacks:
            callback.on_start()

    def before_step(self, request: StepRequest) -> None:
        for callback in self.callbacks:
            callback.before_step(request)

    def after_step(self, outcome: StepOutcome) -> None:
        for callback in self.callbacks:
            callback.after_step(outcome)

    def on_rollback(self) -> None:
        for callback in self.callbacks:
            callback.on_rollback()

    def on_end(self) -> None:
        for callback in self.callbacks:
            callback.on_end()

    def state_dict(self) -> dict:
        return {c.name: c.state_dict() for c in self.callbacks if c.name}

    def load_state_dict(self, state: dict) -> None:
        for callback in self.callbacks:
            if callback.name:
                callback.load_state_dict(state[callback.name])


def default_callbacks(run: "Run", signals: Optional["StopSignal"] = None) -> Callbacks:
    """The side jobs of every run, in the order their hooks run. After a step: the evaluation, the
    noise scale and the guard's counts go into the record before the metrics line is written; a
    rollback acts once the line is written; a checkpoint is taken only after the rollback decision
    (never of a step that is being undone); drills kill or stop the process after the checkpoint of
    their step; the preemption check comes last, so a SIGTERM sent at a step stops that step."""
    from trainer.callbacks.checkpointing import CheckpointCallback
    from trainer.callbacks.evaluation import Evaluator
    from trainer.callbacks.fault_injection import FaultInjection
    from trainer.callbacks.guard import Rollback, SpikeGuardCallback
    from trainer.callbacks.metrics import MetricsLogger
    from trainer.callbacks.noise import NoiseScale
    from trainer.callbacks.preemption import Preemption

    checkpoints = CheckpointCallback(run)
    guard = SpikeGuardCallback(run)
    return Callbacks([guard, Evaluator(run), NoiseScale(run), MetricsLogger(run), Rollback(run, guard, checkpoints),
                      checkpoints, FaultInjection(run, checkpoints), Preemption(run, signals, checkpoints)])

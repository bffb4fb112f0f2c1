"""Preemption: SIGTERM or SIGUSR1 (launch/ installs `StopSignal` for both) stops the run at the end of
a step, with a checkpoint saved and complete on disk; `checkpoint.resume=auto` continues from it."""
from __future__ import annotations

import os
import threading
import time
from typing import Optional

from trainer.callbacks import Callback, StepOutcome
from trainer.recovery import stop_requested

PREEMPTED = 75   # EX_TEMPFAIL: stopped by a signal after saving a checkpoint; run again to resume


class StopSignal:
    """A signal handler: the loop finishes its step, saves and returns. A rank blocked in a
    collective (a peer died) never gets there, so unless the loop takes the request within two step
    times (10 s at least) the process exits by itself, and a second signal exits at once: torchrun
    restarts the job without waiting for its own time-out."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.taken = False
        self.step_seconds = 30.0   # the preemption callback keeps it current

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


class Preemption(Callback):
    """Every step, all ranks agree (over gloo, on the CPU) whether any was asked to stop."""

    def __init__(self, run, signals: Optional[StopSignal], checkpoints):
        self.run, self.signals, self.checkpoints = run, signals, checkpoints
        self.last = time.perf_counter()

    def after_step(self, outcome: StepOutcome) -> None:
        now, signals = time.perf_counter(), self.signals
        if signals is not None:
            signals.step_seconds, self.last = now - self.last, now
        if outcome.rolled_back or not stop_requested(self.run, bool(signals and signals.received)):
            return
        if signals is not None:
            signals.taken = True
        self.checkpoints.save()
        self.checkpoints.wait()
        self.run.preempted = True
        self.run.metrics.write(outcome.step, {"event": "preempted", "message": self.run.say(
            f"stopped by a signal at step {outcome.step}, checkpoint saved")})

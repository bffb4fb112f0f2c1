"""What the loop does when things go wrong: roll back past bad data, record skipped updates and
degenerate windows, and inject faults to drill all of it."""
from __future__ import annotations

import os
import signal
from typing import Callable, Optional

import torch
import torch.distributed as dist

from planner.errors import UserError
from trainer.build import Run, model_yaml
from trainer.checkpoint import load_checkpoint, resolve_resume
from trainer.guards import PoisonGradient


def roll_back(run: Run) -> str:
    """Restore the last good checkpoint's weights, optimizer and guard window, but keep reading data
    where we are: the steps since the checkpoint read the data that made them fail. Returns a line
    for the log; UserError after `guards.max_rollbacks` rollbacks, or with nothing to roll back to."""
    guards = run.cfg.guards
    skipped = int(run.guard.recent.sum())
    if run.rollbacks >= guards.max_rollbacks:
        raise UserError(f"training diverged: {skipped} of the last {guards.rollback_window} steps were skipped "
                        f"again after {run.rollbacks} rollback(s); lower optim.lr or look at the data near "
                        f"step {run.sampler.step} (guards.max_rollbacks={guards.max_rollbacks})")
    path = resolve_resume("auto", run.checkpoint_root, run.cfg.checkpoint.verify)
    if path is None:
        raise UserError(f"training diverged at step {run.step} ({skipped} recent steps skipped) and there is no "
                        f"checkpoint to roll back to: set checkpoint.every")
    failed_at, data_step = run.step, run.sampler.step
    saved = load_checkpoint(path, run.engine, run.train_state(), run.runtime.rank, model_yaml(run.cfg))
    run.restore(saved, data_position=False)
    run.rollbacks += 1
    run.lr_scale *= guards.rollback_lr_factor
    run.guard.clear_recent()
    return (f"rolled back from step {failed_at} to {path.name} ({skipped} skipped steps); data continues at "
            f"step {data_step}, past what was being read; learning rate ×{run.lr_scale:g}")


def gather_events(run: Run, events: list[dict]) -> list[dict]:
    """Every rank's events, on every rank (a collective: call it on log steps only)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return events
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, events, group=run.control_group)
    return [event for rank_events in gathered for event in rank_events]


def stop_requested(run: Run, local: bool) -> bool:
    """Whether any rank was asked to stop (SIGTERM, SIGUSR1): all ranks agree, over gloo, on the CPU."""
    flag = torch.tensor([1 if local else 0])
    if dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=run.control_group)
    return bool(flag.item())


def injected_fault(run: Run, data_step: int) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The fault this rank injects into the step that reads `data_step` (faults are tied to data, so
    a rollback that skips the data skips the fault), or None."""
    faults = run.cfg.faults
    if run.runtime.rank != faults.rank or run.runtime.restart_count:
        return None
    if data_step + 1 in faults.nan_grad_steps:
        return PoisonGradient.apply
    if data_step + 1 in faults.spike_steps:
        return lambda loss: loss * faults.spike_scale
    return None


def after_step_faults(run: Run) -> None:
    """Process-level faults at the end of a step: SIGKILL (a crash) or SIGTERM (a preemption)."""
    faults = run.cfg.faults
    if run.runtime.rank != faults.rank or run.runtime.restart_count:
        return
    if faults.kill_step == run.step:
        os.kill(os.getpid(), signal.SIGKILL)
    if faults.term_step == run.step:
        os.kill(os.getpid(), signal.SIGTERM)

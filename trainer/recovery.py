"""What the loop does when things go wrong: roll back past bad data, gather events and stop requests
from every rank."""
from __future__ import annotations

import torch
import torch.distributed as dist

from planner.errors import UserError
from trainer.build import Run, model_yaml
from trainer.checkpoint import load_checkpoint, resolve_resume
from trainer.guards import SpikeGuard


def roll_back(run: Run, guard: SpikeGuard) -> str:
    """Restore the last good checkpoint's weights, optimizer, loss scale, guard window and learning
    rate scale, but keep reading data where we are: the steps since the checkpoint read the data that
    made them fail. Returns a line for the log; UserError after `guards.max_rollbacks` rollbacks, or
    with nothing to roll back to."""
    guards = run.cfg.guards
    skipped = int(guard.recent.sum())
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
    run.step = int(saved["step"])
    run.precision.load_state_dict(saved["scaler"])
    guard.load_state_dict(saved["callbacks"]["guard"])
    run.lr_scale = float(saved["callbacks"]["rollback"]["lr_scale"]) * guards.rollback_lr_factor
    run.rollbacks += 1
    guard.clear_recent()
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

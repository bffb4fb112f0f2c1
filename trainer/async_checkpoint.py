"""Checkpoints off the critical path: the loop waits only while the state is copied to host memory.

`Checkpointer.save` copies model, optimizer and train state into a host buffer (pinned where CUDA is
present, allocated at the first save and reused after), then hands the rest of the save — DCP's
write, checksums, manifest, rename, pruning: `write_checkpoint`, the same code as the synchronous
path — to one background thread. Since that is a copy, the next optimizer step cannot change what
is written. A crash at any moment leaves a complete `step_<n>/` or a `step_<n>.partial/` that resume
ignores: the manifest is still written last and fsynced, and the directory renamed after it.

Why not `dcp.async_save` itself: with the thread executor it is exactly DCP's stager plus `dcp.save`
on a worker thread, but its future ends when DCP's files are written, and our commit (the gather of
every rank's checksums, the manifest, the rename) must follow in the same background job, in order,
with its failure delivered through the same future. So we use DCP's own stager (`DefaultStager`,
whose storage cache is what makes later saves cheap) and call `dcp.save` in our thread. The process
executor (which sidesteps the GIL) would need shared-memory staging and a process group in a
spawned process per save; on CPU the write spends most of its time in I/O and CRC-32, which release
the GIL, so a thread suffices.

The background job's collectives (DCP's planning, our gathers) run on a gloo process group of
their own, created once, so they never interleave with the training's collectives on the default
group. Saves run one at a time: `save` first waits for the previous one.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

from trainer.checkpoint import CheckpointError, rng_state, write_checkpoint

if TYPE_CHECKING:   # a type hint only: saving needs no backend's code
    from trainer.engines import Engine


class Checkpointer:
    """Saves `step_<n>/` under `root`, keeping the newest `keep`, in the background when `async_save`.
    Construct it on every rank at the same point (it creates a process group)."""

    def __init__(self, root: Path, rank: int, keep: int, async_save: bool):
        self.root, self.rank, self.keep, self.async_save = root, rank, keep, async_save
        self.group = dist.new_group(backend="gloo")
        # Called on every rank with the step, in the background, once DCP's files are written and
        # before the rank reports them for the manifest: a fault drill sets it to kill a rank there.
        self.before_commit: Optional[Callable[[int], None]] = None
        self._stager: Optional[DefaultStager] = None
        self._writer: Optional[ThreadPoolExecutor] = None
        self._pending: Optional[Future] = None
        self._pending_step = 0

    def save(self, step: int, engine: Engine, train_state: dict, config_yaml: str) -> None:
        """Collective. Returns as soon as training may go on: under async_save, once the state is
        staged in host memory; the write, the checksums, the manifest, the rename and the pruning
        finish in the background. Synchronously otherwise."""
        self.wait()   # one save at a time: the staging buffer is reused
        model_state, optim_state = engine.state_dict()
        state = {"model": model_state, "optim": optim_state, "train": train_state}
        if not self.async_save:
            write_checkpoint(self.root, step, state, rng_state(), config_yaml, self.rank, self.keep, self.group,
                             self.before_commit)
            return
        # Blocking copies (no non_blocking): once `stage` returns, the optimizer may change the sources.
        staged = self._staging().stage(state)
        self._pending_step = step
        self._pending = self._background().submit(write_checkpoint, self.root, step, staged, rng_state(), config_yaml,
                                                  self.rank, self.keep, self.group, self.before_commit)

    def wait(self) -> None:
        """Collective. Until the last save is complete (renamed to step_<n>/); raises its error if it
        failed — on every rank, if it failed on any."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        error = pending.exception()
        failed = torch.tensor([error is not None], dtype=torch.int32)
        dist.all_reduce(failed, op=dist.ReduceOp.MAX, group=self.group)
        if error is not None:
            raise error
        if failed.item():
            raise CheckpointError(f"the checkpoint of step {self._pending_step} failed on another rank")

    def close(self) -> None:
        """Collective: finish the last save, then let go of the thread and the host buffer."""
        try:
            self.wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
            if self._stager is not None:
                self._stager.close()
            self._writer = self._stager = None

    def _staging(self) -> DefaultStager:
        if self._stager is None:
            # Synchronous copies into cached host storage, pinned for fast device-to-host copies.
            pinned = torch.cuda.is_available()
            self._stager = DefaultStager(StagingOptions(use_pinned_memory=pinned, use_shared_memory=False,
                                                        use_async_staging=False, use_non_blocking_copy=False))
        return self._stager

    def _background(self) -> ThreadPoolExecutor:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        return self._writer

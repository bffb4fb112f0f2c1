"""The one object the loop talks to for a backend: forward module, backward, step, state dicts.

`TorchEngine` runs DDP and FSDP2, with or without tensor parallelism, with a torch optimizer and our
`Precision`; `PipelineEngine` adds the pipeline schedule, which runs forward and backward of all
micro-batches itself; DeepSpeed's engine (`parallel/zero.py`) has the same methods. The loop never
asks which backend it has.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Optional, Protocol

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

from parallel.gradients import average_gradients, clip_gradients, global_grad_norm, local
from parallel.held_memory import storage_bytes
from parallel.parallelize import Parallelized
from parallel.tensor import loss_context
from trainer.model import language_model_loss, summed_token_loss
from trainer.precision import Precision


# Given the global gradient norm (device tensor), whether to skip this update (bool device tensor).
Decide = Callable[[torch.Tensor], torch.Tensor]


class Engine(Protocol):
    module: nn.Module   # what forward runs on: training, evaluation and sampling (collective when sharded)
    eval_batch: int      # sequences `score` takes at once

    def accumulate(self, last: bool) -> ContextManager: ...
    def autocast(self) -> ContextManager: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self, grad_clip: float, measure: bool = False,
             decide: Optional[Decide] = None) -> tuple[torch.Tensor, torch.Tensor]: ...
    def set_lr(self, lr: float) -> None: ...
    def state_dict(self, for_loading: bool = False) -> tuple[dict, dict]: ...
    def load_state_dict(self, model_state: dict, optim_state: dict) -> None: ...
    def score(self, inputs_BT: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor: ...
    model_state_bytes: int   # parameters + gradients + optimizer states held by this rank, at the last measured step


class TorchEngine:
    """DDP or FSDP2 over a torch optimizer.

    Gradient accumulation: DDP all-reduces only on the last micro-batch (`no_sync` before). FSDP2 at
    ZeRO-2 (`reshard_after_forward=False`) likewise accumulates unsharded gradients and reduce-scatters
    once; at ZeRO-3 it reduce-scatters every micro-batch, so gradients stay sharded, as ZeRO-3 promises.
    """

    def __init__(self, parallel: Parallelized | nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
                 micro_batch: int = 1, reduce_every_micro_batch: bool = False, tensor_parallel: bool = False):
        """`parallel`: what `parallelize` returned, or a plain module (one process, or DDP/FSDP applied by hand)."""
        if isinstance(parallel, nn.Module):
            parallel = Parallelized(parallel)
        self.module, self.optimizer, self.precision = parallel.module, optimizer, precision
        self.parallel, self.tensor_parallel = parallel, tensor_parallel
        self.reduce_every_micro_batch = reduce_every_micro_batch
        self.eval_batch = micro_batch
        self.model_state_bytes = 0
        # Whole, unreduced, unscaled gradients on this rank between micro-batches (DDP or one process
        # in fp32/bf16): what the gradient noise scale reads.
        self.local_gradients = precision.scaler is None and not any(
            isinstance(p, DTensor) for p in parallel.module.parameters())

    def accumulate(self, last: bool) -> ContextManager:
        if hasattr(self.module, "set_requires_gradient_sync"):      # FSDP2
            self.module.set_requires_gradient_sync(last or self.reduce_every_micro_batch)
            return contextlib.nullcontext()
        no_sync = getattr(self.module, "no_sync", None)              # DDP
        return contextlib.nullcontext() if last or no_sync is None else no_sync()

    def autocast(self) -> ContextManager:
        """Where forward runs: autocast, and under tensor parallelism the loss on vocabulary shards."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.precision.autocast())
        stack.enter_context(loss_context(self.tensor_parallel))
        return stack

    def backward(self, loss: torch.Tensor) -> None:
        with loss_context(self.tensor_parallel):
            self.precision.backward(loss)

    @torch.no_grad()
    def score(self, inputs_BT: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
        """Summed next-token loss over the targets that are not -100 (padding)."""
        with self.autocast():
            return local(summed_token_loss(self.module(inputs_BT), targets_BT))

    def step(self, grad_clip: float, measure: bool = False,
             decide: Optional[Decide] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscale, clip, step unless `decide` says skip, zero gradients; returns the global gradient
        norm before clipping and the skip flag, on device. `measure`: count the model-state bytes
        while gradients and optimizer states are both alive (the step's peak)."""
        self.precision.unscale(self.optimizer)
        params = list(self.module.parameters())
        if self.parallel.average_over is not None:
            average_gradients(params, self.parallel.average_over)
        grad_norm = global_grad_norm(params, self.parallel.pipeline_group)
        if grad_clip > 0:
            clip_gradients(params, grad_clip, grad_norm)
        skip = decide(grad_norm) if decide is not None else torch.zeros((), dtype=torch.bool, device=grad_norm.device)
        if decide is None:
            self.precision.step(self.optimizer)
        elif self.precision.scaler is not None:
            # fp16: the loss scaler reads its overflow flag back anyway; a skipped step only updates the scale
            if bool(skip):
                self.precision.scaler.update()
            else:
                self.precision.step(self.optimizer)
        elif self.optimizer.defaults.get("fused"):
            # The fused AdamW leaves weights, moments and step count untouched where found_inf is
            # set: a skip without reading anything back to the host.
            self.optimizer.found_inf = skip.to(torch.float32)
            self.optimizer.step()
        elif not bool(skip):   # other optimizers: one host read
            self.optimizer.step()
        if measure:
            self.model_state_bytes = self.held_bytes()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, skip

    def local_grad_sq(self) -> torch.Tensor:
        """The squared norm of the gradients accumulated on this rank so far (before any reduction)."""
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads, 2.0).float().square()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)   # µP's per-group multiplier (trainer/optim.py)

    def state_dict(self, for_loading: bool = False) -> tuple[dict, dict]:
        """Model and optimizer state keyed by parameter name, wrappers' prefixes removed: the same
        keys under every layout, so torch.distributed.checkpoint can reshard between them. (Before
        the first step the optimizer's states are created empty, so there is something to load into.)"""
        return get_state_dict(self.module, self.optimizer)

    def load_state_dict(self, model_state: dict, optim_state: dict) -> None:
        set_state_dict(self.module, self.optimizer, model_state_dict=model_state, optim_state_dict=optim_state)

    def held_bytes(self) -> int:
        """Bytes of parameters, gradients and optimizer states this rank holds (its shards)."""
        params = list(self.module.parameters())
        states = [v for s in self.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
        return storage_bytes(params + [p.grad for p in params] + states)


class PipelineEngine(TorchEngine):
    """A pipeline rank: its stages run forward and backward of every micro-batch inside the
    schedule (`forward_backward`); the rest (clipping over all stages, step, state) is TorchEngine's."""

    def __init__(self, parallel: Parallelized, optimizer: torch.optim.Optimizer, precision: Precision,
                 micro_batch: int, n_micro: int, schedule, tensor_parallel: bool = False):
        super().__init__(parallel, optimizer, precision, micro_batch, tensor_parallel=tensor_parallel)
        self.schedule = schedule
        self.eval_batch = micro_batch * n_micro   # the schedule's stages expect whole micro-batches
        self.local_gradients = False              # the schedule runs all micro-batches in one go
        self.fault: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def loss_fn(self, output: torch.Tensor, targets_BT: torch.Tensor, z_loss: float = 0.0,
                scoring: bool = False) -> torch.Tensor:
        """The last stage's loss per micro-batch (the schedule averages gradients over micro-batches)."""
        if scoring:
            return summed_token_loss(output, targets_BT)
        loss = language_model_loss(output, targets_BT, z_loss)
        return self.fault(loss) if self.fault is not None else loss

    def _run(self, inputs_BT, targets_BT, scoring: bool, z_loss: float = 0.0) -> torch.Tensor:
        """The sum of the last stage's micro-batch losses, on every rank of the pipeline."""
        losses: list[torch.Tensor] = []
        run = self.schedule.eval if scoring else self.schedule.step
        with self.autocast():
            run(inputs_BT, target=targets_BT, losses=losses, return_outputs=False,
                loss_kwargs={"z_loss": z_loss, "scoring": scoring})
        total = torch.zeros((), device=inputs_BT.device)
        for loss in losses:
            total += local(loss).detach().float()
        dist.all_reduce(total, group=self.parallel.pipeline_group)   # only the last stage holds losses
        return total

    def forward_backward(self, micro_batches, n_micro: int, device: torch.device, z_loss: float = 0.0,
                         fault: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """Forward and backward of all `n_micro` micro-batches; their mean loss."""
        batches = list(micro_batches)
        inputs_BT = torch.cat([inputs for inputs, _ in batches]).to(device, non_blocking=True)
        targets_BT = torch.cat([targets for _, targets in batches]).to(device, non_blocking=True)
        self.fault = fault
        try:
            return self._run(inputs_BT, targets_BT, scoring=False, z_loss=z_loss) / n_micro
        finally:
            self.fault = None

    @torch.no_grad()
    def score(self, inputs_BT: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
        return self._run(inputs_BT, targets_BT, scoring=True)

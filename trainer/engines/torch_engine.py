"""DDP and FSDP2 (with or without tensor parallelism) over a torch optimizer and our Precision.

Gradient accumulation: DDP all-reduces only on the last micro-batch (`no_sync` before). FSDP2 does
what its ZeRO stage says (parallel/fsdp.py's sync_micro_batch): stage 1 likewise accumulates whole
gradients and reduces once; stages 2 and 3 reduce-scatter every micro-batch, so gradients stay sharded.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Optional

import torch
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from parallel.fsdp import sync_micro_batch
from parallel.gradients import average_gradients, clip_gradients, global_grad_norm, local
from parallel.held_memory import storage_bytes
from parallel.parallelize import Parallelized
from parallel.tensor import loss_context
from trainer.engines import Batches, StepRequest, StepResult, no_skip
from trainer.engines.micro_batches import accumulate
from trainer.model import summed_token_loss
from trainer.precision import Precision

# Given the global gradient norm (device tensor), whether to skip this update (bool device tensor).
SkipByNorm = Callable[[torch.Tensor], torch.Tensor]


class TorchEngine:
    """DDP or FSDP2 over a torch optimizer (or one process, or a module wrapped by hand)."""

    def __init__(self, parallel: Parallelized | nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
                 micro_batch: int = 1, zero_stage: int = 0, tensor_parallel: bool = False):
        """`parallel`: what `parallelize` returned, or a plain module (one process, or DDP/FSDP applied by hand);
        `zero_stage`: what FSDP2 shards, which sets when it reduces gradients."""
        if isinstance(parallel, nn.Module):
            parallel = Parallelized(parallel)
        self.module, self.optimizer, self.precision = parallel.module, optimizer, precision
        self.parallel, self.tensor_parallel = parallel, tensor_parallel
        self.zero_stage = zero_stage
        self.eval_batch = micro_batch
        self.model_state_bytes = 0
        # Whole, unreduced, unscaled gradients on this rank between micro-batches (DDP or one process
        # in fp32/bf16): what the gradient noise scale reads.
        self.local_gradients = precision.scaler is None and not any(
            isinstance(p, DTensor) for p in parallel.module.parameters())
        if parallel.context is not None:   # a context-parallel rank's gradient is of its own chunks only
            self.local_gradients = False

    def train_step(self, batches: Batches, request: StepRequest) -> StepResult:
        """Accumulate gradients over the micro-batches, clip, and step unless `request.decide` says skip."""
        batches, shard = self.context_chunks(list(batches))
        device = self.device
        with shard:
            loss, first_sq = accumulate(batches, len(batches), request, device, module=self.module,
                                        accumulate_context=self.accumulate, autocast=self.autocast,
                                        backward=self.backward,
                                        local_grad_sq=self.local_grad_sq if self.local_gradients else None)
        grad_norm, skipped = self.step(request.grad_clip, request.measure, skip_by_norm(request, loss))
        return StepResult(loss, grad_norm, skipped, first_sq)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def accumulate(self, last: bool) -> ContextManager:
        if isinstance(self.module, FSDPModule):
            sync_micro_batch(self.module, self.zero_stage, last)
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
        """Summed next-token loss over the targets that are not -100 (padding), the same on every
        context-parallel rank (each scores its own chunks; the sums add up)."""
        [(inputs_BT, targets_BT)], shard = self.context_chunks([(inputs_BT, targets_BT)])
        with shard, self.autocast():
            total = local(summed_token_loss(self.module(inputs_BT), targets_BT))
        return total if self.parallel.context is None else self.parallel.context.sum(total)

    def context_chunks(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list, ContextManager]:
        """Under context parallelism, this rank's chunks of each (inputs, targets) pair, and the
        context in which the model takes them for such (its forwards and backward's recomputations);
        else the batches as they are. Every cp rank then holds as many tokens, so the mean of their
        losses, and of their gradients, is that of whole sequences."""
        context = self.parallel.context
        if context is None:
            return batches, contextlib.nullcontext()
        seq_len = batches[0][0].shape[1]
        return ([(context.split(inputs_BT), context.split(targets_BT)) for inputs_BT, targets_BT in batches],
                context.sharded(seq_len, self.device))

    def step(self, grad_clip: float, measure: bool = False,
             decide: Optional[SkipByNorm] = None) -> tuple[torch.Tensor, torch.Tensor]:
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
        skip = decide(grad_norm) if decide is not None else no_skip(grad_norm.device)
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


def skip_by_norm(request: StepRequest, loss: torch.Tensor) -> Optional[SkipByNorm]:
    """The request's decision as a function of the gradient norm alone, this step's loss bound in."""
    if request.decide is None:
        return None
    return lambda grad_norm: request.decide(loss, grad_norm)

"""DeepSpeed ZeRO-1/2/3 behind a lazy import: `deepspeed.initialize` over our model and torch
optimizer, with the torch engine's methods, so the loop cannot tell them apart.

DeepSpeed owns the optimizer step, gradient accumulation, clipping and loss scaling; the guard's skip
is decided inside its step, once it has the global norm. Checkpoints are written in the torch
layout, not DeepSpeed's: full fp32 weights and Adam moments keyed by parameter name (gathered from
the shards with DeepSpeed's `safe_get_full_*`), so a ZeRO run resumes under FSDP or DDP and back.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
import torch.nn as nn

from parallel.held_memory import storage_bytes
from trainer.engines import Batches, StepRequest, StepResult, no_skip
from trainer.engines.micro_batches import accumulate
from trainer.engines.torch_engine import skip_by_norm

ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")
WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.",)   # activation checkpointing's, as torch's state dicts drop it


def _name(fqn: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        fqn = fqn.replace(prefix, "")
    return fqn


class DeepSpeedEngine:
    """`deepspeed.initialize` over our model and torch optimizer, with the torch engine's methods."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, config: dict):
        import deepspeed

        self.stage = config["zero_optimization"]["stage"]
        self.eval_batch = config["train_micro_batch_size_per_gpu"]
        self.engine, self.zero_optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=config, dist_init_required=False)
        # Forward goes through DeepSpeed's engine (ZeRO-3 does its bookkeeping there); `module.module`
        # is our model, for evaluation, sampling and the state dicts.
        self.module = self.engine
        self._model = self.engine.module
        self.model_state_bytes = 0
        self.local_gradients = False   # DeepSpeed reduces and partitions gradients inside its backward
        self._peak_bytes, self._measuring = 0, False
        self._decide, self._skip = None, None
        inner_step = self.zero_optimizer.optimizer.step

        def guarded_step(*args, **kwargs):
            # Inside DeepSpeed's step, once per parameter group, after it has the global norm.
            if self._skip is None:
                self._skip = self._decide(self._grad_norm()) if self._decide else no_skip(torch.device("cpu"))
            if bool(self._skip):   # a host read: DeepSpeed has read its norm back already
                return None        # weights, moments and step count stay as they were
            result = inner_step(*args, **kwargs)
            if self._measuring:   # the group's fp32 gradient partition is alive only during its own step
                self._peak_bytes = max(self._peak_bytes, self.held_bytes())
            return result

        self.zero_optimizer.optimizer.step = guarded_step

    # Training -----------------------------------------------------------------------------------
    def train_step(self, batches: Batches, request: StepRequest) -> StepResult:
        """Each micro-batch through DeepSpeed's backward, then its step at the accumulation boundary."""
        batches = list(batches)
        device = next(self._model.parameters()).device
        loss, _ = accumulate(batches, len(batches), request, device, module=self.module,
                             accumulate_context=self.accumulate, autocast=self.autocast, backward=self.backward)
        grad_norm, skipped = self.step(request.grad_clip, request.measure, skip_by_norm(request, loss))
        return StepResult(loss, grad_norm, skipped)

    @torch.no_grad()
    def score(self, inputs_BT: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
        """Summed next-token loss over the targets that are not -100 (the model's mean ignores them)."""
        tokens = (targets_BT != -100).sum()
        mean = self._model(inputs_BT, targets_BT).float()
        return torch.where(tokens > 0, mean * tokens, torch.zeros_like(mean))

    def accumulate(self, last: bool) -> ContextManager:
        return contextlib.nullcontext()   # DeepSpeed counts micro-steps itself (gradient_accumulation_steps)

    def autocast(self) -> ContextManager:
        return contextlib.nullcontext()   # DeepSpeed casts the module to the compute dtype itself

    def backward(self, loss: torch.Tensor) -> None:
        # The loop already divides each micro-batch's loss by the number of micro-batches.
        self.engine.backward(loss, scale_wrt_gas=False)
        if not self.engine.is_gradient_accumulation_boundary():
            self.engine.step()   # DeepSpeed counts micro-steps in step(); the update is in our step()

    def _grad_norm(self) -> torch.Tensor:
        """DeepSpeed's global gradient norm before clipping (its optimizer's: set before the inner step,
        the engine's only after); it reports a non-finite norm as -1."""
        norm = getattr(self.zero_optimizer, "_global_grad_norm", None)
        device = next(self._model.parameters()).device
        norm = torch.as_tensor(norm if norm is not None else float("nan"), device=device, dtype=torch.float32)
        return torch.where(norm < 0, torch.full_like(norm, float("nan")), norm)

    def step(self, grad_clip: float, measure: bool = False, decide=None) -> tuple[torch.Tensor, torch.Tensor]:
        """DeepSpeed's step at the accumulation boundary, skipped where `decide` says so; returns the
        global gradient norm before clipping and the skip flag. Clipping is DeepSpeed's (`gradient_clipping`)."""
        self._decide, self._skip, self._measuring = decide, None, measure
        self.engine.step()
        skip = self._skip if self._skip is not None else no_skip(torch.device("cpu"))
        self._decide, self._skip = None, None
        if measure:
            self.model_state_bytes = self._peak_bytes
        self._peak_bytes = 0
        return self._grad_norm(), skip

    def set_lr(self, lr: float) -> None:
        # The inner torch optimizer's groups: ZeRO-3 does not mirror its own `param_groups` onto them.
        for group in self.zero_optimizer.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)   # µP's per-group multiplier

    # Checkpoints: the torch layout ------------------------------------------------------------
    def _named(self):
        return [(_name(fqn), p) for fqn, p in self._model.named_parameters()]

    def _inner_states(self) -> list[dict]:
        return [s for s in self.zero_optimizer.optimizer.state.values() if s]

    def state_dict(self, for_loading: bool = False) -> tuple[dict, dict]:
        """Full fp32 weights and moments keyed by name, as torch's `get_state_dict` writes them for an
        unsharded model (collective: every rank gathers; torch.distributed.checkpoint writes each
        tensor once). `for_loading`: empty tensors of the full shapes to load into, no gathering."""
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        inner = self._inner_states()
        step = inner[0]["step"].detach().cpu().clone() if inner else torch.tensor(0.0)
        if inner and not for_loading:
            self._link_moments()
        model, state = {}, {}
        for name, param in self._named():
            if for_loading:
                shape = getattr(param, "ds_shape", param.shape)
                model[name] = torch.zeros(shape, dtype=torch.float32)
                state[name] = {"step": torch.tensor(0.0), **{key: torch.zeros(shape) for key in ADAM_MOMENTS}}
                continue
            model[name] = safe_get_full_fp32_param(param).detach().cpu().clone()
            if inner:
                state[name] = {"step": step.clone(), **{
                    key: safe_get_full_optimizer_state(param, key).detach().cpu().clone() for key in ADAM_MOMENTS}}
        groups = []
        names = [name for name, _ in self._named()]
        index_of = {id(p): name for name, p in zip(names, self._model.parameters())}
        for index, group in enumerate(self.zero_optimizer.optimizer.param_groups):
            hyper = {k: v for k, v in group.items() if k != "params"}
            groups.append({**hyper, "params": [index_of[id(p)] for p in self._group_params(index)]})
        return model, {"state": state, "param_groups": groups}

    def _link_moments(self) -> None:
        """Point each parameter's fragment at its slice of the Adam moments. ZeRO-1/2 link them once,
        after the first parameter group's step, when the other groups have no moments yet: relink."""
        if self.stage < 3:
            self.zero_optimizer._hp_optimizer_states_linked = False
            self.zero_optimizer._lazy_init_hp_params_optimizer_state()

    def _group_params(self, index: int) -> list[nn.Parameter]:
        """Our model's parameters in the torch optimizer's group `index` (DeepSpeed swaps in flat partitions)."""
        groups = getattr(self.zero_optimizer, "bit16_groups", None) or getattr(self.zero_optimizer, "fp16_groups")
        return list(groups[index])

    def load_state_dict(self, model_state: dict, optim_state: dict) -> None:
        """Scatter full weights and moments (as `state_dict` returns them) into the shards."""
        import deepspeed
        from deepspeed.utils import safe_set_full_optimizer_state

        zero = self.zero_optimizer
        moments = optim_state.get("state", {})
        if moments:   # the torch optimizer creates its states at the first step: create them now
            step = float(next(iter(moments.values()))["step"])
            flats = zero.single_partition_of_fp32_groups if self.stage < 3 else zero.fp32_partitioned_groups_flat
            for flat in flats:
                zero.optimizer.state[flat] = {"step": torch.tensor(step), **{
                    key: torch.zeros_like(flat) for key in ADAM_MOMENTS}}
            self._link_moments()
        params = list(self._model.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0, enabled=self.stage == 3):
            with torch.no_grad():
                for name, param in self._named():
                    param.copy_(model_state[name].to(param.device, param.dtype))
        zero.refresh_fp32_params()   # module weights -> fp32 master copies
        for name, param in self._named():
            if name in moments:
                for key in ADAM_MOMENTS:
                    safe_set_full_optimizer_state(param, moments[name][key].to(param.device), key)

    # Memory ----------------------------------------------------------------------------------
    def held_bytes(self) -> int:
        """Bytes of every parameter, gradient and optimizer-state tensor this rank holds: module
        weights (16-bit, or empty shells at stage 3), their shards, fp32 partitions, gradients and moments."""
        grads16 = getattr(self.zero_optimizer, "averaged_gradients", None) or {}
        grads16 = [g for group in (grads16.values() if isinstance(grads16, dict) else grads16)
                   for g in (group if isinstance(group, list) else [group])]
        fp32 = list(getattr(self.zero_optimizer, "single_partition_of_fp32_groups", [])) + list(
            getattr(self.zero_optimizer, "fp32_partitioned_groups_flat", []))
        params = list(self._model.parameters())
        states = [v for s in self.zero_optimizer.optimizer.state.values() for v in s.values()]
        return storage_bytes(params + [p.grad for p in params] + [getattr(p, "ds_tensor", None) for p in params]
                             + fp32 + [t.grad for t in fp32] + grads16 + states)

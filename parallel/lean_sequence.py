"""Lean sequence parallelism: a column-parallel matmul that keeps, for backward, only this rank's
sequence shard of its input and all-gathers it again there (Korthikanti et al. 2022, §4.2.2; what
Megatron-LM's column-parallel linear does under sequence parallelism).

Under sequence parallelism each norm's output lives as a sequence shard (1/tp of the tokens) and
is all-gathered before the fused QKV projection, the MLP's input projections and the head. A plain
matmul on the gathered tensor saves the whole gathered copy for its weight gradient: tp times the
shard. Here the gather happens once per module input (`gather_sequence`, a forward pre-hook on the
attention and MLP modules, or inside the head), the matmuls that read it save the shard, and in
backward the first of them gathers it again, once for all its readers (SwiGLU's gate and up
projections share one gather). The gradient of the gathered input is summed over its readers by
autograd, then reduce-scattered once (the all-gather's backward).

torch 2.13 has two nearby mechanisms, neither of which does this: `input_reshard` (saved-tensor
hooks that reshard every replicated tensor a module saves: meant for blocks under activation
checkpointing, it would also cut per-head tensors that are not replicated, and nested saved-tensor
hooks hide the tensors from checkpointing and from our memory probe), and async TP (inductor's
fused all-gather-matmul on CUDA, which overlaps the gather but still saves the gathered input).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed._functional_collectives as funcol
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ParallelStyle

SEQUENCE_DIM = 1   # activations are (B, T, D)


def _compute_copy(x: torch.Tensor) -> torch.Tensor:
    """Under autocast, the 16-bit copy the matmuls read, made before the gather: half the bytes
    moved and saved, and the model's own shared_compute_copy then finds it already cast."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return x.to(torch.get_autocast_dtype(device))
    return x


def _all_gather(shard: torch.Tensor, mesh: DeviceMesh) -> torch.Tensor:
    """The whole sequence from every rank's shard; differentiable (its backward reduce-scatters)."""
    full = funcol.all_gather_single(shard.contiguous(), SEQUENCE_DIM, mesh)
    return funcol.wait_tensor(full) if isinstance(full, funcol.AsyncCollectiveTensor) else full


class SequenceShard:
    """One module input's sequence shard and the readers that saved it: in backward the first
    reader gathers it again, the others reuse that copy, the last lets it go."""

    def __init__(self, shard: torch.Tensor, mesh: DeviceMesh):
        self.mesh, self.rows = mesh, shard.shape[SEQUENCE_DIM]
        self.readers = 0
        self._gathered: Optional[torch.Tensor] = None

    def gathered(self, shard: torch.Tensor) -> torch.Tensor:
        if self._gathered is None:
            self._gathered = _all_gather(shard, self.mesh)
        return self._gathered

    def release(self) -> None:
        self.readers -= 1
        if self.readers == 0:
            self._gathered = None


class _ColumnMatmulSavingShard(torch.autograd.Function):
    """y = x·Wᵀ + b on the gathered input, saving the shard instead of it."""

    @staticmethod
    def forward(ctx, x_full, x_shard, weight, bias, source: SequenceShard):
        source.readers += 1
        ctx.source = source
        ctx.save_for_backward(x_shard, weight, bias)
        dtype = x_full.dtype   # the compute dtype: autocast already decided it before the gather
        with torch.autocast(x_full.device.type, enabled=False):
            return F.linear(x_full, weight.to(dtype), None if bias is None else bias.to(dtype))

    @staticmethod
    def backward(ctx, grad_out):
        x_shard, weight, bias = ctx.saved_tensors
        x_full = ctx.source.gathered(x_shard)
        grad_2d = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_out @ weight.to(grad_out.dtype)
        grad_w = (grad_2d.t() @ x_full.reshape(-1, x_full.shape[-1])).to(weight.dtype)
        grad_b = grad_2d.sum(0).to(bias.dtype) if bias is not None else None
        ctx.source.release()
        return grad_x, None, grad_w, grad_b, None


class _Slot:
    """The shard of the current forward, handed from a module's pre-hook to its matmuls, and
    emptied when the module returns (each matmul's backward keeps its own references, so pipelined
    micro-batches do not mix, and nothing outlives the graph)."""

    def __init__(self):
        self.source: Optional[SequenceShard] = None
        self.shard: Optional[torch.Tensor] = None


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


class ColumnFromShardLinear(nn.Linear):
    """nn.Linear split by output columns whose input is gathered from sequence shards: a matmul of
    a gathered module input (`_slot` set by `GatherSequence`), or, for the head, its own gather."""

    _slot: Optional[_Slot]
    _mesh: DeviceMesh
    _local_output: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._slot is None:              # the head: gathers its own input
            x_shard = _compute_copy(x)
            source, x = SequenceShard(x_shard, self._mesh), _all_gather(x_shard, self._mesh)
        else:
            source = self._slot.source
            if source is None or x.shape[SEQUENCE_DIM] != source.rows * self._mesh.size():
                raise RuntimeError(f"{type(self).__name__} must read the input its module gathered")
            x_shard = self._slot.shard
        y = _ColumnMatmulSavingShard.apply(x, x_shard, _local(self.weight),
                                           None if self.bias is None else _local(self.bias), source)
        if self._local_output:
            return y
        shape = (*y.shape[:-1], self.weight.shape[0])
        return DTensor.from_local(y, self._mesh, [Shard(-1)], run_check=False, shape=shape,
                                  stride=torch.empty(shape, device="meta").stride())


class LeanColwise(ParallelStyle):
    """Column-parallel split (weights and bias Shard(0), as ColwiseParallel) of a linear that reads
    `slot`'s gathered input (None: gathers its own, the head) and saves only the shard."""

    def __init__(self, slot: Optional[_Slot] = None, local_output: bool = True):
        super().__init__()
        self.slot, self.local_output = slot, local_output

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        if type(module) is not nn.Linear:
            raise TypeError(f"lean sequence parallelism splits nn.Linear, not {type(module).__name__}")
        for key, param in list(module.named_parameters(recurse=False)):
            module.register_parameter(key, nn.Parameter(distribute_tensor(param, device_mesh, [Shard(0)])))
        module.__class__ = ColumnFromShardLinear   # the same module and names, its forward saving the shard
        module._slot, module._mesh, module._local_output = self.slot, device_mesh, self.local_output
        return module


class GatherSequence(ParallelStyle):
    """A forward pre-hook that all-gathers a module's first input from this rank's sequence shard
    and leaves the shard in `slot` for the module's LeanColwise matmuls."""

    def __init__(self, slot: _Slot):
        super().__init__()
        self.slot = slot

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def gather(mod, args):
            x_shard = _compute_copy(args[0])
            self.slot.source, self.slot.shard = SequenceShard(x_shard, device_mesh), x_shard
            return (_all_gather(x_shard, device_mesh), *args[1:])

        def forget(mod, args, output):
            self.slot.source = self.slot.shard = None

        module.register_forward_pre_hook(gather)
        module.register_forward_hook(forget)
        return module


def lean_plan(prefix: str, linears: list[str]) -> dict[str, ParallelStyle]:
    """The plan entries for module `prefix` whose `linears` read its gathered input."""
    slot = _Slot()
    return {prefix: GatherSequence(slot), **{f"{prefix}.{name}": LeanColwise(slot) for name in linears}}

"""Gradients across the layout: their global norm, clipping, and data-parallel averaging where no
wrapper does it.

Parameters may be plain tensors, DTensors on the tensor-parallel mesh, or FSDP shards on a 2-D
mesh, and a pipeline rank holds only its stages' share: the norm is taken per kind of tensor (a
DTensor's norm reduces over its own mesh), then summed over pipeline stages.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.distributed.tensor import DTensor


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The part of `tensor` this rank stores (itself for a plain tensor)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def global_grad_norm(params: Iterable[torch.Tensor], pipeline_group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """The L2 norm of all gradients of the model, the same on every rank (a plain 0-d tensor)."""
    groups: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for param in params:
        if param.grad is not None:
            grad = param.grad
            key = (grad.device_mesh, grad.placements) if isinstance(grad, DTensor) else ("plain", grad.device)
            groups[key].append(grad)
    squares = []
    for grads in groups.values():
        norm = torch.nn.utils.get_total_norm(grads, 2.0)
        squares.append((norm.full_tensor() if isinstance(norm, DTensor) else norm).float().square())
    total = torch.stack(squares).sum() if squares else torch.zeros(())
    if pipeline_group is not None:
        dist.all_reduce(total, group=pipeline_group)
    return total.sqrt()


@torch.no_grad()
def clip_gradients(params: Iterable[torch.Tensor], max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale gradients so their global norm is at most `max_norm` (no host sync: the factor stays
    on device)."""
    factor = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    grads = [local(p.grad) for p in params if p.grad is not None]
    for device_grads in _by_device(grads).values():
        torch._foreach_mul_(device_grads, factor.to(device_grads[0].device))


@torch.no_grad()
def average_gradients(params: Iterable[torch.Tensor], group: dist.ProcessGroup) -> None:
    """Average gradients over the data-parallel `group` in one flat all-reduce per dtype: what DDP
    does, for layouts where DDP cannot wrap the model (tensor or pipeline parallel)."""
    size = dist.get_world_size(group)
    if size == 1:
        return
    by_dtype: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for param in params:
        if param.grad is not None:
            grad = local(param.grad)
            by_dtype[(grad.device, grad.dtype)].append(grad)
    for grads in by_dtype.values():
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, group=group)
        flat /= size
        for grad, averaged in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(averaged)


def _by_device(tensors: list[torch.Tensor]) -> dict[tuple, list[torch.Tensor]]:
    grouped: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for tensor in tensors:
        grouped[(tensor.device, tensor.dtype)].append(tensor)
    return grouped

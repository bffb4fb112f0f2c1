"""What a rank holds: bytes of the distinct storages behind its tensors, shards counted locally."""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch.distributed.tensor import DTensor


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; a plain tensor as it is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def storage_bytes(tensors: Iterable[Optional[torch.Tensor]]) -> int:
    """Bytes of the distinct storages behind `tensors`, each counted once (DDP's gradients are views
    into its buckets; DeepSpeed's into flat buffers)."""
    storages = {}
    for tensor in tensors:
        if torch.is_tensor(tensor) and tensor.numel():
            storage = local(tensor).untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())

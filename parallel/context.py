"""Context parallelism: each sequence split over the cp ranks, attention taken over all of it.

Each sequence is cut into 2·cp chunks and cp rank i holds chunks i and 2·cp−1−i. Under a causal mask
chunk j's queries see j + 1 chunks of keys, so pairing an early chunk with a late one gives every rank
the same attention work. Everything but attention works token by token and runs on the local chunks
as is; only the true positions of this rank's tokens (rotary angles, learned position embeddings)
must reach the model, which reads them from its `positions` (trainer/model.py).

Attention all-gathers keys and values over the cp group, as Llama 3 did (Dubey et al. 2024, §3.3.2):
exact, one collective per layer that runs on gloo as on NCCL, and cheap with grouped-query attention,
where K and V are a small part of the activations; the gather's backward reduce-scatters their
gradients. A ring (torchtitan's choice) can hide the transfers behind compute, at the price of merging
partial softmax results by their log-sum-exp; with K/V this small the gather is the simpler exact one.

Parameters are replicated over cp, as over data parallelism: a cp rank's loss is the mean over its
own tokens, equal in number on every rank, so averaging gradients over dp × cp (parallel/mesh.py)
gives the mean over whole sequences.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.device_mesh import DeviceMesh
from torch.nn.attention.bias import causal_lower_right

ATTENTION_CORE = "attn.core"   # the trainer's AttentionCore inside each block


def rank_chunks(cp: int, rank: int) -> tuple[int, int]:
    """The two of the 2·cp chunks of each sequence that cp rank `rank` holds, in order."""
    return rank, 2 * cp - 1 - rank


def local_positions(seq_len: int, cp: int, rank: int, device: torch.device | None = None) -> torch.Tensor:
    """Positions in the sequence of this rank's tokens: its two chunks, one after the other."""
    chunk = seq_len // (2 * cp)
    return torch.cat([torch.arange(index * chunk, (index + 1) * chunk, device=device)
                      for index in rank_chunks(cp, rank)])


def _natural_order(cp: int) -> list[int]:
    """Where each chunk of a gathered sequence lies: the gather concatenates rank 0's two chunks,
    then rank 1's, ...; entry j is the gathered chunk that is the sequence's j-th."""
    gathered = [chunk for rank in range(cp) for chunk in rank_chunks(cp, rank)]
    return sorted(range(2 * cp), key=gathered.__getitem__)


class _GatherSequence(torch.autograd.Function):
    """All-gather along dim 0 over `group`; backward reduce-scatters the gradient (every rank's
    queries read every rank's keys, so each key's gradient is a sum over ranks)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        out = x.new_empty((dist.get_world_size(group) * x.shape[0], *x.shape[1:]))
        dist.all_gather_into_tensor(out, x.contiguous(), group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        size = dist.get_world_size(ctx.group)
        out = grad.new_empty((grad.shape[0] // size, *grad.shape[1:]))
        dist.reduce_scatter_single(out, grad.contiguous(), group=ctx.group)
        return out, None


class ContextParallel:
    """The cp group, this rank's chunks, and the model's positions it sets while a step runs."""

    def __init__(self, mesh: DeviceMesh, positions):
        """`positions`: the model's TokenPositions (trainer/model.py), whose `index` (None: 0..T−1)
        every pipeline stage reads; set here while a step runs."""
        self.group, self.size, self.rank = mesh.get_group(), mesh.size(), mesh.get_local_rank()
        self.positions = positions
        self.order = _natural_order(self.size)

    @property
    def active(self) -> bool:
        """Whether the forward running now sees this rank's chunks (else whole sequences, as when sampling)."""
        return self.positions.index is not None

    def split(self, x_BT: torch.Tensor) -> torch.Tensor:
        """This rank's tokens of each sequence in a (B, T, ...) batch."""
        return x_BT.index_select(1, local_positions(x_BT.shape[1], self.size, self.rank, x_BT.device))

    @contextlib.contextmanager
    def sharded(self, seq_len: int, device: torch.device) -> Iterator[None]:
        """The model's forwards (and the recomputations of backward) see this rank's chunks of
        sequences of `seq_len` tokens."""
        self.positions.index = local_positions(seq_len, self.size, self.rank, device)
        try:
            yield
        finally:
            self.positions.index = None

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the cp ranks (each holds its own tokens' share)."""
        total = tensor.detach().clone()
        dist.all_reduce(total, group=self.group)
        return total

    def gather_keys_values(self, k_BKTH: torch.Tensor, v_BKTH: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the whole sequence, in sequence order: one all-gather of both, then the
        chunks put back in place. What attention saves for backward is this one (T, 2, B, K, H) tensor."""
        kv_TXBKH = torch.stack((k_BKTH, v_BKTH)).movedim(3, 0)
        gathered = _GatherSequence.apply(kv_TXBKH, self.group)
        chunks = gathered.unflatten(0, (2 * self.size, -1))
        kv_TXBKH = chunks[torch.tensor(self.order, device=chunks.device)].flatten(0, 1)
        k_all, v_all = kv_TXBKH.movedim(0, 3).unbind(0)
        return k_all, v_all


class ContextAttentionCore(nn.Module):
    """softmax(QKᵀ·scale)·V for this rank's queries against the whole sequence's keys and values.
    Each local chunk j sees the sequence's first j + 1 chunks, causally aligned at its end (the
    lower-right causal mask, which GPU flash kernels run without materializing it; on CPU it is a
    chunk × prefix float mask)."""

    def __init__(self, scale: float | None, context: ContextParallel):
        super().__init__()
        self.scale, self.context = scale, context

    def forward(self, q_BNTH: torch.Tensor, k_BKTH: torch.Tensor, v_BKTH: torch.Tensor) -> torch.Tensor:
        gqa = q_BNTH.shape[1] != k_BKTH.shape[1]
        if not self.context.active:   # whole sequences on every cp rank
            return F.scaled_dot_product_attention(q_BNTH, k_BKTH, v_BKTH, is_causal=True, scale=self.scale,
                                                  enable_gqa=gqa)
        k_all, v_all = self.context.gather_keys_values(k_BKTH, v_BKTH)
        # Q in a storage of its own: saved as a view of the fused QKV output, it would keep this
        # rank's K and V alive beside their gathered copy.
        q_BNTH = q_BNTH.contiguous()
        chunk = q_BNTH.shape[2] // 2
        outs = []
        for half, index in enumerate(rank_chunks(self.context.size, self.context.rank)):
            end = (index + 1) * chunk
            outs.append(F.scaled_dot_product_attention(
                q_BNTH[:, :, half * chunk:(half + 1) * chunk], k_all[:, :, :end], v_all[:, :, :end],
                attn_mask=causal_lower_right(chunk, end), scale=self.scale, enable_gqa=gqa))
        return torch.cat(outs, dim=2)


def apply_context_parallel(model: nn.Module, mesh: DeviceMesh, blocks: str = "layers") -> ContextParallel:
    """Give each block of `model.<blocks>` an attention core that gathers keys and values over the
    1-D cp `mesh`; returns what the engines use to feed this rank's chunks. `model` is the trainer's
    Transformer (or a pipeline rank's part of it), whose `positions` all its stages share."""
    context = ContextParallel(mesh, model.positions)
    for block in model.get_submodule(blocks).values():
        parent_name, _, child = ATTENTION_CORE.rpartition(".")
        parent = block.get_submodule(parent_name)
        setattr(parent, child, ContextAttentionCore(getattr(parent, child).scale, context))
    return context

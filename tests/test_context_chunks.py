"""Context parallelism's cut of a sequence (parallel/context.py), without processes: the cp ranks'
chunks cover every position once, give every rank the same causal attention work, and a gather of
them is put back in sequence order."""
import pytest
import torch

from parallel.context import _natural_order, local_positions, rank_chunks


@pytest.mark.parametrize("cp,seq_len", [(2, 32), (4, 64), (16, 128 * 32)])
def test_chunks_cover_the_sequence_with_equal_work(cp, seq_len):
    per_rank = [local_positions(seq_len, cp, rank) for rank in range(cp)]
    assert sorted(torch.cat(per_rank).tolist()) == list(range(seq_len))
    assert {len(positions) for positions in per_rank} == {seq_len // cp}
    # a query at position p attends to p + 1 keys: the ranks' sums are equal
    assert len({int((positions + 1).sum()) for positions in per_rank}) == 1


def test_an_unbalanced_cut_would_differ():
    """The check above can fail: contiguous slices give the last rank far more work."""
    seq_len, cp = 32, 4
    contiguous = [torch.arange(r * seq_len // cp, (r + 1) * seq_len // cp) for r in range(cp)]
    assert len({int((positions + 1).sum()) for positions in contiguous}) == cp


@pytest.mark.parametrize("cp", [1, 2, 3, 8])
def test_gathered_chunks_return_to_sequence_order(cp):
    chunk = 5
    gathered = torch.cat([local_positions(2 * cp * chunk, cp, rank) for rank in range(cp)])
    restored = gathered.view(2 * cp, chunk)[torch.tensor(_natural_order(cp))].flatten()
    assert restored.tolist() == list(range(2 * cp * chunk))
    assert rank_chunks(cp, 0) == (0, 2 * cp - 1)

"""The end-of-run sample works under sequence parallelism: the growing context is padded to a
multiple of the TP ranks (the sequence is split over them), and the padded run draws the same
tokens as one process (causal attention keeps the padding out of the logits read)."""
import pytest

from tests.helpers import TINY, run_train, write_tiny_corpus

pytestmark = pytest.mark.slow


def sample_line(out: str) -> str:
    """The line the trainer prints after its `sample:` line."""
    lines = out.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.endswith("sample:")) + 1]


def test_sample_under_sequence_parallelism_equals_one_process(tmp_path):
    data = write_tiny_corpus(tmp_path / "data")
    common = [*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path / 'runs'}", "train.steps=1",
              "precision.dtype=fp32", "train.sample_tokens=5", "train.sample_prompt=de"]
    single = run_train([*common, "train.name=single"], nproc=1).stdout
    sp = run_train([*common, "parallel.tp=2", "parallel.sequence_parallel=true", "train.name=sp"], nproc=2).stdout
    assert sample_line(sp) == sample_line(single)

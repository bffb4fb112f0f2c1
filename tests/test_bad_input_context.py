"""Context-parallel layouts launch/train.py cannot run: one line naming the problem and exit code 2,
before any process group exists (each rank of a torchrun job would say it alone). The model's
attention is always causal with no sliding window, so no mask needs refusing."""
import pytest

from tests.helpers import TINY, write_tiny_corpus
from tests.test_train_errors import one_line_error_before_any_group


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("overrides,nproc,fragment", [
    # 2 × cp load-balanced chunks per sequence: they must cut seq_len evenly
    (["parallel.cp=2", "model.seq_len=30"], 2, "2 × cp = 4 chunks"),
    (["parallel.cp=3"], 3, "which must divide seq_len 32"),
    # DeepSpeed's engine runs data parallelism only
    (["parallel.backend=deepspeed", "parallel.zero_stage=2", "parallel.cp=2"], 2,
     "backend=deepspeed runs data parallelism only, not parallel.cp=2"),
    (["parallel.cp=2", "parallel.tp=2"], 2,
     "parallel.cp 2 × parallel.tp 2 × parallel.pp 1 does not divide the 2 ranks"),
], ids=["seq_len_30", "cp3_seq_len_32", "deepspeed", "world_too_small"])
def test_bad_context_layout(tmp_path, data, monkeypatch, capsys, overrides, nproc, fragment):
    line = one_line_error_before_any_group([*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path}", *overrides],
                                           tmp_path, monkeypatch, capsys, world_size=nproc)
    assert fragment in line and line.startswith("launch/train.py"), line

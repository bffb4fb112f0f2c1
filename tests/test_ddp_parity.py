"""2-process DDP (gloo) against 1 process with the same global batch: same per-step losses."""
import pytest

from tests.helpers import TINY, run_train, step_losses, write_tiny_corpus

pytestmark = pytest.mark.slow


def test_two_process_ddp_matches_one_process(tmp_path):
    data = write_tiny_corpus(tmp_path / "data")
    common = [*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path / 'runs'}", "train.steps=8",
              "precision.dtype=fp32"]
    run_train([*common, "train.name=single"], nproc=1)
    run_train([*common, "train.name=ddp"], nproc=2)
    single, ddp = step_losses(tmp_path / "runs" / "single"), step_losses(tmp_path / "runs" / "ddp")
    assert sorted(single) == sorted(ddp) == list(range(1, 9))
    for step in single:
        assert ddp[step] == pytest.approx(single[step], abs=1e-5), step
    assert single[8] < single[1]  # it trained

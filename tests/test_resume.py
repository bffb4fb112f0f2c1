"""20 steps straight equal 10 steps + resume + 10 steps, exactly (CPU, fp32)."""
import json

import pytest

from tests.helpers import TINY, run_train, step_losses, write_tiny_corpus

pytestmark = pytest.mark.slow


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    data = write_tiny_corpus(tmp_path / "data")
    common = [*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path / 'runs'}", "train.steps=20",
              "precision.dtype=fp32", "optim.grad_clip=0.5"]
    run_train([*common, "train.name=straight"])
    run_train([*common, "train.name=resumed", "train.stop_after=10"])
    checkpoints = tmp_path / "runs" / "resumed" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_10"]
    out = run_train([*common, "train.name=resumed", "checkpoint.resume=auto"]).stdout
    assert "resuming from" in out
    straight, resumed = step_losses(tmp_path / "runs" / "straight"), step_losses(tmp_path / "runs" / "resumed")
    assert sorted(resumed) == list(range(1, 21))
    for step in straight:
        assert resumed[step] == pytest.approx(straight[step], abs=1e-6), step
    saved = (checkpoints / "step_20" / "config.yaml").read_text()
    assert "name: resumed" in saved and "steps: 20" in saved  # the resolved config travels along
    rows = (tmp_path / "runs" / "runs.csv").read_text().splitlines()
    assert rows[0] == "name,N,D,C,loss" and [r.split(",")[0] for r in rows[1:]] == ["straight", "resumed"]


def test_two_process_resume_on_the_same_world(tmp_path):
    data = write_tiny_corpus(tmp_path / "data")
    common = [*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path / 'runs'}", "train.steps=6"]
    run_train([*common, "train.name=a"], nproc=2)
    run_train([*common, "train.name=b", "train.stop_after=3"], nproc=2)
    run_train([*common, "train.name=b"], nproc=2)
    a, b = step_losses(tmp_path / "runs" / "a"), step_losses(tmp_path / "runs" / "b")
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step
    metrics = [json.loads(line) for line in (tmp_path / "runs" / "b" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0] == {"step": 0, "val_loss": metrics[0]["val_loss"]}

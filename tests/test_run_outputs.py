"""What a finished run leaves behind: metrics, TensorBoard events, config, checkpoint, runs table, sample."""
import json

import pytest
import yaml

from tests.helpers import TINY, run_train, write_tiny_corpus
from trainer.config import Config

pytestmark = pytest.mark.slow


def test_finished_run_writes_everything(tmp_path):
    data = write_tiny_corpus(tmp_path / "data")
    runs = tmp_path / "runs"
    args = [*TINY, f"data.dir={data}", f"train.runs_dir={runs}", "train.steps=4", "train.name=full",
            "log.tensorboard=true", "train.sample_tokens=20", "log.every=2"]
    out = run_train(args).stdout
    run_dir = runs / "full"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # event lines (a degenerate window replaced, ...) come whenever they happen: count the log steps
    records = [r for r in records if "event" not in r]
    assert [r["step"] for r in records] == [0, 2, 4]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "peak_mem_gib"} <= set(records[1])
    assert records[1]["tokens_per_s"] > 0 and records[1]["mfu"] is None  # no peak FLOP/s for a CPU
    assert list(run_dir.glob("events.out.tfevents.*"))
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["gpu"] is None and plan["layouts"][0]["dp"] == 1 and plan["layouts"][0]["micro_batch"] == 4
    Config.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert (run_dir / "checkpoints" / "step_4" / ".metadata").is_file()
    name, n, d, c, loss = (runs / "runs.csv").read_text().splitlines()[1].split(",")
    assert name == "full" and int(d) == 4 * 8 * 32
    assert float(c) == pytest.approx(6 * int(n) * int(d), rel=1e-5)
    assert float(loss) == pytest.approx(records[-1]["val_loss"], abs=1e-5)
    assert "sample:" in out and "validation loss" in out

    again = run_train(args).stdout  # resuming a complete run trains nothing and adds no row
    assert "already complete" in again
    assert len((runs / "runs.csv").read_text().splitlines()) == 2


def test_fresh_start_refuses_to_overwrite_checkpoints(tmp_path):
    data = write_tiny_corpus(tmp_path / "data")
    args = [*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path}", "train.steps=1", "train.name=x"]
    run_train(args)
    result = run_train([*args, "checkpoint.resume=none"], check=False)
    assert result.returncode == 2 and "already holds checkpoints" in result.stderr

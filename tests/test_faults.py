"""Fault injection: each fault a long run dies of, injected into a real run on CPU (multi-process
where it matters), and what the trainer does about it. Read as a table: test_fault[...]."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import TINY, events, run_train, step_losses, write_tiny_corpus

pytestmark = pytest.mark.slow
# A short window so that spikes are looked for after 3 accepted steps.
GUARDS = ["guards.spike_window=8", "guards.spike_min_history=3", "precision.dtype=fp32", "train.eval_every=100"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("data"))


def common(tmp_path: Path, data: Path, steps: int) -> list[str]:
    return [*TINY, *GUARDS, f"data.dir={data}", f"train.runs_dir={tmp_path / 'runs'}", f"train.steps={steps}"]


def assert_same(losses: dict, reference: dict, steps, rel: float = 1e-6) -> None:
    for step in steps:
        assert losses[step] == pytest.approx(reference[step], rel=rel), (step, losses[step], reference[step])


def nan_grad(tmp_path, data):
    """NaN gradients at step 3 on rank 1 of 2: no rank applies the update and training goes on; the
    losses (so the weights) equal a run whose step 3 was skipped on purpose."""
    args = common(tmp_path, data, 8)
    run_train([*args, "train.name=nan", "faults.nan_grad_steps=[3]", "faults.rank=1"], nproc=2)
    run_train([*args, "train.name=skipped", "faults.skip_steps=[3]"], nproc=2)
    run_train([*args, "train.name=clean"], nproc=2)
    runs = tmp_path / "runs"
    nan, skipped, clean = (step_losses(runs / name) for name in ("nan", "skipped", "clean"))
    assert_same(nan, skipped, range(1, 9))
    assert nan[8] != pytest.approx(clean[8], rel=1e-6)     # the skip mattered
    (event,) = events(runs / "nan", "skipped_update")
    assert event["step"] == 3 and event["data_step"] == 2 and len(event["offsets"]) == 8


def spike(tmp_path, data):
    """A spike batch (loss ×30) at step 6: skipped; the curve goes on as if the step had been skipped."""
    args = common(tmp_path, data, 9)
    run_train([*args, "train.name=spike", "faults.spike_steps=[6]"])
    run_train([*args, "train.name=skipped", "faults.skip_steps=[6]"])
    spiked, skipped = step_losses(tmp_path / "runs" / "spike"), step_losses(tmp_path / "runs" / "skipped")
    assert spiked[6] > 10 * skipped[6]
    assert_same(spiked, skipped, [s for s in range(1, 10) if s != 6])
    assert [e["step"] for e in events(tmp_path / "runs" / "spike", "skipped_update")] == [6]


def level_shift(tmp_path, data):
    """Every gradient ×2 from step 8 on, for good (the norm doubles and stays there, as when a loss
    leaves a plateau): the guard skips the first guards.level_shift_steps - 1 = 2 steps of the rise,
    takes the third as the new level, and trains through to the end with no skip after step 9. The
    same run without the rule (level_shift_steps=0) skips every step from 8 until it gives up."""
    args = [*common(tmp_path, data, 16), "guards.spike_sigma=3", "guards.spike_min_norm_jump=0.5",
            "faults.grad_scale_from=8"]
    run_train([*args[:-1], "train.name=reference"])
    run_train([*args, "train.name=shift"])
    runs = tmp_path / "runs"
    assert events(runs / "reference", "skipped_update") == []
    assert [e["step"] for e in events(runs / "shift", "skipped_update")] == [8, 9]
    norms = {step: record["grad_norm"] for step, record in records(runs / "shift").items()}
    reference = {step: record["grad_norm"] for step, record in records(runs / "reference").items()}
    assert sorted(norms) == list(range(1, 17)) and norms[10] > 1.5 * reference[10]   # the new level held
    stuck = run_train([*args, "train.name=no_rule", "guards.level_shift_steps=0"], check=False)
    assert stuck.returncode == 2 and "training diverged" in stuck.stderr
    assert [e["step"] for e in events(runs / "no_rule", "skipped_update")] == [8, 9, 10, 11]


def records(run_dir: Path) -> dict[int, dict]:
    """The metrics line of each step (the last one written for it)."""
    lines = (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r for r in lines if "grad_norm" in r}


def spike_after_resume(tmp_path, data):
    """Saved at step 4, resumed: the guard's window is the saved one, so the spike at step 6 (two
    steps after the resume, before a fresh window would have 3 entries) is still caught."""
    args = common(tmp_path, data, 9)
    run_train([*args, "train.name=straight", "faults.spike_steps=[6]"])
    run_train([*args, "train.name=resumed", "faults.spike_steps=[6]", "train.stop_after=4"])
    guard = json.loads((tmp_path / "runs" / "resumed" / "metrics.jsonl").read_text().splitlines()[-1])
    assert guard["skipped_updates"] == 0
    run_train([*args, "train.name=resumed", "faults.spike_steps=[6]"])
    straight, resumed = step_losses(tmp_path / "runs" / "straight"), step_losses(tmp_path / "runs" / "resumed")
    assert_same(resumed, straight, range(1, 10))
    assert [e["step"] for e in events(tmp_path / "runs" / "resumed", "skipped_update")] == [6]


def rollback(tmp_path, data):
    """NaNs at steps 6 and 7: two skips in a window of 5 roll back to the checkpoint of step 4; the data
    of steps 5-7 is not read again and training finishes."""
    args = [*common(tmp_path, data, 12), "checkpoint.every=4", "guards.rollback_after=2", "guards.rollback_window=5",
            "train.name=rb", "faults.nan_grad_steps=[6,7]", "guards.rollback_lr_factor=0.5"]
    out = run_train(args, nproc=2).stdout
    (event,) = events(tmp_path / "runs" / "rb", "rollback")
    assert event["step"] == 7 and "to step_4" in event["message"] and "data continues at step 7" in event["message"]
    assert "rolled back from step 7 to step_4" in out and "step 12: validation loss" in out
    losses = step_losses(tmp_path / "runs" / "rb")
    assert sorted(losses) == list(range(1, 13)) and all(v == v for v in losses.values())
    records = [json.loads(line) for line in (tmp_path / "runs" / "rb" / "metrics.jsonl").read_text().splitlines()]
    after = [r for r in records if r.get("step") == 5 and "lr" in r]
    assert after[-1]["lr"] == pytest.approx(after[0]["lr"] * 0.5)   # the learning rate was lowered


def sigkill(tmp_path, data):
    """Rank 1 killed by SIGKILL after step 6 under `torchrun --max-restarts=1`: the job restarts,
    resumes from step_4 and finishes; its losses from there on equal an uninterrupted run's."""
    args = [*common(tmp_path, data, 10), "checkpoint.every=4"]
    run_train([*args, "train.name=straight"], nproc=2)
    run_train([*args, "train.name=killed", "faults.kill_step=6", "faults.rank=1"], nproc=2,
              torchrun=("--max-restarts=1",))
    straight, killed = step_losses(tmp_path / "runs" / "straight"), step_losses(tmp_path / "runs" / "killed")
    assert sorted(killed) == list(range(1, 11))
    assert_same(killed, straight, range(5, 11))


def sigkill_during_async_save(tmp_path, data):
    """Rank 1 killed by SIGKILL while the checkpoint of step 8 is written in the background (staged,
    its files written, no manifest yet) under `torchrun --max-restarts=1`: step_8 never completes, so
    the job restarts from step_4 (the .partial left behind is ignored, nothing damaged is loaded), and
    its losses from step 5 on equal an uninterrupted run's."""
    args = [*common(tmp_path, data, 10), "checkpoint.every=4", "checkpoint.async_save=true"]
    run_train([*args, "train.name=straight"], nproc=2)
    result = run_train([*args, "train.name=killed", "faults.kill_in_save_step=8", "faults.rank=1"], nproc=2,
                       torchrun=("--max-restarts=1",))
    run_dir = tmp_path / "runs" / "killed"
    # The first launch starts afresh: a line saying it resumed is the second launch's, and there is one.
    resumed = [line.split("resuming from ", 1)[1].split(":", 1)[0] for line in result.stdout.splitlines()
               if "resuming from " in line]
    assert resumed == [str(run_dir / "checkpoints" / "step_4")], result.stdout[-3000:]
    assert "damaged" not in result.stdout + result.stderr
    straight, killed = step_losses(tmp_path / "runs" / "straight"), step_losses(run_dir)
    assert sorted(killed) == list(range(1, 11))
    assert_same(killed, straight, range(5, 11))
    checkpoints = run_dir / "checkpoints"   # the second launch saved step 8 afresh; no leftovers
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_10", "step_8"]
    assert all((checkpoints / name / "manifest.json").is_file() for name in ("step_8", "step_10"))

def sigterm(tmp_path, data):
    """SIGTERM after step 5: the step finishes, a checkpoint is saved, the process exits 75
    (temporary failure: run it again); resuming reproduces the uninterrupted run exactly."""
    args = common(tmp_path, data, 9)
    run_train([*args, "train.name=straight"])
    stopped = run_train([*args, "train.name=stopped", "faults.term_step=5"], check=False)
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    assert (tmp_path / "runs" / "stopped" / "checkpoints" / "step_5" / "manifest.json").is_file()
    run_train([*args, "train.name=stopped"])
    assert_same(step_losses(tmp_path / "runs" / "stopped"), step_losses(tmp_path / "runs" / "straight"), range(1, 10))


def _damaged_checkpoint(tmp_path, data, damage) -> None:
    """Checkpoints at steps 4 and 8, the newer damaged, resumed to step 10: the damage is found, the
    checkpoint moved aside (not deleted), step_4 used, and the losses equal an uninterrupted run's."""
    args = [*common(tmp_path, data, 10), "checkpoint.every=4"]
    run_train([*args, "train.name=straight"])
    run_train([*args, "train.name=damaged", "train.stop_after=8"])
    checkpoints = tmp_path / "runs" / "damaged" / "checkpoints"
    shard = next((checkpoints / "step_8").glob("__0_*.distcp"))
    damage(shard)
    out = run_train([*args, "train.name=damaged"]).stdout
    assert "step_8 is damaged" in out and "moved to step_8.corrupt" in out and "resuming from" in out
    assert (checkpoints / "step_8.corrupt" / shard.name).is_file()
    assert_same(step_losses(tmp_path / "runs" / "damaged"), step_losses(tmp_path / "runs" / "straight"), range(5, 11))


def truncated_checkpoint(tmp_path, data):
    _damaged_checkpoint(tmp_path, data, lambda shard: os.truncate(shard, shard.stat().st_size // 2))


def corrupt_checkpoint(tmp_path, data):
    def flip(shard: Path) -> None:   # same size, different bytes: only the checksum can tell
        raw = bytearray(shard.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        shard.write_bytes(bytes(raw))

    _damaged_checkpoint(tmp_path, data, flip)


def bad_batch(tmp_path, data):
    """A corpus with a long line of '/' (as in a famous loss spike): windows inside it are skipped
    by the loader, counted, and logged with their offsets."""
    from trainer.data import prepare
    from trainer.tokenizer import ByteTokenizer

    source = tmp_path / "slashes.py"
    text = (Path(__file__).read_text() * 3) + "/" * 20000 + Path(__file__).read_text() * 3
    source.write_text(text)
    prepared = prepare([source], ByteTokenizer(), tmp_path / "slashes", val_fraction=0.1)
    assert prepared["tokens"]["train"] > 20000
    start = text.index("/" * 100)
    run_train([*common(tmp_path, tmp_path / "slashes", 6), f"data.dir={tmp_path / 'slashes'}", "train.name=bad"])
    windows = events(tmp_path / "runs" / "bad", "bad_window")
    assert windows, "no degenerate window was skipped"
    assert all(start - 33 <= w["offset"] <= start + 20000 and "repeated" in w["reason"] for w in windows)
    last = json.loads((tmp_path / "runs" / "bad" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["bad_windows"] == len(windows)


FAULTS = {f.__name__: f for f in (nan_grad, spike, level_shift, spike_after_resume, rollback, sigkill,
                                  sigkill_during_async_save, sigterm, truncated_checkpoint, corrupt_checkpoint,
                                  bad_batch)}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault(tmp_path, data, fault):
    FAULTS[fault](tmp_path, data)


def test_too_many_rollbacks_give_up_in_one_line(tmp_path, data):
    args = [*common(tmp_path, data, 12), "checkpoint.every=2", "guards.rollback_after=1", "guards.max_rollbacks=1",
            "train.name=hopeless", "faults.nan_grad_steps=[3,4,5,6,7,8,9,10]"]
    result = run_train(args, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "training diverged" in lines[0] and "after 1 rollback" in lines[0], result.stderr


def test_same_seed_and_layout_give_bitwise_identical_losses(tmp_path, data):
    args = [*common(tmp_path, data, 5), "train.deterministic=true"]
    run_train([*args, "train.name=one"], nproc=2)
    run_train([*args, "train.name=two"], nproc=2)
    assert step_losses(tmp_path / "runs" / "one") == step_losses(tmp_path / "runs" / "two")

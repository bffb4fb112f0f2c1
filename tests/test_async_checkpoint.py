"""The background checkpointer in one process (a gloo group of one): what it writes equals a
synchronous save, it writes the state as it was when `save` returned, and its failures reach `wait`."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn

from trainer.async_checkpoint import Checkpointer
from trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from trainer.config import PrecisionConfig
from trainer.engines.torch_engine import TorchEngine
from trainer.manifest import MANIFEST, manifest_problem
from trainer.precision import Precision

CONFIG = "model: {}\n"


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29547", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def trained_engine(seed: int = 0) -> TorchEngine:
    """A small model after one AdamW step, so the optimizer has moments to save."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    engine = TorchEngine(model, optimizer, Precision(PrecisionConfig(dtype="fp32"), "cpu"))
    take_step(engine)
    return engine


def take_step(engine: TorchEngine) -> None:
    loss = engine.module(torch.randn(5, 8)).square().mean()
    loss.backward()
    engine.optimizer.step()
    engine.optimizer.zero_grad(set_to_none=True)


def loaded(path: Path) -> tuple[dict, dict]:
    """Model state and train state loaded from `path` into a freshly built engine."""
    engine = trained_engine(seed=1)
    train = load_checkpoint(path, engine, {"step": 0, "window": torch.zeros(3)}, 0, "{}")
    return {k: v.clone() for k, v in engine.module.state_dict().items()}, train


def test_async_save_then_wait_equals_a_synchronous_save(tmp_path):
    engine = trained_engine()
    train_state = {"step": 3, "window": torch.tensor([1.0, 2.0, 3.0])}
    save_checkpoint(tmp_path / "sync", 3, engine, train_state, CONFIG, 0, keep=2)
    checkpointer = Checkpointer(tmp_path / "async", 0, keep=2, async_save=True)
    checkpointer.save(3, engine, train_state, CONFIG)
    checkpointer.wait()
    assert manifest_problem(tmp_path / "async" / "step_3") is None
    assert not (tmp_path / "async" / "step_3.partial").exists()
    (sync_model, sync_train), (async_model, async_train) = loaded(tmp_path / "sync" / "step_3"), \
        loaded(tmp_path / "async" / "step_3")
    assert sync_model.keys() == async_model.keys()
    for name in sync_model:
        assert torch.equal(sync_model[name], async_model[name]), name
    assert async_train["step"] == 3 and torch.equal(async_train["window"], sync_train["window"])
    checkpointer.close()


def test_the_state_written_is_the_one_staged_before_the_next_step(tmp_path, monkeypatch):
    """The write is held back until the optimizer has stepped and the train state moved on: the
    checkpoint still has the values of the moment `save` returned."""
    engine = trained_engine()
    before = {k: v.clone() for k, v in engine.module.state_dict().items()}
    stepped = threading.Event()
    real_save = dcp.save

    def held_save(*args, **kwargs):
        assert stepped.wait(timeout=60)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(dcp, "save", held_save)
    train_state = {"step": 1, "window": torch.zeros(3)}
    checkpointer = Checkpointer(tmp_path, 0, keep=2, async_save=True)
    checkpointer.save(1, engine, train_state, CONFIG)
    take_step(engine)
    train_state["window"].add_(7.0)
    train_state["step"] = 2
    stepped.set()
    checkpointer.wait()
    model, train = loaded(tmp_path / "step_1")
    assert not torch.equal(engine.module.state_dict()["0.weight"], before["0.weight"])   # the step did change it
    for name in before:
        assert torch.equal(model[name], before[name]), name
    assert train["step"] == 1 and torch.equal(train["window"], torch.zeros(3))
    checkpointer.close()


def test_the_hook_runs_in_the_background_before_the_manifest(tmp_path):
    checkpointer = Checkpointer(tmp_path, 0, keep=2, async_save=True)
    seen = []

    def look(step: int) -> None:
        partial = tmp_path / f"step_{step}.partial"
        seen.append((step, threading.current_thread() is threading.main_thread(), partial.is_dir(),
                     (partial / MANIFEST).exists(), (tmp_path / f"step_{step}").exists()))

    checkpointer.before_commit = look
    checkpointer.save(5, trained_engine(), {"step": 5}, CONFIG)
    checkpointer.wait()
    assert seen == [(5, False, True, False, False)]
    assert (tmp_path / "step_5" / MANIFEST).is_file()
    checkpointer.close()


def test_a_failed_background_write_is_raised_by_wait_and_leaves_no_checkpoint(tmp_path):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")   # the checkpoint root lies under a file: its .partial cannot be made
    checkpointer = Checkpointer(blocker / "checkpoints", 0, keep=2, async_save=True)
    checkpointer.save(2, trained_engine(), {"step": 2}, CONFIG)   # returns: the failure is in the background
    with pytest.raises(CheckpointError, match="preparing .*step_2.partial failed .*rank 0: NotADirectoryError"):
        checkpointer.wait()
    checkpointer.wait()   # reported once
    assert blocker.is_file()
    checkpointer.close()


def test_keep_prunes_old_checkpoints_and_leftover_partials(tmp_path):
    (tmp_path / "step_1.partial").mkdir(parents=True)   # what a crash mid-save leaves
    checkpointer = Checkpointer(tmp_path, 0, keep=2, async_save=True)
    engine = trained_engine()
    for step in (2, 4, 6):
        checkpointer.save(step, engine, {"step": step}, CONFIG)
    checkpointer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_4", "step_6"]

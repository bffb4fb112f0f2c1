"""Checkpoints move between layouts: saved under one, resumed under another (a different backend,
number of ranks, or tensor/pipeline split), the continued losses equal an uninterrupted single-process run's to 1e-5, with the
global batch and the order of the data kept."""
import pytest

from tests.helpers import DEEPSPEED_MISSING, LAYOUTS, run_train, single_process_reference, step_losses

pytestmark = pytest.mark.slow
STEPS, SAVED_AT = 8, 4


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return single_process_reference(tmp_path_factory.mktemp("reshard"), STEPS, "straight")


@pytest.mark.parametrize("saved,resumed", [("fsdp", "ddp"), ("ddp", "fsdp"),
                                           ("zero3", "fsdp"), ("ddp4", "dp_tp"), ("ddp4", "dp_pp"),
                                           ("dp_tp", "fsdp")],
                         ids=lambda name: name)
def test_reshard(reference, saved, resumed):
    if DEEPSPEED_MISSING and "zero" in saved + resumed:
        pytest.skip("DeepSpeed is not installed")
    common, straight, runs = reference
    name = f"{saved}-to-{resumed}"
    (saved_ranks, saved_args), (resumed_ranks, resumed_args) = LAYOUTS[saved], LAYOUTS[resumed]
    run_train([*common, *saved_args, f"train.name={name}", f"train.stop_after={SAVED_AT}"], nproc=saved_ranks)
    out = run_train([*common, *resumed_args, f"train.name={name}"], nproc=resumed_ranks).stdout
    assert "resuming from" in out and f"step_{SAVED_AT}" in out
    losses = step_losses(runs / name)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step in straight:
        assert losses[step] == pytest.approx(straight[step], rel=1e-5), (step, losses[step], straight[step])

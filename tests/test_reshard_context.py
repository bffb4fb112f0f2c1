"""Checkpoints move into and out of context parallelism: saved under one layout, resumed under another,
the continued losses equal an uninterrupted single-process run's to 1e-5. Parameters are replicated
over cp ranks (or sharded over dp_shard × cp by FSDP), so a checkpoint holds the same tensors under
the same names as any data-parallel layout's."""
import pytest

from tests.helpers import LAYOUTS as DATA_PARALLEL, run_train, single_process_reference, step_losses

pytestmark = pytest.mark.slow
STEPS, SAVED_AT = 8, 4
LAYOUTS = {
    "dp2": DATA_PARALLEL["ddp"],
    "cp2": (2, ["parallel.cp=2"]),
    "fsdp_cp2": (2, ["parallel.backend=fsdp", "parallel.cp=2"]),   # one copy sharded over the two cp ranks
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return single_process_reference(tmp_path_factory.mktemp("reshard_context"), STEPS, "straight")


@pytest.mark.parametrize("saved,resumed", [("cp2", "dp2"), ("dp2", "fsdp_cp2")], ids=lambda name: name)
def test_reshard(reference, saved, resumed):
    common, straight, runs = reference
    name = f"{saved}-to-{resumed}"
    (saved_ranks, saved_args), (resumed_ranks, resumed_args) = LAYOUTS[saved], LAYOUTS[resumed]
    first = run_train([*common, *saved_args, f"train.name={name}", f"train.stop_after={SAVED_AT}"],
                      nproc=saved_ranks).stdout
    out = run_train([*common, *resumed_args, f"train.name={name}"], nproc=resumed_ranks).stdout
    assert ("cp=2" in first) == ("cp" in saved) and ("cp=2" in out) == ("cp" in resumed)   # the layouts asked for
    assert "resuming from" in out and f"step_{SAVED_AT}" in out
    losses = step_losses(runs / name)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step in straight:
        assert losses[step] == pytest.approx(straight[step], rel=1e-5), (step, losses[step], straight[step])

"""Checkpoints move into and out of the frontier compositions: data parallelism into FSDP × PP, FSDP ×
TP × PP back to DDP, an uneven pipeline cut to the balanced one. Saved under one layout, resumed under
the other, the continued losses equal an uninterrupted single-process run's to 1e-5."""
import pytest

from tests.helpers import run_train, single_process_reference, step_losses

pytestmark = pytest.mark.slow
STEPS, SAVED_AT = 8, 4
MODEL = ["model.n_layers=4"]   # two pipeline stages can hold 1 and 3 blocks, or 2 and 2
FSDP = ["parallel.backend=fsdp"]

# name: (ranks, overrides)
LAYOUTS = {
    "ddp": (2, ["parallel.backend=ddp"]),
    "ddp4": (4, ["parallel.backend=ddp"]),
    "fsdp_pp": (4, [*FSDP, "parallel.pp=2"]),
    "fsdp_tp_pp": (8, [*FSDP, "parallel.tp=2", "parallel.pp=2"]),
    "pp_uneven": (2, ["parallel.pp=2", "parallel.pp_layers=[1,3]"]),
    "pp_even": (2, ["parallel.pp=2"]),   # the balanced cut of 4 layers with embedding and head: 2, 2
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    common, straight, runs = single_process_reference(tmp_path_factory.mktemp("reshard_frontier"), STEPS,
                                                      "straight", extra=MODEL)
    return [*common, *MODEL], straight, runs


@pytest.mark.parametrize("saved,resumed", [("ddp4", "fsdp_pp"), ("fsdp_tp_pp", "ddp"), ("pp_uneven", "pp_even")],
                         ids=lambda name: name)
def test_reshard(reference, saved, resumed):
    common, straight, runs = reference
    name = f"{saved}-to-{resumed}"
    (saved_ranks, saved_args), (resumed_ranks, resumed_args) = LAYOUTS[saved], LAYOUTS[resumed]
    run_train([*common, *saved_args, f"train.name={name}", f"train.stop_after={SAVED_AT}"], nproc=saved_ranks,
              timeout=900)
    out = run_train([*common, *resumed_args, f"train.name={name}"], nproc=resumed_ranks, timeout=900).stdout
    assert "resuming from" in out and f"step_{SAVED_AT}" in out
    losses = step_losses(runs / name)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step in straight:
        assert losses[step] == pytest.approx(straight[step], rel=1e-5), (step, losses[step], straight[step])

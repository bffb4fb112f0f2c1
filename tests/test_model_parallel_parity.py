"""Every model-parallel layout trains like one process: per-step losses of tensor parallelism (with
and without sequence parallelism, lean or keeping the gathered input), pipeline parallelism under
each schedule, and their compositions with data parallelism and FSDP on 2, 4 and 8 gloo ranks equal
a single-process run of the same model, data and global batch to 1e-5 relative, over 10 steps (fp32)."""
import pytest

from tests.helpers import assert_same_losses, run_train, single_process_reference

pytestmark = pytest.mark.slow
STEPS = 10
# Four layers, so that two pipeline ranks can hold two stages each (interleaved, zero bubble).
MODEL = ["model.n_layers=4"]

# (ranks, overrides, what the run announces)
LAYOUTS = {
    "tp": (2, ["parallel.tp=2"], "ddp over dp=1,tp=2,pp=1"),
    "tp_sp": (2, ["parallel.tp=2", "parallel.sequence_parallel=true"], "tp=2,pp=1,zero=0,mb=2,recompute=none,sp=true"),
    "tp_sp_gathered": (2, ["parallel.tp=2", "parallel.sequence_parallel=true", "parallel.lean_sp=false"],
                       "recompute=none,sp=true,lean_sp=false"),
    "pp_gpipe": (2, ["parallel.pp=2", "parallel.pp_schedule=gpipe"], "schedule=gpipe"),
    "pp_1f1b": (2, ["parallel.pp=2", "parallel.pp_schedule=1f1b"], "schedule=1f1b"),
    "pp_interleaved": (2, ["parallel.pp=2", "parallel.pp_schedule=interleaved", "parallel.vpp=2"],
                       "schedule=interleaved,vpp=2"),
    "pp_zero_bubble": (2, ["parallel.pp=2", "parallel.pp_schedule=zero_bubble", "parallel.vpp=2"],
                       "schedule=zero_bubble,vpp=2"),
    "dp_tp": (4, ["parallel.tp=2"], "ddp over dp=2,tp=2,pp=1"),
    "dp_pp": (4, ["parallel.pp=2"], "ddp over dp=2,tp=1,pp=2"),
    "tp_pp": (4, ["parallel.tp=2", "parallel.pp=2"], "ddp over dp=1,tp=2,pp=2"),
    "fsdp_tp": (4, ["parallel.backend=fsdp", "parallel.tp=2"], "fsdp over dp=2,tp=2,pp=1"),
    "dp_tp_pp": (8, ["parallel.tp=2", "parallel.pp=2", "parallel.sequence_parallel=true"], "dp=2,tp=2,pp=2"),
    "recompute_full": (2, ["parallel.tp=2", "parallel.recompute=full"], "recompute=full"),
    "recompute_selective": (2, ["parallel.pp=2", "parallel.recompute=selective"], "recompute=selective"),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    common, single, runs = single_process_reference(tmp_path_factory.mktemp("mp_parity"), STEPS, "single",
                                                    extra=MODEL)
    return [*common, *MODEL], single, runs


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_parity(reference, layout):
    common, single, runs = reference
    ranks, overrides, announced = LAYOUTS[layout]
    out = run_train([*common, *overrides, f"train.name={layout}"], nproc=ranks, timeout=600).stdout
    assert announced in out, out[-2000:]             # it ran the layout asked for
    assert_same_losses(runs / layout, single, STEPS)

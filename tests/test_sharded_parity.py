"""Every data-parallel layout the planner can choose trains like one process: per-step losses of FSDP
(ZeRO-3-like), FSDP ZeRO-2-like, HSDP, and DeepSpeed ZeRO-1/2/3 on 2 or 4 gloo ranks equal a
single-process run of the same model, data and global batch to 1e-5 relative, over 10 steps with
gradient accumulation (fp32)."""
import pytest

from tests.helpers import LAYOUTS, needs_deepspeed, run_train, single_process_reference, step_losses

pytestmark = pytest.mark.slow
STEPS = 10


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The data, the common arguments and the single-process losses."""
    return single_process_reference(tmp_path_factory.mktemp("parity"), STEPS, "single")


@pytest.mark.parametrize("layout", [needs_deepspeed(name) for name in
                                    ("fsdp", "fsdp_zero2", "hsdp", "zero1", "zero2", "zero3")])
def test_parity(reference, layout):
    common, single, runs = reference
    ranks, overrides = LAYOUTS[layout]
    out = run_train([*common, *overrides, f"train.name={layout}"], nproc=ranks).stdout
    backend = overrides[0].split("=")[1]
    assert f"{backend} over dp={ranks}" in out           # it ran the layout asked for
    losses = step_losses(runs / layout)
    assert sorted(losses) == sorted(single) == list(range(1, STEPS + 1))
    for step in single:
        assert losses[step] == pytest.approx(single[step], rel=1e-5), (step, losses[step], single[step])
    assert single[STEPS] < single[1]   # it trained

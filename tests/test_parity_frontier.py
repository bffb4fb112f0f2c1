"""The compositions large runs use train like one process: FSDP × PP, FSDP × TP × PP, HSDP × TP,
ZeRO-1/2 (FSDP2 keeping its gathered weights) with TP and PP, and an uneven pipeline cut. Per-step
losses on 2 to 8 gloo ranks equal a single-process run of the same model, data and global batch to
1e-5 relative over 10 steps (fp32), each run announcing the layout it was asked for; so do the global
gradient norms (summed over tensor shards, data-parallel shards and pipeline stages), which clipping uses."""
import json

import pytest
import yaml

from tests.helpers import assert_same_losses, run_train, single_process_reference

pytestmark = pytest.mark.slow
STEPS = 10
# Four layers (the model-parallel parity tests' model, so the reference run is shared): two pipeline
# ranks can cut them unevenly.
MODEL = ["model.n_layers=4"]
FSDP = ["parallel.backend=fsdp"]

# (ranks, overrides, what the run announces, parallel settings its config.yaml holds)
LAYOUTS = {
    "fsdp_pp": (4, [*FSDP, "parallel.pp=2"], "fsdp over dp=2,tp=1,pp=2,zero=3", {}),
    "fsdp_tp_pp": (8, [*FSDP, "parallel.tp=2", "parallel.pp=2", "parallel.sequence_parallel=true"],
                   "fsdp over dp=2,tp=2,pp=2,zero=3", {}),
    "hsdp_tp": (8, [*FSDP, "parallel.dp_replicate=2", "parallel.dp_shard=2", "parallel.tp=2"],
                "fsdp over dp=4,tp=2,pp=1,zero=3", {"dp_replicate": 2, "dp_shard": 2}),
    # backend auto: DeepSpeed would run ZeRO-2 without TP and PP; with them FSDP2 does
    "zero2_tp_pp": (8, ["parallel.zero_stage=2", "parallel.tp=2", "parallel.pp=2"],
                    "fsdp over dp=2,tp=2,pp=2,zero=2", {"backend": "auto"}),
    # ZeRO-1: whole gradients accumulate over the micro-batches and are reduced once, in both engines
    "zero1_tp": (4, ["parallel.zero_stage=1", "parallel.tp=2"], "fsdp over dp=2,tp=2,pp=1,zero=1", {}),
    "zero1_pp": (4, ["parallel.zero_stage=1", "parallel.pp=2"], "fsdp over dp=2,tp=1,pp=2,zero=1", {}),
    # weight gradients apart from input gradients, so reduced once at the end (stage 3 is refused)
    "zero2_pp_zero_bubble": (4, ["parallel.zero_stage=2", "parallel.pp=2", "parallel.pp_schedule=zero_bubble",
                                 "parallel.vpp=2"], "fsdp over dp=2,tp=1,pp=2,zero=2,mb=2,recompute=none,"
                                                    "schedule=zero_bubble", {}),
    "fsdp_pp_interleaved": (4, [*FSDP, "parallel.pp=2", "parallel.pp_schedule=interleaved", "parallel.vpp=2"],
                            "fsdp over dp=2,tp=1,pp=2,zero=3,mb=2,recompute=none,schedule=interleaved", {}),
    "zero2_pp_interleaved": (4, ["parallel.zero_stage=2", "parallel.pp=2", "parallel.pp_schedule=interleaved",
                                 "parallel.vpp=2"], "fsdp over dp=2,tp=1,pp=2,zero=2,mb=2,recompute=none,"
                                                    "schedule=interleaved", {}),
    "pp_uneven": (2, ["parallel.pp=2", "parallel.pp_layers=[1,3]"],
                  "ddp over dp=1,tp=1,pp=2,zero=0,mb=2,recompute=none,schedule=1f1b,pp_layers=1:3",
                  {"pp_layers": [1, 3]}),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    common, single, runs = single_process_reference(tmp_path_factory.mktemp("frontier_parity"), STEPS, "single",
                                                    extra=MODEL)
    return [*common, *MODEL], single, runs


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_parity(reference, layout):
    common, single, runs = reference
    ranks, overrides, announced, settings = LAYOUTS[layout]
    out = run_train([*common, *overrides, f"train.name={layout}"], nproc=ranks, timeout=900).stdout
    assert announced in out, out[-2000:]             # it ran the layout asked for
    written = yaml.safe_load((runs / layout / "config.yaml").read_text())["parallel"]
    assert {key: written[key] for key in settings} == settings
    assert_same_losses(runs / layout, single, STEPS)
    norms, single_norms = grad_norms(runs / layout), grad_norms(runs / "single")
    assert sorted(norms) == sorted(single_norms) and max(single_norms.values()) > 1.0   # clipping was at work
    for step in single_norms:
        assert norms[step] == pytest.approx(single_norms[step], rel=1e-4), (step, norms[step], single_norms[step])


def grad_norms(run_dir) -> dict[int, float]:
    records = (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["grad_norm"] for r in records if "grad_norm" in r}

"""Context parallelism trains like one process: each sequence split into 2 × cp load-balanced chunks
over cp ranks, alone and composed with data parallelism, tensor parallelism (with and without
sequence parallelism), pipeline parallelism and FSDP, gives per-step losses equal to a single-process
run of the same model, data and global batch to 1e-5 relative over 10 steps (gloo, fp32), and the
same validation loss. The GPT model checks learned position embeddings; the Llama one, with grouped
K/V heads, rotary angles at each chunk's true positions."""
import json

import pytest

from tests.helpers import assert_same_losses, run_train, single_process_reference

pytestmark = pytest.mark.slow
STEPS = 10
# Four layers: two pipeline stages of two. Weights ten times the default scale: at the default the
# attention of a fresh tiny model is near uniform and ten steps cannot tell a wrong position (rotary
# angles of chunk-local positions moved the losses by 2e-6); here they move them by 1e-2.
SHARP = ["model.n_layers=4", "model.init_std=0.2"]
MODELS = {"gpt": SHARP, "llama": [*SHARP, "model.arch=llama", "model.n_heads=4", "model.n_kv_heads=2"]}

# Fewer, larger micro-batches where TP's DTensors make each one slow: the same global batch, and the
# same validation windows (eval_batches × micro_batch of them) as the reference's 2 × 2.
LARGER = ["parallel.micro_batch=4", "train.eval_batches=1"]

# (model, ranks, overrides, what the run announces)
LAYOUTS = {
    "cp": ("gpt", 2, ["parallel.cp=2"], "ddp over dp=1,tp=1,pp=1,zero=0,mb=2,recompute=none,cp=2"),
    "cp_llama": ("llama", 2, ["parallel.cp=2"], "ddp over dp=1,tp=1,pp=1,zero=0,mb=2,recompute=none,cp=2"),
    "dp_cp": ("llama", 4, ["parallel.cp=2"], "ddp over dp=2,tp=1,pp=1,zero=0,mb=2,recompute=none,cp=2"),
    "tp_cp": ("llama", 4, ["parallel.cp=2", "parallel.tp=2", "parallel.sequence_parallel=true", *LARGER],
              "ddp over dp=1,tp=2,pp=1,zero=0,mb=4,recompute=none,sp=true,cp=2"),
    "fsdp_tp_cp": ("llama", 8, ["parallel.backend=fsdp", "parallel.cp=2", "parallel.tp=2", *LARGER],
                   "fsdp over dp=2,tp=2,pp=1,zero=3,mb=4,recompute=none,sp=false,cp=2"),
    "pp_cp": ("gpt", 4, ["parallel.cp=2", "parallel.pp=2", "parallel.recompute=selective"],
              "ddp over dp=1,tp=1,pp=2,zero=0,mb=2,recompute=selective,schedule=1f1b,cp=2"),
    # what the planner emits for long sequences: FSDP sharded over the cp ranks, with TP and PP
    "fsdp_tp_pp_cp": ("llama", 8, ["parallel.backend=fsdp", "parallel.cp=2", "parallel.tp=2", "parallel.pp=2", *LARGER],
                      "fsdp over dp=1,tp=2,pp=2,zero=3,mb=4"),
}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    found = {}
    for model, extra in MODELS.items():
        common, single, runs = single_process_reference(tmp_path_factory.mktemp(f"cp_parity_{model}"), STEPS,
                                                        "single", extra=tuple(extra))
        found[model] = [*common, *extra], single, runs
    return found


def final_val_loss(run_dir) -> float:
    """The validation loss at the last step (each rank scores its own chunks; the sums add up)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in records if "val_loss" in r][-1]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_parity(references, layout):
    model, ranks, overrides, announced = LAYOUTS[layout]
    common, single, runs = references[model]
    out = run_train([*common, *overrides, f"train.name={layout}"], nproc=ranks, timeout=600).stdout
    assert announced in out and "cp=2" in out, out[-2000:]   # it ran the layout asked for
    assert_same_losses(runs / layout, single, STEPS)
    assert final_val_loss(runs / layout) == pytest.approx(final_val_loss(runs / "single"), rel=1e-5)

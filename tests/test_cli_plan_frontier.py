"""The planner on the layouts large runs use: uneven pipeline stages (BLOOM's 70 layers on 12),
context parallelism for long sequences, lean sequence parallelism, and plans that say which layouts
the trainer runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from launch.cli import main
from launch.run_configs import emit_best_runnable
from planner.hardware import CATALOG
from planner.layout.activations import layer_activation_bytes, micro_batches_in_flight
from planner.layout.candidates import LayoutArrays
from planner.layout.inputs import PlanInputs
from planner.layout.memory import PARTS, evaluate_memory, per_stage_breakdown, stage_memory
from planner.layout.search import enumerate_layouts, evaluate, parse_layout
from planner.model_spec import ModelSpec
from planner.scaling.shape import spec_for_params
from tests.test_cli_plan import fails
from trainer.config import load_config

BLOOM = ModelSpec(arch="gpt", n_layers=70, d_model=14336, n_heads=112, vocab_size=250880, seq_len=2048)
BLOOM_ARGS = ["--arch", "gpt", "--layers", "70", "--hidden", "14336", "--heads", "112", "--vocab", "250880",
              "--seq-len", "2048", "--gpus", "384", "--gpu", "a100-80gb", "--global-batch", "2048"]
GPT3 = ["--arch", "gpt", "--layers", "96", "--hidden", "12288", "--heads", "96", "--seq-len", "2048"]


def plan_json(capsys, *argv) -> list[dict]:
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["layouts"]


def test_bloom_plans_on_uneven_stages(capsys):
    record, = plan_json(capsys, *BLOOM_ARGS, "--layout", "dp=8,tp=4,pp=12,zero=1,mb=2,recompute=full,sp=true")
    assert record["pp_layers"] == [5] + [6] * 10 + [5]   # embedding and head cost a block each
    assert record["fits"] and record["runnable"] and record["backend"] == "fsdp"


def test_stage_memory_follows_the_cut():
    """Middle stages of BLOOM's cut hold 6 blocks and (1F1B) p − i micro-batches of each; the first
    holds 5 blocks and the embedding. Stage 1 (11 micro-batches × 6 blocks) outweighs stage 0 (12 × 5)."""
    inputs = PlanInputs(BLOOM, CATALOG["a100-80gb"], 384, 2048, memory_model="detailed")
    layouts = LayoutArrays.from_layouts([parse_layout("dp=8,tp=4,pp=12,zero=1,mb=2,sp=true", 384)])
    stages = per_stage_breakdown(inputs, layouts, 0)
    layer = float(layer_activation_bytes(BLOOM, 2, 4, True, 0, 2.0, 2.0)["stored"])
    for stage in range(1, 11):
        assert stages[stage]["activations"] == pytest.approx((12 - stage) * 6 * layer)
        assert stages[stage]["model_state_tensors"] == pytest.approx(stages[1]["model_state_tensors"])
    assert stages[0]["activations"] > 12 * 5 * layer
    assert int(evaluate_memory(inputs, layouts)["peak_stage"][0]) == 1
    # the balanced cut and the same cut given explicitly are one layout to the memory model
    explicit = LayoutArrays.from_layouts([parse_layout(
        "dp=8,tp=4,pp=12,zero=1,mb=2,sp=true,pp_layers=" + ":".join(["5"] + ["6"] * 10 + ["5"]), 384)])
    assert per_stage_breakdown(inputs, explicit, 0) == stages


@pytest.mark.parametrize("text", [
    "dp=8,tp=4,pp=12,zero=0,mb=2", "dp=8,tp=4,pp=12,zero=1,mb=1,schedule=gpipe",
    "dp=16,tp=4,pp=6,zero=3,mb=1,schedule=interleaved,vpp=2",
    "dp=48,pp=8,zero=1,mb=1,pp_layers=2:14:9:9:9:9:9:9", "dp=48,pp=8,zero=0,mb=1,pp_layers=9:9:9:9:9:9:14:2"])
def test_the_peak_is_the_largest_stage(text):
    """evaluate_memory checks only the ranks that can peak; the peak equals the largest of all."""
    inputs = PlanInputs(BLOOM, CATALOG["a100-80gb"], 384, 2048, memory_model="detailed")
    layouts = LayoutArrays.from_layouts([parse_layout(text, 384)])
    every = [sum(stage[p] for p in PARTS) for stage in per_stage_breakdown(inputs, layouts, 0)]
    memory = evaluate_memory(inputs, layouts)
    assert float(memory["detailed"][0]) == pytest.approx(max(every))
    assert every[int(memory["peak_stage"][0])] == pytest.approx(max(every))


def test_context_parallel_memory():
    """Each cp rank keeps 1/cp of the tokens, plus attention's K and V gathered over the whole sequence
    (2 · s · b · kv_heads · head_dim · 2 bytes / t) and a second copy of its local output (the
    trainer's attention runs per chunk); the states are sharded over dp × cp."""
    spec = spec_for_params(8e9, "llama", 32768, 32000)
    s, b, tp, kv = spec.seq_len, 2, 2, spec.kv_heads * spec.head_dim
    whole = float(layer_activation_bytes(spec, b, tp, True, 0, 2.0, 2.0)["stored"])
    split = float(layer_activation_bytes(spec, b, tp, True, 0, 2.0, 2.0, cp=4)["stored"])
    assert split == pytest.approx(whole / 4 + (s * b - s * b / 4) * 2 * kv * 2 / tp + s * b / 4 * spec.d_model * 2 / tp)
    inputs = PlanInputs(spec, CATALOG["h100-sxm"], 64, 64, memory_model="detailed")
    layouts = LayoutArrays.from_layouts([parse_layout(t, 64) for t in (
        "dp=4,cp=4,tp=2,pp=2,zero=3,mb=1,sp=true", "dp=16,tp=2,pp=2,zero=3,mb=1,sp=true")])
    states = stage_memory(inputs, layouts, 0)["model_state_tensors"]
    assert states[0] == pytest.approx(states[1])
    assert evaluate_memory(inputs, layouts)["rule24"][0] == pytest.approx(evaluate_memory(inputs, layouts)["rule24"][1])


def test_search_tries_context_parallelism_for_long_sequences():
    long_spec = spec_for_params(8e9, "llama", 32768, 32000)
    layouts, _ = enumerate_layouts(PlanInputs(long_spec, CATALOG["h100-sxm"], 64, 64))
    assert set(layouts.cp.tolist()) == {1, 2, 4, 8, 16}
    assert np.all(layouts.dp * layouts.cp * layouts.tp * layouts.pp == 64)
    assert np.all(long_spec.seq_len % (2 * layouts.cp) == 0)
    sp = layouts.sp.astype(bool)   # SP is weighed both ways: lean (memory) or gathered (one all-gather fewer)
    assert np.any(sp & layouts.lean_sp) and np.any(sp & ~layouts.lean_sp) and np.all(layouts.lean_sp[~sp])
    short, _ = enumerate_layouts(PlanInputs(spec_for_params(8e9, "llama", 8192, 32000), CATALOG["h100-sxm"], 64, 64))
    assert set(short.cp.tolist()) == {1}


def test_long_sequence_plan_shows_and_emits_cp(capsys, tmp_path):
    out = tmp_path / "cp.yaml"
    best, = plan_json(capsys, "--params", "8e9", "--seq-len", "131072", "--gpus", "64", "--gpu", "h100-sxm",
                      "--top", "1", "--emit-config", str(out))
    # without CP, 128K-token sequences fit only with full recomputation: splitting them ranks first
    assert best["cp"] > 1 and best["runnable"]
    assert load_config(out).parallel.cp == best["cp"]


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_lean_sp_native_is_within_10_percent_of_megatron(capsys, tp):
    """Compared under selective recomputation: Korthikanti et al. drop their 5·a·s/h attention-score
    term there, and flash attention never stores it, so both count the same tensors (theirs add the
    dropout masks the trainer does not have). Without lean SP the gathered norm outputs stay whole:
    at TP 8 about 1.8 × their count, the gap lean SP closes."""
    layout = f"dp={64 // tp},tp={tp},zero=1,mb=1,recompute=selective,sp=true"

    def activations(accounting: str, lean: str) -> float:
        record, = plan_json(capsys, *GPT3, "--gpus", "64", "--global-batch", "64", "--accounting", accounting,
                            "--layout", f"{layout},lean_sp={lean}")
        return record["memory_gib"]["breakdown"]["activations"]

    megatron = activations("megatron", "true")
    assert activations("native", "true") == pytest.approx(megatron, rel=0.10)
    if tp == 8:
        assert activations("native", "false") > 1.6 * megatron


def test_layouts_the_trainer_does_not_run_are_marked(capsys):
    records = plan_json(capsys, "--params", "7e10", "--gpus", "512", "--gpu", "h100-sxm", "--seq-len", "8192",
                        "--backend", "deepspeed", "--memory-model", "detailed", "--top", "20")
    marked = [r for r in records if r["tp"] * r["pp"] > 1]
    assert marked and all(not r["runnable"] and "deepspeed runs data parallelism only" in r["refused"]
                          for r in marked)
    record, = plan_json(capsys, "--params", "7e9", "--gpus", "8", "--backend", "deepspeed", "--seq-len", "32768",
                        "--layout", "dp=4,cp=2,zero=2,mb=1")
    assert not record["runnable"] and "cp=2" in record["refused"]


def test_emit_names_the_layout_it_writes_instead(tmp_path):
    """When #1 is one the trainer does not run, --emit-config writes the best one it does and says so."""
    spec = spec_for_params(1e9, "llama", 2048, 32000)
    inputs = PlanInputs(spec, CATALOG["h100-sxm"], 8, 64, backend="deepspeed")
    layouts = LayoutArrays.from_layouts([parse_layout(t, 8) for t in ("dp=4,tp=2,zero=2,mb=1", "dp=8,zero=2,mb=1")],
                                        "deepspeed")
    result = evaluate(inputs, layouts)
    result.ranked = np.array([0, 1])
    index, note = emit_best_runnable(str(tmp_path / "out.yaml"), result, None)
    assert index == 1 and note.startswith("#1 (dp=4,tp=2,") and note.endswith("wrote #2 instead")
    assert load_config(tmp_path / "out.yaml").parallel.tp == 1


@pytest.mark.parametrize("layout,match", [
    ("tp=2,cp=3", "cp=3 splits each sequence into 2 × cp = 6 chunks"),
    ("pp=2,pp_layers=3:4", "sums to 7 blocks, but the model has 32"),
    ("pp=2,pp_layers=0:32", "has an empty stage"),
    ("pp=3,pp_layers=16:16", "gives 2 stages, but pp 3"),
    ("pp=2,pp_layers=16-16", "joined by colons"),
    ("cp=0", "cp=0 must be a positive integer"),
])
def test_bad_layouts_are_one_line(capsys, layout, match):
    err = fails(capsys, "--layers", "32", "--hidden", "4096", "--heads", "32", "--seq-len", "4096",
                "--gpus", "12", "--global-batch", "48", "--layout", layout)
    assert match in err

"""`scaleplan plan` end to end: tables, JSON, one layout, plots, emitted configs, dry runs, and
one-line errors with exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pytest

from launch.cli import main
from planner.hardware import CATALOG
from planner.layout.memory import rule24_bytes
from planner.scaling.shape import spec_for_params
from planner.model_spec import count_params

GIB = 2**30


def run(capsys, *argv):
    code = main(["plan", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def fails(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scaleplan plan: error:"), err
    return err


def test_table_for_7b_on_64_h100(capsys):
    code, out, _ = run(capsys, "--params", "7e9", "--gpus", "64", "--gpu", "h100-sxm")
    assert code == 0
    for text in ("Best layouts", "Memory per GPU of #1", "weights", "activations", "logits", "reserve",
                 "Why #1", "Rejected"):
        assert text in out


def test_json_schema_and_numbers(capsys):
    code, out, _ = run(capsys, "--params", "7e9", "--gpus", "64", "--json", "--top", "20")
    assert code == 0
    layouts = json.loads(out)["layouts"]
    assert 0 < len(layouts) <= 20
    spec = spec_for_params(7e9)
    for record in layouts:
        for key in ("dp", "tp", "pp", "zero_stage", "micro_batch", "recompute", "memory_gib", "fits",
                    "step_time_s", "tokens_per_s", "mfu"):
            assert key in record
        assert record["dp"] * record["tp"] * record["pp"] == 64
        memory = record["memory_gib"]
        assert set(memory) >= {"rule24", "detailed", "breakdown"}
        assert memory["rule24"] == pytest.approx(rule24_bytes(
            count_params(spec), record["tp"], record["pp"], record["dp"], record["zero_stage"]) / GIB)
        assert sum(memory["breakdown"].values()) == pytest.approx(memory["detailed"])
        assert record["fits"] and memory["rule24"] <= CATALOG["h100-sxm"].hbm_bytes / GIB
        assert record["tokens_per_s"] == pytest.approx(1024 * spec.seq_len / record["step_time_s"])
    from planner.layout.search import SPEED_TOLERANCE

    fitting_both = [r["tokens_per_s"] for r in layouts if r["fits_detailed"]]
    assert all(later <= earlier * (1 + SPEED_TOLERANCE) ** 2
               for earlier, later in zip(fitting_both, fitting_both[1:]))


def test_one_layout(capsys):
    code, out, _ = run(capsys, "--params", "7e9", "--gpus", "64", "--json",
                       "--layout", "dp=8,tp=8,pp=1,zero=1,mb=2,recompute=selective")
    record = json.loads(out)["layouts"][0]
    assert (record["dp"], record["tp"], record["zero_stage"], record["micro_batch"]) == (8, 8, 1, 2)
    assert record["recompute"] == "selective"


def test_detailed_model_and_deepspeed_accounting(capsys):
    code, out, _ = run(capsys, "--params", "70e9", "--gpus", "512", "--memory-model", "detailed",
                       "--accounting", "deepspeed", "--json")
    layouts = json.loads(out)["layouts"]
    assert all(r["memory_gib"]["detailed"] <= CATALOG["h100-sxm"].hbm_bytes / GIB for r in layouts)


def test_shape_flags(capsys):
    code, out, _ = run(capsys, "--layers", "32", "--hidden", "4096", "--heads", "32", "--kv-heads", "8",
                       "--ffn-hidden", "14336", "--vocab", "128256", "--seq-len", "8192", "--arch", "llama",
                       "--gpus", "16", "--global-batch-tokens", "4194304", "--json")
    assert code == 0 and json.loads(out)["layouts"]


def test_plots(capsys, tmp_path):
    code, out, _ = run(capsys, "--params", "1e9", "--gpus", "8", "--plots", str(tmp_path / "plots"))
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["memory_breakdown.png", "memory_vs_capacity.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_emit_config_is_accepted_by_the_trainer(capsys, tmp_path):
    from planner.layout.search import describe
    from trainer.config import load_config
    from trainer.run_layout import resolve_layout

    out_path = tmp_path / "planned.yaml"
    code, out, _ = run(capsys, "--params", "1e8", "--gpus", "8", "--global-batch", "64",
                       "--emit-config", str(out_path))
    cfg = load_config(out_path)
    assert cfg.global_batch == 64 and cfg.model.spec() == spec_for_params(1e8)
    layout, backend = resolve_layout(cfg, 8)    # the trainer runs what the planner wrote
    assert backend == cfg.parallel.backend
    cfg.grad_accum_steps(layout.dp)   # the batch divides on 8 ranks
    assert f"wrote {out_path}: {describe(layout)}" in out


def test_config_plan_and_dry_run(capsys):
    code, out, _ = run(capsys, "--config", "configs/default.yaml", "--gpus", "2", "--gpu", "a10")
    assert code == 0 and "dp=2,tp=1,pp=1,zero=0,mb=16" in out
    from launch.layout_inputs import print_config_plan
    from trainer.config import load_config

    print_config_plan(load_config("configs/default.yaml"), 2, None, 8)
    assert "planned for h100-sxm" in capsys.readouterr().out


def test_train_dry_run_prints_the_plan(capsys):
    from launch.train import main as train_main

    assert train_main(["--config", "configs/default.yaml", "--dry-run", "--gpu", "a100-80gb"]) == 0
    out = capsys.readouterr().out
    assert "Memory per GPU of #1" in out and "A100" in out


@pytest.mark.parametrize("argv,match", [
    (("--params", "7e9", "--gpu", "h300"), "unknown GPU 'h300'"),
    (("--params", "7e9", "--gpus", "64", "--layout", "dp=16,tp=3"), "tp=3 does not divide"),
    (("--params", "70e9", "--gpus", "2", "--gpu", "a10"), "no layout fits"),
    (("--params", "7e9", "--layers", "4"), "one way"),
    (("--layers", "4", "--hidden", "64"), "missing --heads"),
    (("--layers", "4", "--hidden", "64", "--heads", "5"), "not divisible by --heads"),
    (("--params", "7e9", "--gpus", "0"), "--gpus must be positive"),
    (("--params", "7e9", "--global-batch-tokens", "1000"), "not a multiple of the sequence length"),
    (("--params", "7e9", "--gpus", "7", "--global-batch", "4"), "no dp × cp × tp × pp split"),
    (("--params", "7e9", "--gpu-catalog", "/nonexistent.yaml"), "not found"),
    (("--params", "70e9", "--gpus", "64", "--backend", "deepspeed", "--emit-config", "x.yaml"),
     "none of the fitting layouts .* deepspeed without tp, pp or cp"),
    (("--params", "7e9", "--memory-model", "guess"), "invalid choice"),
])
def test_bad_requests_get_one_line(capsys, argv, match):
    import re

    assert re.search(match, fails(capsys, *argv))


def test_json_best_first_matches_search(capsys):
    from planner.hardware import get_gpu
    from planner.layout.inputs import PlanInputs
    from planner.layout.search import search

    code, out, _ = run(capsys, "--params", "7e9", "--gpus", "64", "--json", "--top", "5")
    best = json.loads(out)["layouts"][0]
    result = search(PlanInputs(spec_for_params(7e9), get_gpu("h100-sxm"), 64, 1024))
    i = int(result.ranked[0])
    assert best["step_time_s"] == pytest.approx(float(result.cost["step_time_s"][i]))
    assert np.isclose(best["mfu"], float(result.cost["mfu"][i]))


def test_printed_table_shows_the_tested_numbers(capsys):
    """The table's #1 row carries the same figures the JSON (checked above) reports."""
    code, out, _ = run(capsys, "--params", "7e9", "--gpus", "64", "--json", "--top", "1")
    best = json.loads(out)["layouts"][0]
    code, table, _ = run(capsys, "--params", "7e9", "--gpus", "64", "--top", "1")
    row = next(line for line in table.splitlines() if line.split("│")[1:2] in ([" 1 "], ["  1 "]))
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    assert cells[1:5] == [str(best[key]) for key in ("dp", "cp", "tp", "pp")]
    assert cells[11] == f"{best['memory_gib']['rule24']:.1f}"
    assert cells[12] == f"{best['memory_gib']['detailed']:.1f}"
    assert cells[14] == f"{best['step_time_s']:.2f}"
    assert cells[15] == f"{best['tokens_per_s']:,.0f}"
    assert cells[16] == f"{100 * best['mfu']:.1f}%"
    spare = CATALOG["h100-sxm"].hbm_bytes / GIB - best["memory_gib"]["rule24"]
    assert f"{spare:.1f} GiB spare under rule24" in table


def test_config_plan_json_matches_cli_json(capsys):
    from launch.layout_inputs import config_plan_json
    from trainer.config import load_config

    record = config_plan_json(load_config("configs/default.yaml"), 2, "a10")["layouts"][0]
    code, out, _ = run(capsys, "--config", "configs/default.yaml", "--gpus", "2", "--gpu", "a10", "--json")
    assert json.loads(out)["layouts"][0] == record
    assert (record["dp"], record["micro_batch"], record["zero_stage"]) == (2, 16, 0)


def test_calibration_table(capsys):
    from planner.layout.calibration import MEASUREMENTS

    code, out, _ = run(capsys, "--calibration")
    assert code == 0
    assert "published" in out and "median |error|" in out
    assert all(m.id in out for m in MEASUREMENTS)
    code, out, _ = run(capsys, "--calibration", "--json")
    report = json.loads(out)
    assert len(report["runs"]) == len(MEASUREMENTS) and report["median_abs_error"] <= 0.05

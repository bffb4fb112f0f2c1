"""Plan → run: what `scaleplan plan` ranks first for 70B on 512 H100s is a layout the trainer runs (a
scaled-down copy of it, same backend, sharding stage, schedule, SP and recomputation, trains for a few
steps on 8 CPU ranks), and a config `--emit-config` writes for FSDP × TP × PP × CP runs unchanged."""
import json

import pytest
import yaml

from launch.cli import main as cli
from parallel.layout import backend_for
from planner.layout.search import describe, parse_layout
from tests.helpers import run_train, write_tiny_corpus
from trainer.config import load_config
from trainer.run_layout import resolve_layout

pytestmark = pytest.mark.slow
RANKS = 8
PLAN_70B = ["plan", "--params", "7e10", "--gpus", "512", "--gpu", "h100-sxm", "--seq-len", "8192"]


def tiny_base(tmp_path, n_layers: int) -> str:
    """A llama-style model small enough for 8 gloo ranks: 2 heads and 2 KV heads (TP 2 divides
    both), 32-token sequences (CP 2 cuts them into 4 chunks of 8)."""
    data = write_tiny_corpus(tmp_path / "data")
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "model": {"arch": "llama", "n_layers": n_layers, "d_model": 32, "n_heads": 2, "n_kv_heads": 2,
                  "seq_len": 32, "tie_embeddings": False},
        "data": {"dir": str(data)},
        "train": {"name": "planned", "runs_dir": str(tmp_path / "runs"), "steps": 3, "global_batch": 16,
                  "eval_every": 100, "eval_batches": 2, "sample_tokens": 0},
        "log": {"every": 1, "progress": False, "tensorboard": False}}))
    return str(base)


def emit_and_train(tmp_path, capsys, base: str, wanted: str, backend: str) -> str:
    """`scaleplan plan --layout wanted --emit-config`, then launch/train.py on the file as written."""
    planned = tmp_path / "planned.yaml"
    assert cli(["plan", "--config", base, "--gpus", str(RANKS), "--layout", wanted, "--backend", backend,
                "--emit-config", str(planned)]) == 0
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"wrote {planned}")]
    layout, chosen = resolve_layout(load_config(planned), RANKS)
    assert chosen == backend and wrote == [f"wrote {planned}: {describe(layout)}"]   # no silent fall-back
    assert describe(layout) == describe(parse_layout(wanted, RANKS))
    out = run_train(["--config", str(planned)], nproc=RANKS, timeout=900).stdout
    assert f"{backend} over {describe(layout)}" in out, out[-2000:]
    assert "step 3: validation loss" in out, out[-2000:]
    return out


def test_first_ranked_70b_layout_runs_scaled_down(tmp_path, capsys):
    assert cli([*PLAN_70B, "--json", "--top", "1"]) == 0
    top = json.loads(capsys.readouterr().out)["layouts"][0]
    # ranked first, runnable as planned, on the backend `auto` gives its stage with model parallelism
    assert top["runnable"] and top["refused"] is None, top
    assert top["backend"] == backend_for("auto", top["zero_stage"], top["tp"] * top["pp"] * top["cp"] > 1)
    # 8 ranks: tp, pp and dp shrink to 2 each where the plan has them (dp takes what is left)
    tp, pp, cp = (min(top[key], 2) for key in ("tp", "pp", "cp"))
    dp = RANKS // (tp * pp * cp)
    vpp = top["vpp"]
    wanted = (f"dp={dp},tp={tp},pp={pp},cp={cp},zero={top['zero_stage']},mb={top['micro_batch']},"
              f"recompute={top['recompute']},sp={str(top['sequence_parallel']).lower()},"
              f"lean_sp={str(top['lean_sp']).lower()},"
              f"schedule={top['schedule']},vpp={vpp}")
    base = tiny_base(tmp_path, n_layers=pp * vpp)
    emit_and_train(tmp_path, capsys, base, wanted, top["backend"])


def test_emitted_fsdp_tp_pp_cp_config_runs_unchanged(tmp_path, capsys):
    base = tiny_base(tmp_path, n_layers=4)
    wanted = "dp=1,tp=2,pp=2,cp=2,zero=3,mb=2,recompute=none,sp=true,schedule=1f1b"
    emit_and_train(tmp_path, capsys, base, wanted, "fsdp")
    cfg = load_config(tmp_path / "planned.yaml")
    assert (cfg.parallel.cp, cfg.parallel.tp, cfg.parallel.pp, cfg.parallel.zero_stage) == (2, 2, 2, 3)

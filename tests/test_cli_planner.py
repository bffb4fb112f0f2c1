"""The fit / allocate / next / simulate commands end to end: flags, --json, exit codes, files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from launch.cli import main
from planner.scaling.law import CHINCHILLA
from planner.model_spec import ModelSpec, count_params
from planner.scaling.runs import Runs, write_runs
from tests.conftest import REPO
from tests.planner_helpers import synthetic_runs
from trainer.config import load_config


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory):
    """Small-model runs like the CPU demo's: byte vocabulary, 1e12-1e14 FLOPs."""
    rng = np.random.default_rng(0)
    runs = synthetic_runs(rng, count=30, noise=0.003, flops=(1e12, 1e14))
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    write_runs(path, runs)
    return path


def run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_fit_json(capsys, runs_csv, tmp_path) -> None:
    out = run_json(capsys, ["fit", str(runs_csv), "--objective", "mse-log", "--grid-slices", "4", "--json",
                            "--out", str(tmp_path / "fit.json")])
    assert set(out["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert out["objective"] > 0 and out["convergence"]["converged"]
    assert out["grid"]["size"] == 4 ** 5
    assert set(out["landscape"]) == {"log_E", "log_A", "log_B", "alpha", "beta"}
    assert json.loads((tmp_path / "fit.json").read_text())["params"] == out["params"]


def test_fit_grid_yaml_bootstrap_and_plots(capsys, runs_csv, tmp_path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("alpha: {start: 0.1, stop: 0.8, num: 5}\nbeta: [0.2, 0.3, 0.4]\nE: [0.5, 1.0, 1.5]\n")
    out = run_json(capsys, ["fit", str(runs_csv), "--grid", str(grid), "--grid-slices", "3", "--bootstrap", "4",
                            "--workers", "1", "--plots", str(tmp_path / "plots"), "--json"])
    assert out["grid"]["size"] == 3 * 3 * 3 * 5 * 3
    assert set(out["intervals"]) == {"E", "A", "B", "alpha", "beta", "N_opt", "D_opt", "loss"}
    for name in ("fit_quality", "isoloss_frontier", "landscape", "bootstrap"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


def test_fit_bad_inputs(capsys, runs_csv, tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(runs_csv.read_text().replace("\n", "\nrunX,1e6,oops,1,2.5\n", 1))
    assert "row 2, column D: 'oops' is not a number" in one_line_error(capsys, ["fit", str(bad)])
    grid = tmp_path / "grid.yaml"
    grid.write_text("gamma: [1, 2]\n")
    assert "unknown grid key 'gamma'" in one_line_error(capsys, ["fit", str(runs_csv), "--grid", str(grid)])
    assert "invalid choice" in one_line_error(capsys, ["fit", str(runs_csv), "--objective", "l1"])


def test_allocate_epoch2024_and_chinchilla(capsys) -> None:
    epoch = run_json(capsys, ["allocate", "--flops", "5.88e23", "--law", "epoch2024", "--json"])
    assert 17 < epoch["tokens_per_param"] < 19.5
    assert set(epoch) >= {"N", "D", "tokens_per_param", "loss", "shape"}
    assert abs(epoch["shape"]["params"] / epoch["N"] - 1) <= 0.05
    chinchilla = run_json(capsys, ["allocate", "--flops", "5.88e23", "--law", "chinchilla", "--json"])
    # Hoffmann et al. eq. 4 written out independently of planner.scaling.law
    a, b, A, B, E = CHINCHILLA.alpha, CHINCHILLA.beta, CHINCHILLA.A, CHINCHILLA.B, CHINCHILLA.E
    G = (a * A / (b * B)) ** (1 / (a + b))
    N = G * (5.88e23 / 6) ** (b / (a + b))
    D = (5.88e23 / 6) ** (a / (a + b)) / G
    assert chinchilla["N"] == pytest.approx(N, rel=1e-9) and chinchilla["D"] == pytest.approx(D, rel=1e-9)
    assert chinchilla["loss"] == pytest.approx(E + A / N ** a + B / D ** b, rel=1e-9)


def test_allocate_units_arch_and_unique_tokens(capsys) -> None:
    out = run_json(capsys, ["allocate", "--gpu-hours", "1e5", "--gpu", "h100-sxm", "--mfu", "0.4", "--arch", "llama",
                            "--unique-tokens", "1e10", "--json"])
    assert out["C"] == pytest.approx(1e5 * 3600 * 989e12 * 0.4)
    assert out["shape"]["arch"] == "llama" and out["epochs"] > 4 and out["warnings"]
    pf = run_json(capsys, ["allocate", "--pf-days", "10", "--law", "tokens20", "--json"])
    assert pf["C"] == pytest.approx(8.64e20) and pf["tokens_per_param"] == pytest.approx(20)
    assert "exactly once" in one_line_error(capsys, ["allocate", "--flops", "1e20", "--pf-days", "3"])
    assert "needs --gpu" in one_line_error(capsys, ["allocate", "--gpu-hours", "10"])
    assert "neither a preset" in one_line_error(capsys, ["allocate", "--flops", "1e20", "--law", "nope"])


def test_next_writes_a_config_the_trainer_accepts(capsys, runs_csv, tmp_path) -> None:
    target = tmp_path / "next.yaml"
    out = run_json(capsys, ["next", str(runs_csv), "--scaling-factor", "2", "--grid-slices", "5",
                            "--out", str(target), "--json"])
    config = load_config(target)
    runs_C = 6 * np.loadtxt(runs_csv, delimiter=",", skiprows=1, usecols=(1, 2)).prod(axis=1)
    assert out["C"] == pytest.approx(2 * runs_C.max())
    assert count_params(ModelSpec.from_config(config.model)) == out["N"] == out["shape"]["params"]
    tokens = config.train.steps * config.tokens_per_step
    assert tokens == out["D"]
    assert 6 * out["N"] * tokens == pytest.approx(out["C"], rel=0.05)
    assert config.model.vocab_size == load_config(REPO / "configs" / "default.yaml").model.vocab_size


def test_simulate_recovers_noise_free_law(capsys) -> None:
    out = run_json(capsys, ["simulate", "--law", "epoch2024", "--noise", "0", "--seeds", "12", "--iterations", "2",
                            "--grid-slices", "5", "--json"])
    assert len(out["steps"]) == 2 and out["steps"][1]["runs"] == 13
    for error in out["steps"][-1]["relative_errors"].values():
        assert abs(error) < 1e-3


def test_planner_never_imports_torch() -> None:
    code = ("import sys; import planner.scaling.fit, planner.scaling.bootstrap, planner.scaling.allocate, planner.scaling.shape, planner.scaling.plots, "
            "planner.scaling.simulate, planner.scaling.diagnostics, planner.scaling.runs; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_runs_table_round_trip(tmp_path) -> None:
    runs = Runs(np.array([1e6, 2e6, 3e6, 4e6, 5e6]), np.array([1e8] * 5), np.array([3.0, 2.9, 2.8, 2.7, 2.6]))
    write_runs(tmp_path / "r.csv", runs)
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == "name,N,D,C,loss"

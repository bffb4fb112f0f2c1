"""`scaleplan ladder` and `scaleplan ladder run`: configs written and valid, bad input in one line
(exit 2), finished runs skipped, a diverged run left out of the fit with a warning. No training here:
`train_one` is replaced by a stand-in that records a loss from a known law, as the trainer would."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from launch.cli import main
from launch.commands import ladder as ladder_command
from trainer.config import PRESETS_DIR, load_config

DESIGN = ["ladder", "--budget-flops", "1.2e13", "--runs", "9", "--target-flops", "6e12", "--noise", "0.02"]


def law_loss(N: float, D: float) -> float:
    """A known law times a fixed +-1 % wobble (run-to-run noise that does not depend on the order)."""
    return (1.2 + 40.0 * N ** -0.3 + 60.0 * D ** -0.3) * (1.0 + 0.01 * math.sin(7.0 * math.log(N * D)))


def one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture()
def ladder_dir(tmp_path, capsys) -> Path:
    out = tmp_path / "ladder"
    assert main(DESIGN + ["--out", str(out)]) == 0
    capsys.readouterr()
    return out


def record(directory: Path, name: str, N: float, D: float, loss: float) -> None:
    append_row(directory / "runs" / "runs.csv", name, N, D, loss)


def append_row(table: Path, name: str, N: float, D: float, loss: float) -> None:
    """A row of a runs table, as the trainer appends it to <train.runs_dir>/runs.csv."""
    table.parent.mkdir(parents=True, exist_ok=True)
    new = not table.exists()
    with table.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["name", "N", "D", "C", "loss"])
        writer.writerow([name, N, D, 6 * N * D, loss])


def test_design_writes_valid_configs_and_a_plan(ladder_dir) -> None:
    plan = json.loads((ladder_dir / "ladder.json").read_text())
    assert len(plan["runs"]) == 9 and plan["design"]["kind"] == "isoflop"
    assert plan["planned_flops"] == pytest.approx(1.2e13, rel=0.05)
    low, high = plan["forecast"]["N_opt_interval"]
    assert 0 < low < plan["forecast"]["N_opt_prior"] < high
    for run in plan["runs"]:
        config = load_config(run["config"])            # the trainer's own schema
        assert config.train.name == run["name"]
        assert config.train.steps * config.tokens_per_step == run["D"]
        assert config.train.runs_dir == str(ladder_dir / "runs")
        assert config.train.steps >= ladder_command.MIN_LADDER_STEPS
    assert len({run["slice"] for run in plan["runs"]}) == plan["design"]["slices"]


def test_budget_too_small_for_one_run(capsys, tmp_path) -> None:
    err = one_line_error(capsys, ["ladder", "--budget-flops", "1e9", "--out", str(tmp_path / "x")])
    assert "too small" in err


def test_ladder_from_another_config(capsys, ladder_dir, tmp_path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text((PRESETS_DIR / "default.yaml").read_text().replace("lr: 3.0e-3", "lr: 1.0e-3"))
    err = one_line_error(capsys, ["ladder", "run", str(ladder_dir), "--config", str(other)])
    assert "another config" in err
    err = one_line_error(capsys, DESIGN + ["--config", str(other), "--out", str(ladder_dir)])
    assert "another config" in err


def test_not_a_ladder_directory(capsys, tmp_path) -> None:
    assert "not a ladder directory" in one_line_error(capsys, ["ladder", "run", str(tmp_path)])


def test_run_skips_finished_runs_and_leaves_out_a_diverged_one(capsys, ladder_dir, monkeypatch) -> None:
    plan = json.loads((ladder_dir / "ladder.json").read_text())
    runs = plan["runs"]
    for run in runs[:6]:
        record(ladder_dir, run["name"], run["N"], run["D"], law_loss(run["N"], run["D"]))
    record(ladder_dir, runs[6]["name"], runs[6]["N"], runs[6]["D"], float("nan"))    # diverged
    trained = []

    def fake_train(config: str, nproc: int) -> int:
        cfg = load_config(config)
        N = next(r["N"] for r in runs if r["name"] == cfg.train.name)
        D = cfg.train.steps * cfg.tokens_per_step
        trained.append(cfg.train.name)
        record(ladder_dir, cfg.train.name, N, D, law_loss(N, D))
        return 0

    monkeypatch.setattr(ladder_command, "train_one", fake_train)
    assert main(["ladder", "run", str(ladder_dir), "--local"]) == 0
    captured = capsys.readouterr()
    assert trained == [runs[7]["name"], runs[8]["name"]]               # the unfinished ones only
    # The exponents' plausible range and prior, weighed against the design's --noise 0.02 (priors.py).
    assert ("exponents: alpha, beta in [0.05, 1], prior normal around (0.343, 0.325), sd 0.15 (Hoffmann et al. "
            "2022, Besiroglu et al. 2024), weighed against 2 % run noise") in captured.out
    diverged = [line for line in captured.err.splitlines() if "diverged" in line]
    assert len(diverged) == 1 and runs[6]["name"] in diverged[0]
    report = json.loads((ladder_dir / "report.json").read_text())
    assert runs[6]["name"] not in report["runs_used"] and len(report["runs_used"]) == 8
    assert report["prior"]["bounds"] == [0.05, 1.0]
    assert all(0.05 <= report["fit"]["params"][name] <= 1.0 for name in ("alpha", "beta"))
    assert load_config(report["next_run"]["config"]).train.name == "next"
    low, high = report["next_run"]["loss_interval"]
    assert low <= report["next_run"]["predicted_loss"] <= high
    assert (ladder_dir / "report.md").is_file() and (ladder_dir / "plots" / "isoloss_frontier.png").is_file()
    # A second run trains nothing more; a next run recorded for another plan is not set beside this
    # forecast (nor retrained over its directory): one warning says so.
    trained.clear()
    record(ladder_dir, "next", 1e6, 1e6, 3.0)
    assert main(["ladder", "run", str(ladder_dir), "--local", "--train-next"]) == 0
    assert trained == []
    stale = [line for line in capsys.readouterr().err.splitlines() if "not the one planned now" in line]
    assert len(stale) == 1 and "N 1M, D 1M" in stale[0]
    assert json.loads((ladder_dir / "report.json").read_text())["next_run"]["measured_loss"] is None


def test_too_few_usable_runs(capsys, ladder_dir) -> None:
    plan = json.loads((ladder_dir / "ladder.json").read_text())
    for run in plan["runs"][:3]:
        record(ladder_dir, run["name"], run["N"], run["D"], law_loss(run["N"], run["D"]))
    for run in plan["runs"][3:]:
        record(ladder_dir, run["name"], run["N"], run["D"], 2 * math.log(256))     # worse than guessing
    with pytest.raises(SystemExit) as stop:
        main(["ladder", "run", str(ladder_dir)])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # One warning line per diverged run, then the one-line error.
    assert len(lines) == 7 and all("diverged" in line for line in lines[:6]) and "at least 5" in lines[-1]


def test_design_trains_under_mup_with_the_smallest_width(ladder_dir, tmp_path, capsys) -> None:
    plan = json.loads((ladder_dir / "ladder.json").read_text())
    models = [load_config(run["config"]).model for run in plan["runs"]]
    smallest = min(model.d_model for model in models)
    assert plan["mup_base_width"] == smallest and len({model.d_model for model in models}) > 1
    assert all(model.mup and model.mup_base_width == smallest for model in models)
    out = tmp_path / "standard"
    assert main(DESIGN + ["--no-mup", "--out", str(out)]) == 0
    plan = json.loads((out / "ladder.json").read_text())
    assert plan["mup_base_width"] is None
    assert not any(load_config(run["config"]).model.mup for run in plan["runs"])


def sweep_loss(lr: float) -> float:
    """A stand-in validation loss by learning rate: lowest at 1e-2, diverged at the sweep's top."""
    return float("nan") if lr > 2e-2 else 2.0 + 0.1 * math.log(lr / 1e-2) ** 2


def test_tune_lr_sweeps_the_smallest_rung_and_writes_the_best_everywhere(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "ladder"
    assert main(DESIGN + ["--tune-lr", "--out", str(out)]) == 0
    assert "--tune-lr: 5 runs of" in capsys.readouterr().out
    plan = json.loads((out / "ladder.json").read_text())
    runs = plan["runs"]
    smallest = min(runs, key=lambda r: r["N"])
    swept, trained = [], []

    def fake_train(config: str, nproc: int) -> int:
        cfg = load_config(config)
        D = cfg.train.steps * cfg.tokens_per_step
        if cfg.train.runs_dir.endswith("lr_sweep"):
            assert cfg.model == load_config(smallest["config"]).model       # the smallest rung's shape, µP on
            swept.append(cfg.optim.lr)
            append_row(Path(cfg.train.runs_dir) / "runs.csv", cfg.train.name, smallest["N"], D, sweep_loss(cfg.optim.lr))
        else:
            assert cfg.optim.lr == 0.00949                                    # the tuned rate, on every rung
            N = next(r["N"] for r in runs if r["name"] == cfg.train.name)
            trained.append(cfg.train.name)
            record(out, cfg.train.name, N, D, law_loss(N, D))
        return 0

    monkeypatch.setattr(ladder_command, "train_one", fake_train)
    assert main(["ladder", "run", str(out), "--local"]) == 0
    captured = capsys.readouterr()
    assert swept == pytest.approx([3e-4, 9.49e-4, 3e-3, 9.49e-3, 3e-2])      # log-spaced around the base's 3e-3
    assert sorted(trained) == sorted(r["name"] for r in runs)
    assert "learning rate 0.00949" in captured.out
    plan = json.loads((out / "ladder.json").read_text())
    assert plan["lr"]["value"] == 0.00949 and plan["lr"]["tuned_on"] == smallest["name"]
    assert math.isnan(plan["lr"]["sweep"]["0.03"])
    assert all(load_config(r["config"]).optim.lr == 0.00949 for r in runs)
    report = json.loads((out / "report.json").read_text())
    next_run = load_config(report["next_run"]["config"])
    assert next_run.optim.lr == 0.00949 and next_run.model.mup_base_width == plan["mup_base_width"]
    # Run again: no second sweep, nothing retrained.
    swept.clear(), trained.clear()
    assert main(["ladder", "run", str(out), "--local", "--tune-lr"]) == 0
    assert swept == [] and trained == []


def test_tune_lr_after_runs_were_trained(capsys, ladder_dir) -> None:
    run = json.loads((ladder_dir / "ladder.json").read_text())["runs"][0]
    record(ladder_dir, run["name"], run["N"], run["D"], law_loss(run["N"], run["D"]))
    err = one_line_error(capsys, ["ladder", "run", str(ladder_dir), "--tune-lr"])
    assert "mix" in err

"""Weighted mixtures: each window's source drawn by weight from (seed, step, slot) alone, so the same
windows at any world size; tokens read and validation loss logged per source."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY, run_train
from trainer.config import load_config
from trainer.data import TokenData, WindowSampler, eval_windows
from trainer.prepare.pipeline import PrepareOptions, prepare_corpus
from trainer.prepare.sources import expand_sources

NAMES = ("code", "prose", "numbers")
ALPHABETS = {"code": "(){}[]=:;+-*/<>_", "prose": "abcdefghijklm ", "numbers": "0123456789.,"}   # disjoint


def write_source(root: Path, name: str, documents: int) -> Path:
    """A byte-level source of its own alphabet (so a window tells its source), in small shards."""
    rng = random.Random(name)
    corpus = root / f"{name}.jsonl"
    corpus.write_text("".join(json.dumps({"text": "".join(rng.choices(ALPHABETS[name], k=400))}) + "\n"
                              for _ in range(documents)))
    prepare_corpus(expand_sources([str(corpus)]), root / name,
                   PrepareOptions(val_fraction=0.1, shard_tokens=3000, workers=1))
    return root / name


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixture")
    for name, documents in zip(NAMES, (40, 120, 60)):   # sizes unlike the weights: weights decide
        write_source(root, name, documents)
    return root


def mixture_config(root: Path, weights) -> str:
    items = ", ".join(f"{{dir: {root / n}, weight: {w}, name: {n}}}" for n, w in zip(NAMES, weights))
    return f"data.sources=[{items}]"


def source_of(window: np.ndarray) -> int:
    text = bytes(window.astype(np.uint8)).decode("utf-8", errors="replace")
    return next(i for i, name in enumerate(NAMES) if set(text) <= set(ALPHABETS[name]) | {"\n"})


@pytest.mark.parametrize("weights", [(0.5, 0.3, 0.2), (0.7, 0.0, 0.3)], ids=["weights", "one_weight_zero"])
def test_mixture(sources, weights):
    cfg = load_config(None, ["train.global_batch=8", mixture_config(sources, weights)])
    data = TokenData.open(cfg.data)
    assert data.mixture and data.names == NAMES
    whole = WindowSampler(data.train, 16, 200, 0, 1, seed=7)
    counts = np.zeros(3)
    for _ in range(100):   # 20,000 windows
        rows = np.concatenate([x.numpy() for x, _ in whole.micro_batches(200)])
        counts += np.bincount([source_of(row) for row in rows], minlength=3)
    frequencies = counts / counts.sum()
    assert np.abs(frequencies - np.asarray(weights)).max() < 0.01, frequencies
    assert whole.tokens_read() == {n: int(c) * 16 for n, c in zip(NAMES, counts)}

    one = WindowSampler(data.train, 16, 16, 0, 1, seed=3)
    four = [WindowSampler(data.train, 16, 16, rank, 4, seed=3) for rank in range(4)]
    for _ in range(5):   # world size 1 and 4 read the same windows
        single = np.concatenate([x.numpy() for x, _ in one.micro_batches(4)])
        split = np.concatenate([np.concatenate([x.numpy() for x, _ in s.micro_batches(2)]) for s in four])
        np.testing.assert_array_equal(single, split)
    assert all(s.tokens_read() == one.tokens_read() for s in four)   # every rank counts the global draw

    val_BT = eval_windows(data.val, 16, 4, seed=0).numpy()
    assert [source_of(row) for row in val_BT] == [0] * 4 + [1] * 4 + [2] * 4


def test_windows_never_cross_a_shard(sources):
    data = TokenData.open(sources / "prose")
    split = data.sources[0].train
    assert len(split.shards) > 3
    ends = np.cumsum(split.window_starts(64))
    for position in (0, int(ends[0]) - 1, int(ends[0]), int(ends[-1]) - 1):
        window = split.window(position, 64)
        assert window.size == 65


def test_mixture_logs_tokens_and_validation_loss_per_source(sources, tmp_path):
    run_train([*TINY, mixture_config(sources, (0.5, 0.3, 0.2)), f"train.runs_dir={tmp_path}", "train.steps=5",
               "train.name=mix"])
    lines = [json.loads(line) for line in (tmp_path / "mix" / "metrics.jsonl").read_text().splitlines()]
    evaluated = [line for line in lines if "val_loss" in line]
    assert evaluated and all(f"val_loss/{name}" in line for line in evaluated for name in NAMES)
    last = evaluated[-1]
    assert last["val_loss"] == pytest.approx(sum(w * last[f"val_loss/{n}"] for n, w in zip(NAMES, (0.5, 0.3, 0.2))))
    logged = [line for line in lines if "loss" in line]
    assert sum(logged[-1][f"tokens/{name}"] for name in NAMES) == 5 * 8 * 32   # steps x batch x seq_len


def test_allocate_reports_epochs_per_source(sources, tmp_path, capsys):
    from launch.cli import main as scaleplan

    config = tmp_path / "mix.yaml"
    items = "\n".join(f"    - {{dir: {sources / n}, weight: {w}}}" for n, w in zip(NAMES, (0.5, 0.3, 0.2)))
    config.write_text(f"train:\n  global_batch: 8\ndata:\n  sources:\n{items}\n")
    assert scaleplan(["allocate", "--flops", "1e13", "--vocab-size", "256", "--unique-tokens", str(config), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    unique = {n: json.loads((sources / n / "index.json").read_text())["tokens"]["train"] for n in NAMES}
    for name, weight in zip(NAMES, (0.5, 0.3, 0.2)):
        assert payload["epochs_per_source"][name] == pytest.approx(payload["D"] * weight / unique[name])
    assert payload["unique_tokens"] == sum(unique.values())
    # one directory is the one-number case
    assert scaleplan(["allocate", "--flops", "1e13", "--vocab-size", "256", "--unique-tokens", str(sources / "prose"), "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert scaleplan(["allocate", "--flops", "1e13", "--vocab-size", "256", "--unique-tokens", str(unique["prose"]), "--json"]) == 0
    assert one["N"] == pytest.approx(json.loads(capsys.readouterr().out)["N"])


def test_ladder_counts_each_source(sources):
    """The ladder's data advice reads the base config's mixture per source, and the fit's allocation
    reports epochs per source, like `allocate --unique-tokens CONFIG`."""
    from launch.ladder.files import data_sources
    from planner.scaling.law import ScalingLaw
    from planner.scaling.ladder_fit import fit_rungs

    config = load_config(None, ["train.global_batch=8", mixture_config(sources, (0.5, 0.3, 0.2))])
    found = data_sources(config)
    unique = {n: json.loads((sources / n / "index.json").read_text())["tokens"]["train"] for n in NAMES}
    assert found == [(n, w, float(unique[n])) for n, w in zip(NAMES, (0.5, 0.3, 0.2))]
    law = ScalingLaw(E=1.7, A=400.0, B=410.0, alpha=0.34, beta=0.28)
    grid = [(N, D) for N in (3e4, 6e4, 1.2e5, 2.4e5) for D in (1e6, 3e6, 1e7)]
    kept = [({"N": N, "D": D}, float(law.predict(N, D))) for N, D in grid]
    allocation = fit_rungs(kept, 6e12, None, "synthetic", found).allocation
    for name, weight in zip(NAMES, (0.5, 0.3, 0.2)):
        assert allocation.epochs_per_source[name] == pytest.approx(allocation.D * weight / unique[name])

"""Every file and flag the project reads, wrong in every way we could think of: exit code 2, one line
on stderr that names the problem, no traceback, and nothing already on disk lost or changed."""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from launch.cli import main as scaleplan
from launch.train import main as train
from tests.helpers import TINY, run_train, write_tiny_corpus


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A good data directory, a finished run with checkpoints, and a file of runs to fit."""
    root = tmp_path_factory.mktemp("world")
    data = write_tiny_corpus(root / "data")
    run_train([*TINY, f"data.dir={data}", f"train.runs_dir={root / 'runs'}", "train.steps=2", "train.name=done",
               "checkpoint.every=1"])
    return root


def fingerprint(root: Path) -> dict:
    """Every file under `root` with its content hash: what must not change."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def data_copy(world: Path, tmp: Path, change) -> Path:
    """A copy of the good data directory with one thing wrong."""
    copy = tmp / "baddata"
    shutil.copytree(world / "data", copy)
    change(copy)
    return copy


def train_args(world: Path, tmp: Path, *extra: str, data: Path | None = None) -> list[str]:
    return [*TINY, f"data.dir={data or world / 'data'}", f"train.runs_dir={world / 'runs'}", "train.steps=2",
            "train.name=done", *extra]


def meta(copy: Path, **changes) -> None:
    header = json.loads((copy / "meta.json").read_text())
    header.update(changes)
    (copy / "meta.json").write_text(json.dumps(header))


def bad_ids(copy: Path) -> None:
    tokens = np.fromfile(copy / "train.bin", dtype=np.uint16)
    tokens[100] = 1000
    tokens.tofile(copy / "train.bin")


def other_model_checkpoint(world: Path, tmp: Path) -> list[str]:
    return train_args(world, tmp, "model.d_model=64", "train.steps=3")


# (id, command: "train" or "scaleplan", argv builder (world, tmp) -> argv, fragment of the message)
CASES = [
    # configs
    ("config-binary", "train", lambda w, t: ["--config", str(write(t / "c.yaml", bytes(range(256))))], "not UTF-8"),
    ("config-empty", "train", lambda w, t: ["--config", str(write(t / "c.yaml", ""))], "is empty"),
    ("config-list", "train", lambda w, t: ["--config", str(write(t / "c.yaml", "- 1\n- 2\n"))], "not a YAML mapping"),
    ("config-scalar", "train", lambda w, t: ["--config", str(write(t / "c.yaml", "hello\n"))], "not a YAML mapping"),
    ("config-utf16", "train", lambda w, t: ["--config", str(write(t / "c.yaml", "train:\n  steps: 3\n".encode("utf-16")))],
     "not UTF-8"),
    ("config-latin1", "train", lambda w, t: ["--config", str(write(t / "c.yaml", "train:\n  name: caf\xe9\n".encode("latin-1")))],
     "not UTF-8"),
    ("config-syntax", "train", lambda w, t: ["--config", str(write(t / "c.yaml", "model: [unclosed\n"))], "not valid YAML"),
    ("config-unknown-section", "train", lambda w, t: ["--config", str(write(t / "c.yaml", "modle:\n  d_model: 3\n"))],
     "unknown key 'modle'"),
    ("config-wrong-type", "train", lambda w, t: ["--config", str(write(t / "c.yaml", "model:\n  n_layers: many\n"))],
     "model.n_layers"),
    ("config-directory", "train", lambda w, t: ["--config", str(t)], "c"),
    ("config-missing", "train", lambda w, t: ["--config", str(t / "none.yaml")], "config file not found"),
    ("config-heads", "train", lambda w, t: train_args(w, t, "model.d_model=30", "model.n_heads=4"),
     "d_model 30 is not divisible by n_heads 4"),
    # overrides
    ("override-no-equals", "train", lambda w, t: train_args(w, t, "train.steps"), "not of the form section.key=value"),
    ("override-no-key", "train", lambda w, t: train_args(w, t, "train=3"), "must name a section and a key"),
    ("override-into-value", "train", lambda w, t: train_args(w, t, "train.steps.x=1"), "'steps' is a value"),
    ("override-unknown", "train", lambda w, t: train_args(w, t, "train.stpes=3"), "unknown key 'train.stpes'"),
    ("override-bad-number", "train", lambda w, t: train_args(w, t, "optim.lr=fast"), "optim.lr"),
    ("override-bad-choice", "train", lambda w, t: train_args(w, t, "parallel.backend=magic"), "parallel.backend"),
    ("override-negative", "train", lambda w, t: train_args(w, t, "train.steps=-1"), "train.steps"),
    # data directories
    ("data-missing-dir", "train", lambda w, t: train_args(w, t, data=t / "nowhere"), "no prepared data"),
    ("data-no-meta", "train", lambda w, t: train_args(w, t, data=data_copy(w, t, lambda c: (c / "meta.json").unlink())),
     "missing meta.json"),
    ("data-meta-not-json", "train", lambda w, t: train_args(w, t, data=data_copy(
        w, t, lambda c: (c / "meta.json").write_text("{oops"))), "meta.json is not a scaleplan data header"),
    ("data-meta-no-dtype", "train", lambda w, t: train_args(w, t, data=data_copy(w, t, lambda c: (c / "meta.json").write_text(
        json.dumps({k: v for k, v in json.loads((c / "meta.json").read_text()).items() if k != "dtype"})))),
     "meta.json is not a scaleplan data header"),
    ("data-partial-token", "train", lambda w, t: train_args(w, t, data=data_copy(
        w, t, lambda c: open(c / "train.bin", "ab").write(b"\x01"))), "not a whole number of uint16 tokens"),
    ("data-count-mismatch", "train", lambda w, t: train_args(w, t, data=data_copy(
        w, t, lambda c: meta(c, tokens={"train": 5, "val": 5}))), "meta.json says"),
    ("data-no-val", "train", lambda w, t: train_args(w, t, data=data_copy(w, t, lambda c: (c / "val.bin").unlink())),
     "data file missing"),
    ("data-ids-beyond-vocab", "train", lambda w, t: train_args(w, t, data=data_copy(w, t, bad_ids)),
     "token id 1000 is beyond"),
    ("data-vocab-too-big", "train", lambda w, t: train_args(w, t, data=data_copy(w, t, lambda c: meta(c, vocab_size=50000))),
     "larger than model.vocab_size"),
    # checkpoints
    ("ckpt-not-a-checkpoint", "train", lambda w, t: train_args(w, t, f"checkpoint.resume={t}", "train.name=new"),
     "not a checkpoint directory"),
    ("ckpt-missing-shard", "train", lambda w, t: train_args(w, t, "train.name=new", "checkpoint.resume=" + str(
        missing_shard(w, t))), "is missing"),
    ("ckpt-other-model", "train", other_model_checkpoint, "checkpoint of another model (model.d_model 32 ≠ 64"),
    ("ckpt-other-run", "train", lambda w, t: train_args(w, t, "model.n_layers=3", "train.name=new", "checkpoint.resume="
                                                        + str(w / "runs" / "done" / "checkpoints" / "step_2")),
     "model.n_layers 2 ≠ 3"),
    ("ckpt-fresh-over-old", "train", lambda w, t: train_args(w, t, "checkpoint.resume=none"), "already holds checkpoints"),
    # runs tables for `scaleplan fit`
    ("fit-nan", "scaleplan", lambda w, t: ["fit", str(write(t / "r.csv", runs_csv("nan")))], "loss"),
    ("fit-negative", "scaleplan", lambda w, t: ["fit", str(write(t / "r.csv", runs_csv("-5")))], "loss"),
    ("fit-text", "scaleplan", lambda w, t: ["fit", str(write(t / "r.csv", runs_csv("abc")))], "loss"),
    ("fit-too-few", "scaleplan", lambda w, t: ["fit", str(write(t / "r.csv", "N,D,loss\n1e6,1e8,3.0\n2e6,2e8,2.9\n"))],
     "runs"),
    ("fit-no-columns", "scaleplan", lambda w, t: ["fit", str(write(t / "r.csv", "a,b,c\n1,2,3\n"))], "column"),
    ("fit-empty", "scaleplan", lambda w, t: ["fit", str(write(t / "r.csv", ""))], "r.csv"),
    ("fit-binary", "scaleplan", lambda w, t: ["fit", str(write(t / "r.csv", bytes(range(256)) * 4))], "r.csv"),
    ("fit-missing", "scaleplan", lambda w, t: ["fit", str(t / "none.csv")], "not found"),
    # GPU catalogs
    ("catalog-syntax", "scaleplan", lambda w, t: ["plan", "--params", "1e9", "--gpu-catalog",
                                                  str(write(t / "g.yaml", "x: [1,\n"))], "g.yaml"),
    ("catalog-missing-field", "scaleplan", lambda w, t: ["plan", "--params", "1e9", "--gpu-catalog",
                                                         str(write(t / "g.yaml", "mygpu: {hbm_gib: 80}\n"))], "mygpu"),
    ("catalog-negative", "scaleplan", lambda w, t: ["plan", "--params", "1e9", "--gpu-catalog", str(write(
        t / "g.yaml", "mygpu: {hbm_gib: -80, peak_bf16_tflops: 900, intra_node_gbps: 450, network_gbps: 50}\n"))],
     "mygpu"),
    ("catalog-binary", "scaleplan", lambda w, t: ["plan", "--params", "1e9", "--gpu-catalog",
                                                  str(write(t / "g.yaml", bytes(range(256))))], "g.yaml"),
    ("gpu-unknown", "scaleplan", lambda w, t: ["plan", "--params", "1e9", "--gpu", "h999"], "unknown GPU 'h999'"),
    # fit grids
    ("grid-unknown-key", "scaleplan", lambda w, t: ["fit", str(good_runs(t)), "--grid",
                                                    str(write(t / "grid.yaml", "gamma: [1, 2]\n"))], "gamma"),
    ("grid-text", "scaleplan", lambda w, t: ["fit", str(good_runs(t)), "--grid",
                                             str(write(t / "grid.yaml", "alpha: [a, b]\n"))], "alpha"),
    ("grid-empty-range", "scaleplan", lambda w, t: ["fit", str(good_runs(t)), "--grid",
                                                    str(write(t / "grid.yaml", "alpha: {start: 0.1, stop: 0.8, num: 0}\n"))],
     "alpha"),
    # flags
    ("flag-negative-gpus", "scaleplan", lambda w, t: ["plan", "--params", "1e9", "--gpus", "-3"], "--gpus must be positive"),
    ("flag-negative-flops", "scaleplan", lambda w, t: ["allocate", "--flops", "-1"], "positive number of FLOPs"),
    ("flag-mfu-above-one", "scaleplan", lambda w, t: ["allocate", "--gpu-hours", "10", "--gpu", "h100-sxm", "--mfu", "2"],
     "mfu"),
    ("flag-unknown", "train", lambda w, t: ["--frobnicate"], "--frobnicate"),
    # Hugging Face export and import (trainer/hf/)
    ("export-no-checkpoint", "scaleplan", lambda w, t: ["export", str(write(t / "run" / "config.yaml", "").parent),
                                                        "--out", str(t / "out")], "has no checkpoint to export"),
    ("export-into-full-folder", "scaleplan", lambda w, t: ["export", str(w / "runs" / "done"), "--out",
                                                           str(write(t / "out" / "mine.txt", "keep").parent)],
     "is not empty"),
    ("export-missing-step", "scaleplan", lambda w, t: ["export", str(w / "runs" / "done"), "--step", "7", "--out",
                                                       str(t / "out")], "no checkpoint of step 7"),
    ("hf-other-arch", "train", lambda w, t: train_args(w, t, "model.init_from=hf:" + str(write(
        t / "hf" / "config.json", json.dumps({"model_type": "llama", "hidden_size": 32})).parent)),
     "set model.arch=llama"),
    ("hf-other-shape", "train", lambda w, t: train_args(w, t, "model.init_from=hf:" + str(write(
        t / "hf" / "config.json", json.dumps({"model_type": "gpt2", "n_layer": 2, "n_embd": 64})).parent)),
     "n_embd=64 but model.d_model=32"),
    ("hf-no-folder", "train", lambda w, t: train_args(w, t, f"model.init_from=hf:{t / 'nowhere'}"), "no such folder"),
    ("hf-no-scheme", "train", lambda w, t: train_args(w, t, f"model.init_from={t}"), "model.init_from"),
    # scaleplan prepare (its --out inside the world: a refused preparation must leave nothing there)
    ("prepare-jsonl-malformed", "scaleplan", lambda w, t: prepare_args(w, write(
        t / "c.jsonl", '{"text": "fine"}\n\n{"text": broken\n')), "c.jsonl:3 is not a JSON line"),
    ("prepare-jsonl-malformed-in-worker", "scaleplan", lambda w, t: [*prepare_args(w, write(
        t / "c.jsonl", '{"text": "a"}\n' * 3 + "[1, 2\n")), "--workers", "2"], "c.jsonl:4 is not a JSON line"),
    ("prepare-jsonl-no-field", "scaleplan", lambda w, t: prepare_args(w, write(t / "c.jsonl", '{"body": "x"}\n')),
     "c.jsonl:1 has no field 'text'"),
    ("prepare-parquet-no-column", "scaleplan", lambda w, t: prepare_args(w, parquet(t / "c.parquet", "body")),
     "has no column 'text'"),
    ("prepare-gzip-corrupt", "scaleplan", lambda w, t: prepare_args(w, write(t / "c.jsonl.gz", b"\x1f\x8b" + bytes(64))),
     "not a valid gzip file"),
    ("prepare-gzip-cut-short", "scaleplan", lambda w, t: prepare_args(w, write(
        t / "c.jsonl.gz", gzip.compress(b"".join(b'{"text": "%d"}\n' % i for i in range(5000)))[:3000])), "not a valid gzip file"),
    ("prepare-zstd-corrupt", "scaleplan", lambda w, t: prepare_args(w, write(t / "c.jsonl.zst", b"\x28\xb5\x2f\xfd" +
                                                                              bytes(range(60)))), "not a valid zstd file"),
    ("prepare-parquet-corrupt", "scaleplan", lambda w, t: prepare_args(w, write(t / "c.parquet", b"PAR1" + bytes(100))),
     "not a valid Parquet file"),
    ("prepare-tokenizer-not-json", "scaleplan", lambda w, t: [*prepare_args(w, write(t / "c.jsonl", '{"text": "a"}\n')),
                                                              "--tokenizer", str(write(t / "tok.json", "{nope"))],
     "is not a tokenizers JSON file"),
    ("prepare-tokenizer-empty-folder", "scaleplan", lambda w, t: [*prepare_args(w, write(t / "c.jsonl", '{"text": "a"}\n')),
                                                                  "--tokenizer", str(write(t / "tok" / "x.txt", "").parent)],
     "no tokenizer.json in the folder"),
    ("prepare-source-missing", "scaleplan", lambda w, t: prepare_args(w, t / "nothing.jsonl"), "source not found"),
    ("prepare-glob-matches-nothing", "scaleplan", lambda w, t: prepare_args(w, f"{t}/*.parquet"), "no file matches"),
    # mixtures
    ("mixture-two-tokenizers", "train", lambda w, t: train_args(w, t, "data.sources=[{dir: %s}, {dir: %s}]" % (
        w / "data", hf_prepared(t))), "one mixture needs one tokenizer"),
    ("mixture-negative-weight", "train", lambda w, t: train_args(w, t, "data.sources=[{dir: %s, weight: -0.5}, "
                                                                       "{dir: %s, name: b}]" % (w / "data", w / "data")),
     "weight -0.5 is negative"),
    ("mixture-weights-sum-to-zero", "train", lambda w, t: train_args(w, t, "data.sources=[{dir: %s, weight: 0}]" % (
        w / "data")), "the weights sum to 0"),
    ("mixture-missing-source", "train", lambda w, t: train_args(w, t, "data.sources=[{dir: %s}, {dir: %s}]" % (
        w / "data", t / "nowhere")), "no prepared data"),
]


def prepare_args(world: Path, source) -> list[str]:
    return ["prepare", str(source), "--out", str(world / "prepared"), "--workers", "1"]


def parquet(path: Path, column: str) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({column: ["some text"]}), path)
    return path


def hf_prepared(tmp: Path) -> Path:
    """A data directory prepared with a Hugging Face tokenizer (made here, no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(["def f(x):\n    return x\n"] * 20, trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp / "tokenizer.json"))
    corpus = write(tmp / "corpus.jsonl", '{"text": "def f(x):\\n    return x\\n"}\n' * 400)
    assert scaleplan(["prepare", str(corpus), "--tokenizer", str(tmp / "tokenizer.json"), "--out", str(tmp / "hfdata"),
                      "--workers", "1", "--val-fraction", "0.1"]) == 0
    return tmp / "hfdata"


def runs_csv(bad: str) -> str:
    rows = [f"{n:.3g},{20 * n:.3g},{2 + 400 / n ** 0.3:.4f}" for n in np.geomspace(1e6, 1e8, 8)]
    rows[3] = rows[3].rsplit(",", 1)[0] + "," + bad
    return "N,D,loss\n" + "\n".join(rows) + "\n"


def good_runs(tmp: Path) -> Path:
    return write(tmp / "good.csv", runs_csv("3.0"))


def missing_shard(world: Path, tmp: Path) -> Path:
    copy = tmp / "ckpt"
    shutil.copytree(world / "runs" / "done" / "checkpoints" / "step_1", copy)
    next(copy.glob("__0_*.distcp")).unlink()
    return copy


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_input(world, tmp_path, capsys, case):
    name, command, argv, fragment = case
    before = fingerprint(world)
    args = argv(world, tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        (train if command == "train" else scaleplan)(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err
    assert len(err) < 400, err                       # a line, not a dump
    assert fingerprint(world) == before              # nothing on disk lost or changed


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40

"""`scaleplan prepare`: every input format gives each document's tokens followed by the separator, in
corpus order; memory stays flat as the corpus grows; a killed run resumes to the same bytes; the
number of workers changes nothing."""
from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from launch.cli import main as scaleplan
from trainer.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
WORDS = ["alpha", "beta", "gamma", "delta", "naïve", "café", "日本語", "x = f(y)\n", "    return 1\n", "\t"]


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(0, 60))) for _ in range(n)]


def hf_tokenizer(tmp: Path) -> Path:
    """A small byte-level BPE trained here (no download), with an end-of-text token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(documents(200, seed=1), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp / "tokenizer.json"))
    return tmp / "tokenizer.json"


def write_jsonl(path: Path, docs: list[str], opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as handle:
        for number, text in enumerate(docs):
            handle.write(json.dumps({"id": number, "text": text}) + "\n")
            if number % 7 == 3:
                handle.write("\n")   # blank lines are no documents
    return path


def write_zst(path: Path, docs: list[str]) -> Path:
    import zstandard

    plain = write_jsonl(path.with_suffix(".tmp"), docs)
    path.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    plain.unlink()
    return path


def write_parquet(path: Path, docs: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), path, row_group_size=50)
    return path


def write_texts(folder: Path, docs: list[str]) -> Path:
    folder.mkdir()
    for number, text in enumerate(docs):
        (folder / f"doc_{number:04d}.txt").write_text(text, encoding="utf-8")
    return folder


def write_parts(folder: Path, docs: list[str]) -> str:
    folder.mkdir()
    for part in range(3):
        write_jsonl(folder / f"part-{part}.jsonl", docs[part * len(docs) // 3:(part + 1) * len(docs) // 3])
    (folder / "notes.md").write_text("not matched by the glob")
    return str(folder / "part-*.jsonl")


FORMATS = {
    "txt": lambda tmp, docs: str(write_texts(tmp / "texts", docs)),
    "jsonl": lambda tmp, docs: str(write_jsonl(tmp / "c.jsonl", docs)),
    "jsonl_gz": lambda tmp, docs: str(write_jsonl(tmp / "c.jsonl.gz", docs, gzip.open)),
    "jsonl_zst": lambda tmp, docs: str(write_zst(tmp / "c.jsonl.zst", docs)),
    "parquet": lambda tmp, docs: str(write_parquet(tmp / "c.parquet", docs)),
    "glob": lambda tmp, docs: write_parts(tmp / "parts", docs),
}


def read_split(out: Path, split: str) -> np.ndarray:
    index = json.loads((out / "index.json").read_text())
    shards = [np.fromfile(out / s["file"], dtype=index["dtype"]) for s in index["shards"][split]]
    assert all(s.size == shard["tokens"] for s, shard in zip(shards, index["shards"][split]))
    return np.concatenate(shards) if shards else np.zeros(0, dtype=index["dtype"])


@pytest.mark.parametrize("tokenizer", ["byte", "hf"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_prepare_formats(tmp_path, fmt, tokenizer):
    docs = documents(90)
    spec = "byte" if tokenizer == "byte" else str(hf_tokenizer(tmp_path))
    source = FORMATS[fmt](tmp_path, docs)
    out = tmp_path / "out"
    assert scaleplan(["prepare", source, "--out", str(out), "--tokenizer", spec, "--val-fraction", "0.1",
                      "--shard-tokens", "700", "--workers", "1"]) == 0
    tok = load_tokenizer(spec)
    separator = tok.encode("\n\n") if tokenizer == "byte" else [tok.end_of_text()]
    expected = {"train": [], "val": []}
    for number, text in enumerate(docs):   # every 10th document of the source is validation
        expected["val" if number % 10 == 9 else "train"] += tok.encode(text) + separator
    for split in ("train", "val"):
        np.testing.assert_array_equal(read_split(out, split), np.asarray(expected[split]), err_msg=split)
    index = json.loads((out / "index.json").read_text())
    assert index["sources"][0]["documents"] == {"train": 81, "val": 9}
    assert index["tokenizer_hash"] == tok.digest and index["separator"] == separator
    assert not (out / ".partial").exists()


def big_corpus(path: Path, megabytes: float, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = [w.strip() for w in WORDS]
    with open(path, "w", encoding="utf-8") as handle:
        written = 0
        while written < megabytes * 1e6:
            line = json.dumps({"text": " ".join(rng.choices(words, k=rng.randint(20, 400)))}) + "\n"
            handle.write(line)
            written += len(line.encode())
    return path


def prepare_process(source: Path, out: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "launch.cli", "prepare", str(source), "--out", str(out), *flags],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def peak_rss_of_tree(process: subprocess.Popen) -> int:
    """The largest sum of resident memory of a process and all its children, polled until it exits."""
    import psutil

    root, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass   # a process ended while we looked
        time.sleep(0.01)
    assert process.returncode == 0, process.stderr.read().decode()
    return peak


def test_prepare_constant_memory(tmp_path):
    peaks = {}
    for megabytes in (6, 24):
        source = big_corpus(tmp_path / f"c{megabytes}.jsonl", megabytes, seed=megabytes)
        peaks[megabytes] = peak_rss_of_tree(prepare_process(source, tmp_path / f"out{megabytes}", "--workers", "2",
                                                            "--shard-tokens", "4000000"))
        source.unlink()
    assert peaks[24] < 1e9
    print(f"peak RSS of all prepare processes: {peaks[6] / 2**20:.0f} MiB (6 MB corpus), "
          f"{peaks[24] / 2**20:.0f} MiB (24 MB)")
    assert peaks[24] <= 1.15 * peaks[6], peaks


def test_prepare_resume(tmp_path, monkeypatch):
    source = big_corpus(tmp_path / "c.jsonl", 24)
    flags = ["--shard-tokens", "400000", "--workers", "2"]
    process = prepare_process(source, tmp_path / "killed", *flags)
    record = tmp_path / "killed" / ".partial" / "progress.json"
    finished = 0
    while finished < 3 and process.poll() is None:
        try:
            finished = len(json.loads(record.read_text())["splits"]["train"]["finished"])
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)   # the main process and its workers, mid-way
    process.wait()
    assert finished >= 3 and not (tmp_path / "killed" / "index.json").exists()
    import trainer.prepare.pipeline as pipeline

    starts, read_chunks = [], pipeline.corpus_chunks
    monkeypatch.setattr(pipeline, "corpus_chunks", lambda *a: starts.append(a[2]) or read_chunks(*a))
    assert scaleplan(["prepare", str(source), "--out", str(tmp_path / "killed"), *flags]) == 0
    assert starts[0] > (0, 0)   # it carried on from the record, not from the start
    assert scaleplan(["prepare", str(source), "--out", str(tmp_path / "whole"), "--shard-tokens", "400000",
                      "--workers", "1"]) == 0
    whole = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*") if p.is_file())
    resumed = sorted(p.relative_to(tmp_path / "killed") for p in (tmp_path / "killed").rglob("*") if p.is_file())
    assert whole == resumed and len(whole) > 8
    for name in whole:   # the shards and index.json alike
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "killed" / name).read_bytes(), name


def test_prepare_workers_deterministic(tmp_path):
    docs = documents(400, seed=3)
    sources = [str(write_jsonl(tmp_path / "a.jsonl.gz", docs[:150], gzip.open)),
               str(write_parquet(tmp_path / "b.parquet", docs[150:300])),
               str(write_texts(tmp_path / "texts", docs[300:]))]
    outputs = []
    for workers in (1, 3):
        out = tmp_path / f"out{workers}"
        assert scaleplan(["prepare", *sources, "--out", str(out), "--workers", str(workers),
                          "--shard-tokens", "2000", "--val-fraction", "0.05"]) == 0
        outputs.append({str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outputs[0] == outputs[1] and len(outputs[0]) > 5


def test_prepare_up_to_date_and_redone_when_the_input_changes(tmp_path, capsys):
    source = write_jsonl(tmp_path / "a.jsonl", documents(30))
    args = ["prepare", str(source), "--out", str(tmp_path / "o"), "--workers", "1"]
    assert scaleplan(args) == 0 and scaleplan(args) == 0
    assert "up to date" in capsys.readouterr().out
    write_jsonl(source, documents(31))
    assert scaleplan(args) == 0
    assert "wrote" in capsys.readouterr().out

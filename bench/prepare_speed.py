"""Preparation speed: `scaleplan prepare --workers 2` against the pipeline the well-known single-file
trainers use (Hugging Face `datasets`: load_dataset("json") -> .map(batched=True, num_proc=2) with the
same tokenizer -> one memmap), on the same generated JSONL, with the same tokens out (checked).

Both are timed whole, from reading the JSONL to tokens on disk. The tokenizer is a byte-level BPE
trained here on a sample of the corpus (no download), with an end-of-text token after each document.

    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python bench/prepare_speed.py [--megabytes 100]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

WORDS = ("the of and to in is that for it as with was on be by this are or from at an which not have has but "
         "model data token train loss step layer batch scale compute parallel shard memory gradient").split()


def write_corpus(path: Path, megabytes: float) -> int:
    """Documents of 20-600 words with some numbers and code, one JSON object per line."""
    rng, written, documents = random.Random(0), 0, 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < megabytes * 1e6:
            words = rng.choices(WORDS, k=rng.randint(20, 600))
            words[::17] = [str(rng.randint(0, 10**6)) for _ in words[::17]]
            line = json.dumps({"id": documents, "text": " ".join(words) + ".\ndef f(x):\n    return x\n"}) + "\n"
            handle.write(line)
            written, documents = written + len(line), documents + 1
    return documents


def train_tokenizer(corpus: Path, out: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    with open(corpus, encoding="utf-8") as handle:
        sample = [json.loads(next(handle))["text"] for _ in range(2000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(sample, trainers.BpeTrainer(vocab_size=4096, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(out))
    return out


def ours(corpus: Path, tokenizer: Path, out: Path, workers: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "launch.cli", "prepare", str(corpus), "--out", str(out), "--tokenizer",
                    str(tokenizer), "--workers", str(workers), "--val-fraction", "0.01"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


REFERENCE = """
import sys, numpy as np
from datasets import load_dataset
from tokenizers import Tokenizer
corpus, tokenizer, out, cache, workers = sys.argv[1:6]
tok = Tokenizer.from_file(tokenizer)
eot = tok.token_to_id("<|endoftext|>")
def process(batch):
    ids = [e.ids + [eot] for e in tok.encode_batch(batch["text"])]
    return {"ids": ids, "len": [len(i) for i in ids]}
data = load_dataset("json", data_files=corpus, split="train", cache_dir=cache)
data = data.map(process, batched=True, num_proc=int(workers), remove_columns=data.column_names, desc="tokenizing")
lengths = np.asarray(data["len"], dtype=np.int64)
tokens = np.memmap(out, dtype=np.uint16, mode="w+", shape=(int(lengths.sum()),))
position = 0
for batch in data.with_format("numpy").iter(batch_size=1024):
    for ids in batch["ids"]:
        tokens[position:position + len(ids)] = ids
        position += len(ids)
tokens.flush()
np.save(out + ".lengths.npy", lengths)
"""


def reference(corpus: Path, tokenizer: Path, out: Path, cache: Path, workers: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", REFERENCE, str(corpus), str(tokenizer), str(out), str(cache), str(workers)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"})
    return time.perf_counter() - start


def same_tokens(ours_dir: Path, reference_file: Path) -> int:
    """The reference's documents, split into train and val as ours are (every 100th document is
    validation), equal our shards token for token; the tokens compared."""
    index = json.loads((ours_dir / "index.json").read_text())
    mine = {split: np.concatenate([np.fromfile(ours_dir / s["file"], dtype=index["dtype"])
                                   for s in index["shards"][split]]) for split in ("train", "val")}
    tokens = np.fromfile(reference_file, dtype=np.uint16)
    lengths = np.load(str(reference_file) + ".lengths.npy")
    is_val = np.arange(lengths.size) % index["val_every"] == index["val_every"] - 1
    owner = np.repeat(is_val, lengths)
    assert np.array_equal(tokens[~owner], mine["train"]) and np.array_equal(tokens[owner], mine["val"]), \
        "the two pipelines wrote different tokens"
    return int(tokens.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=100.0, help="size of the generated JSONL")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        documents = write_corpus(root / "corpus.jsonl", args.megabytes)
        tokenizer = train_tokenizer(root / "corpus.jsonl", root / "tokenizer.json")
        ours_s = ours(root / "corpus.jsonl", tokenizer, root / "ours", args.workers)
        reference_s = reference(root / "corpus.jsonl", tokenizer, root / "reference.bin", root / "cache", args.workers)
        tokens = same_tokens(root / "ours", root / "reference.bin")
    print(f"corpus: {args.megabytes:g} MB of JSONL, {documents:,} documents, {tokens:,} tokens (BPE, vocab 4096); "
          f"{args.workers} workers on {os.cpu_count()} cores")
    print(f"scaleplan prepare:                       {ours_s:7.1f} s  {tokens / ours_s:12,.0f} tokens/s")
    print(f"datasets load_dataset + map + memmap:    {reference_s:7.1f} s  {tokens / reference_s:12,.0f} tokens/s")
    print(f"ratio (ours / reference tokens/s): {reference_s / ours_s:.2f}x; same tokens out: yes")


if __name__ == "__main__":
    main()

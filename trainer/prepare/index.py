"""The finished directory: `train/`, `val/` and `index.json`, moved into place from the staging folder
only when every shard is written, so an interrupted or refused preparation leaves nothing under the
final names (and a previous, complete preparation stays usable until the new one replaces it)."""
from __future__ import annotations

import shutil
from pathlib import Path

from trainer.prepare.progress import STAGING, write_json

FORMAT = "scaleplan-shards/1"
SINGLE_FILE_NAMES = ("train.bin", "val.bin", "meta.json")   # the older one-file-per-split layout


def build_index(header: dict, sources: list, counts: list, shards: dict) -> dict:
    """index.json: the header (dtype, vocabulary, tokenizer and its hash, separator, recipe), the token
    totals, every shard with its count and sha256, and each source's documents and tokens per split."""
    tokens = {split: sum(s["tokens"] for s in shards[split]) for split in ("train", "val")}
    per_source = [{"source": source.spec, "files": len(source.files), **count}
                  for source, count in zip(sources, counts)]
    return {"format": FORMAT, **header, "tokens": tokens, "shards": shards, "sources": per_source}


def publish(out: Path, index: dict) -> None:
    """Swap the staged shards in for whatever `out` held, then write index.json last."""
    staging = out / STAGING
    (out / "index.json").unlink(missing_ok=True)   # from here until the end `out` is not a dataset
    for name in SINGLE_FILE_NAMES:
        (out / name).unlink(missing_ok=True)
    for split in ("train", "val"):
        if (out / split).is_dir():
            shutil.rmtree(out / split)
        (staging / split).mkdir(parents=True, exist_ok=True)
        (staging / split).replace(out / split)
    write_json(out / "index.json", index)
    (staging / "progress.json").unlink(missing_ok=True)
    staging.rmdir()

"""The progress record a re-run resumes from: `DIR/.partial/progress.json`, beside the shards staged
there. It is written after the shards' bytes (flushed), so what it says is always on disk: the next
chunk to read, each split's finished shards with their sha256 and the open shard's length, and each
source's counts so far. A record of another recipe (other files, tokenizer, flags) is not resumed."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from trainer.prepare.shards import file_sha256

STAGING = ".partial"
RECORD_EVERY_S = 2.0   # the record is rewritten at most this often (and whenever a shard is finished)


def write_json(path: Path, content: dict) -> None:
    """Whole or not at all: written beside, then renamed over."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=1) + "\n")
    os.replace(tmp, path)


def recipe_hash(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def empty_counts() -> dict:
    return {"documents": {"train": 0, "val": 0}, "tokens": {"train": 0, "val": 0}}


@dataclass
class Progress:
    recipe_hash: str
    next_chunk: tuple[int, int] = (0, 0)      # (file index, chunk number) to read next
    sources: list = field(default_factory=list)
    splits: dict = field(default_factory=lambda: {"train": {"finished": [], "open_tokens": 0},
                                                  "val": {"finished": [], "open_tokens": 0}})
    written_at: float = 0.0

    @classmethod
    def fresh(cls, recipe_hash: str, n_sources: int) -> "Progress":
        return cls(recipe_hash, sources=[empty_counts() for _ in range(n_sources)])

    def save(self, staging: Path, force: bool = False) -> None:
        if not force and time.monotonic() - self.written_at < RECORD_EVERY_S:
            return
        write_json(staging / "progress.json", {"recipe_hash": self.recipe_hash, "next_chunk": list(self.next_chunk),
                                               "sources": self.sources, "splits": self.splits})
        self.written_at = time.monotonic()


def resume_point(staging: Path, recipe_hash: str, n_sources: int) -> tuple[Progress, bool]:
    """The record to carry on from, and whether it is one (False: start from the beginning).

    A record is used only if it is of this recipe and every finished shard it lists is on disk with
    its sha256; otherwise the staging folder's contents are not trusted and the run starts over."""
    try:
        saved = json.loads((staging / "progress.json").read_text())
        if saved["recipe_hash"] != recipe_hash:
            return Progress.fresh(recipe_hash, n_sources), False
        progress = Progress(recipe_hash, tuple(saved["next_chunk"]), saved["sources"], saved["splits"])
        for split in progress.splits.values():
            for shard in split["finished"]:
                if file_sha256(staging / shard["file"]) != shard["sha256"]:
                    return Progress.fresh(recipe_hash, n_sources), False
        return progress, True
    except (OSError, ValueError, KeyError, TypeError):
        return Progress.fresh(recipe_hash, n_sources), False


def clear_staging(staging: Path, remove: bool = False) -> None:
    """Remove what an abandoned preparation left (only our own staged files); the folder too if `remove`."""
    for split in ("train", "val"):
        folder = staging / split
        if folder.is_dir():
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
    for name in ("progress.json", "progress.json.tmp"):
        (staging / name).unlink(missing_ok=True)
    if remove and staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()


def previous_index(out: Path) -> Optional[dict]:
    try:
        return json.loads((out / "index.json").read_text())
    except (OSError, ValueError):
        return None

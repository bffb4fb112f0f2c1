"""One split's token stream cut into shards of at most `shard_tokens` tokens.

The shard being filled is `NNNNN.bin.tmp`; it becomes `NNNNN.bin` (in the staging folder) only when
full or at the end, with its sha256. A re-run after an interruption truncates the open shard back to
the length the progress record saw and carries on appending: the bytes are the same as if it had
never stopped."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def shard_name(number: int) -> str:
    return f"{number:05d}.bin"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


class ShardWriter:
    """Appends tokens to a split's shards under `folder`; `finished` lists the full ones."""

    def __init__(self, folder: Path, split: str, shard_tokens: int, dtype: np.dtype | str,
                 finished: list[dict], open_tokens: int):
        self.folder, self.split, self.shard_tokens, self.dtype = folder, split, shard_tokens, np.dtype(dtype)
        self.finished = list(finished)
        folder.mkdir(parents=True, exist_ok=True)
        tmp, renamed = self._tmp_path(), folder / shard_name(len(self.finished))
        if not tmp.exists() and renamed.exists():   # killed between the rename and the record
            renamed.replace(tmp)
        for stray in folder.glob("*.bin"):   # shards finished after the last progress record
            if stray.name not in {Path(s["file"]).name for s in self.finished}:
                stray.unlink()
        if open_tokens and not tmp.exists():
            raise FileNotFoundError(tmp)
        tmp.touch()
        self.handle = open(tmp, "r+b")
        self.handle.truncate(open_tokens * self.dtype.itemsize)   # drop what came after the record
        self.handle.seek(0)
        self.digest = hashlib.sha256()
        while block := self.handle.read(1 << 24):
            self.digest.update(block)
        self.open_tokens = open_tokens

    def _tmp_path(self) -> Path:
        return self.folder / (shard_name(len(self.finished)) + ".tmp")

    def append(self, tokens: np.ndarray) -> None:
        while tokens.size:
            room = self.shard_tokens - self.open_tokens
            part = np.ascontiguousarray(tokens[:room], dtype=self.dtype)
            self.handle.write(part.tobytes())
            self.digest.update(part.tobytes())
            self.open_tokens += part.size
            tokens = tokens[room:]
            if self.open_tokens == self.shard_tokens:
                self._finish()

    def _finish(self) -> None:
        """Close the open shard under its real name (in the staging folder) and open the next."""
        self.handle.close()
        name = shard_name(len(self.finished))
        self._tmp_path().replace(self.folder / name)
        self.finished.append({"file": f"{self.split}/{name}", "tokens": self.open_tokens,
                              "sha256": self.digest.hexdigest()})
        self.handle, self.digest, self.open_tokens = open(self._tmp_path(), "wb"), hashlib.sha256(), 0

    def flush(self) -> None:
        self.handle.flush()   # a kill after this keeps the bytes (the OS holds them)

    def close(self) -> list[dict]:
        """Finish the last, partly filled shard; every shard of the split."""
        if self.open_tokens:
            self._finish()
        self.handle.close()
        self._tmp_path().unlink()
        return self.finished

    def abandon(self) -> None:
        self.handle.close()

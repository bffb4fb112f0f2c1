"""Token data: memory-mapped token arrays written by `scaleplan prepare`, and a loader that samples
deterministic windows from them.

A prepared directory holds `train.bin`, `val.bin` (flat token ids, uint16 or uint32 by vocabulary
size) and `meta.json` (tokenizer, vocab size, token counts, source). Windows are drawn from a seed and
the step number alone, so the loader's whole position is the step it is at: resuming is exact and the
data seen does not depend on how many ranks share it.
"""
from __future__ import annotations

import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import torch

from planner.errors import UserError
from trainer.tokenizer import Tokenizer

SPLITS = ("train", "val")
FULL_SCAN_TOKENS = 2**27   # token files up to this size are checked whole for ids beyond the vocabulary


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def stdlib_sources() -> list[Path]:
    """The running interpreter's standard library (.py files, tests and site-packages left out):
    the built-in default corpus, present on every machine without a download."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts))


def expand_sources(paths: Iterable[str]) -> list[Path]:
    """Files as given, and every file under a directory (sorted, so the corpus order is fixed)."""
    files = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"source not found: {text}")
    if not files:
        raise UserError("no source files to tokenize")
    return files


def prepare(sources: list[Path], tokenizer: Tokenizer, out_dir: Path, val_fraction: float = 0.01,
            source_name: str = "") -> dict:
    """Tokenize `sources` into `out_dir` and return the header written to meta.json.

    Every file ends with a blank line so modules stay apart. Whole files go to validation, spread
    evenly through the corpus (every k-th file, k = 1 / val_fraction) so the validation split
    looks like the training split; a single file is split at 1 - val_fraction instead.
    """
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction {val_fraction} must be between 0 and 1")
    dtype = token_dtype(tokenizer.vocab_size)
    chunks = []
    for path in sources:
        text = path.read_text(encoding="utf-8", errors="replace")
        chunks.append(np.asarray(tokenizer.encode(text + "\n\n"), dtype=dtype))
    if len(chunks) == 1:
        cut = int(chunks[0].size * (1 - val_fraction))
        splits = {"train": [chunks[0][:cut]], "val": [chunks[0][cut:]]}
    else:
        every = max(2, min(len(chunks), round(1 / val_fraction)))
        is_val = [(i % every) == every - 1 for i in range(len(chunks))]
        splits = {"train": [c for c, v in zip(chunks, is_val) if not v],
                  "val": [c for c, v in zip(chunks, is_val) if v]}
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, parts in splits.items():
        array = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
        tmp = out_dir / f"{split}.bin.tmp"
        array.tofile(tmp)
        tmp.replace(out_dir / f"{split}.bin")  # never leave a half-written file under the real name
        counts[split] = int(array.size)
    meta = {"tokenizer": tokenizer.name, "vocab_size": tokenizer.vocab_size, "dtype": dtype.name,
            "tokens": counts, "files": len(sources), "source": source_name, "val_fraction": val_fraction}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


@dataclass(frozen=True)
class TokenData:
    """The prepared splits, memory-mapped."""

    meta: dict
    train: np.ndarray
    val: np.ndarray

    @classmethod
    def open(cls, directory: str | Path) -> "TokenData":
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.is_file():
            raise UserError(f"no prepared data in {directory} (missing meta.json): run "
                            f"`scaleplan prepare --out {directory}` or set data.dir")
        try:
            meta = json.loads(meta_path.read_text())
            dtype = np.dtype(meta["dtype"])
            int(meta["vocab_size"]), dict(meta.get("tokens") or {})
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"{meta_path} is not a scaleplan data header: {error}") from None
        arrays = {}
        for split in SPLITS:
            path = directory / f"{split}.bin"
            if not path.is_file():
                raise UserError(f"data file missing: {path}")
            size = path.stat().st_size
            if size % dtype.itemsize:
                raise UserError(f"{path} has {size} bytes, not a whole number of {dtype.name} tokens: it was cut "
                                f"short; run `scaleplan prepare` again")
            expected = (meta.get("tokens") or {}).get(split)
            if expected is not None and size // dtype.itemsize != expected:
                raise UserError(f"{path} holds {size // dtype.itemsize} tokens but {meta_path.name} says {expected}: "
                                f"the files are from different preparations; run `scaleplan prepare` again")
            arrays[split] = np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)
        return cls(meta, arrays["train"], arrays["val"])

    def check_fits(self, vocab_size: int, seq_len: int) -> None:
        if self.meta["vocab_size"] > vocab_size:
            raise UserError(f"data vocabulary {self.meta['vocab_size']} is larger than "
                            f"model.vocab_size {vocab_size}")
        for split in SPLITS:
            tokens = getattr(self, split)
            if tokens.size <= seq_len + 1:
                raise UserError(f"{split} split has {tokens.size} tokens, fewer than "
                                f"model.seq_len + 1 = {seq_len + 1}")
            # Small splits are read whole; large ones sampled (the loader skips bad windows anyway).
            sample = tokens if tokens.size <= FULL_SCAN_TOKENS else tokens[::tokens.size // FULL_SCAN_TOKENS + 1]
            largest = int(sample.max())
            if largest >= self.meta["vocab_size"]:
                raise UserError(f"{split}.bin: token id {largest} is beyond the vocabulary of {self.meta['vocab_size']} "
                                f"in meta.json: the data and its header disagree; run `scaleplan prepare` again")


@dataclass(frozen=True)
class BatchFilter:
    """Degenerate windows the loader skips: token ids beyond the vocabulary, or a pattern of up to
    `max_period` tokens repeated over more than `max_fraction` of the window (a run of one
    character, a line drawn with '/'), which can spike the loss."""

    vocab_size: int
    max_period: int = 4
    max_fraction: float = 0.9

    def problem(self, window: np.ndarray) -> Optional[str]:
        """Why `window` is degenerate, or None."""
        if int(window.max()) >= self.vocab_size:
            return f"token id {int(window.max())} >= vocab {self.vocab_size}"
        for period in range(1, self.max_period + 1):
            if float(np.mean(window[period:] == window[:-period])) > self.max_fraction:
                return f"a pattern of {period} token(s) repeated"
        return None


MAX_REDRAWS = 32   # a degenerate window is replaced by another draw, this many times at most


class WindowSampler:
    """Random windows of seq_len + 1 tokens, fixed by (seed, step): step s draws `global_batch`
    start offsets; data-parallel rank r takes the r-th contiguous slice of them, so no two ranks
    read the same window in a step, and together they read exactly what one process would.

    With a `BatchFilter`, a degenerate window is replaced by one drawn from (seed, step, its index in
    the global batch, attempt): the replacement too does not depend on the number of ranks. Each
    replacement is kept in `skipped` (step, offset, reason) until the loop collects it."""

    def __init__(self, tokens: np.ndarray, seq_len: int, global_batch: int, dp_rank: int,
                 dp_size: int, seed: int, batch_filter: Optional[BatchFilter] = None):
        self.tokens, self.seq_len = tokens, seq_len
        self.global_batch, self.dp_rank, self.dp_size, self.seed = global_batch, dp_rank, dp_size, seed
        self.batch_filter = batch_filter
        self.step = 0
        self.skipped: list[dict] = []

    def _high(self) -> int:
        return self.tokens.size - self.seq_len - 1

    def global_offsets(self, step: int) -> np.ndarray:
        """Start offsets of every window of step `step`, over all ranks."""
        return np.random.default_rng([self.seed, step]).integers(0, self._high(), size=self.global_batch)

    def offsets(self, step: int) -> np.ndarray:
        """This rank's slice of them."""
        per_rank = self.global_batch // self.dp_size
        return self.global_offsets(step)[self.dp_rank * per_rank:(self.dp_rank + 1) * per_rank]

    def _window(self, offset: int) -> np.ndarray:
        return np.asarray(self.tokens[offset:offset + self.seq_len + 1])

    def _checked(self, step: int, index: int, offset: int) -> np.ndarray:
        """The window at `offset`, or the first good redraw for global batch slot `index`."""
        window = self._window(offset)
        if self.batch_filter is None:
            return window
        for attempt in range(MAX_REDRAWS):
            reason = self.batch_filter.problem(window)
            if reason is None:
                return window
            self.skipped.append({"step": step, "offset": int(offset), "reason": reason})
            offset = int(np.random.default_rng([self.seed, step, index, attempt + 1]).integers(0, self._high()))
            window = self._window(offset)
        return window   # the data is degenerate nearly everywhere: train on it rather than stall

    def micro_batches(self, micro_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (inputs, targets) for the current step, micro_batch sequences at a time;
        advances to the next step when exhausted."""
        step, offsets = self.step, self.offsets(self.step)
        self.step += 1
        first = self.dp_rank * len(offsets)
        for start in range(0, len(offsets), micro_batch):
            rows = [self._checked(step, first + start + i, o) for i, o in enumerate(offsets[start:start + micro_batch])]
            window_BT = torch.from_numpy(np.stack(rows).astype(np.int64))
            yield window_BT[:, :-1], window_BT[:, 1:]

    def take_skipped(self) -> list[dict]:
        """The degenerate windows replaced since the last call."""
        skipped, self.skipped = self.skipped, []
        return skipped

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.seed = int(state["step"]), int(state["seed"])


def eval_windows(tokens: np.ndarray, seq_len: int, n_windows: int, seed: int) -> torch.Tensor:
    """A fixed set of validation windows (B, seq_len + 1), the same at every evaluation."""
    rng = np.random.default_rng([seed, 2**31 - 1])
    offsets = rng.integers(0, tokens.size - seq_len - 1, size=n_windows)
    return torch.from_numpy(np.stack([tokens[o:o + seq_len + 1] for o in offsets]).astype(np.int64))

"""Token data: the loader that samples deterministic windows from prepared data (trainer/token_data.py
opens it), and `prepare`, the small single-file preparation that tests and examples use (`scaleplan
prepare` streams into shards instead: trainer/prepare/).

A single-file directory holds `train.bin`, `val.bin` (flat token ids, uint16 or uint32 by vocabulary
size) and `meta.json`. Windows are drawn from a seed and the step number alone, so the loader's whole
position is the step it is at: resuming is exact and the data seen does not depend on how many ranks
share it. In a mixture each window's source is drawn by weight in the same (seed, step) draw.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch

from planner.errors import UserError
from trainer.prepare.shards import token_dtype
from trainer.prepare.sources import stdlib_sources
from trainer.token_data import SPLITS, MixedSplit, TokenData, TokenSplit
from trainer.tokenizer import Tokenizer

__all__ = ["SPLITS", "BatchFilter", "MixedSplit", "TokenData", "TokenSplit", "WindowSampler", "eval_windows",
           "prepare", "stdlib_sources", "token_dtype"]

Tokens = Union[np.ndarray, TokenSplit, MixedSplit]   # what the sampler reads: one array, one split, a mixture


def as_mixture(tokens: Tokens) -> MixedSplit:
    if isinstance(tokens, MixedSplit):
        return tokens
    split = tokens if isinstance(tokens, TokenSplit) else TokenSplit([tokens])
    return MixedSplit((split,), (1.0,), ("data",))


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
    (source, position) pairs; data-parallel rank r takes the r-th contiguous slice of them, so no two
    ranks read the same window in a step, and together they read exactly what one process would.

    One source: the draw is the single-file loader's, `integers(0, window starts)`. A mixture: each
    slot's source is drawn by weight, then its position uniformly among that source's window starts.
    `windows_read` counts every rank's windows per source (the same on every rank: the draw is global).

    With a `BatchFilter`, a degenerate window is replaced by one drawn from (seed, step, its index in
    the global batch, attempt), from the same source: the replacement too does not depend on the number
    of ranks. Each replacement is kept in `skipped` (step, offset, reason) until the loop collects it."""

    def __init__(self, tokens: Tokens, seq_len: int, global_batch: int, dp_rank: int,
                 dp_size: int, seed: int, batch_filter: Optional[BatchFilter] = None):
        self.mixture, self.seq_len = as_mixture(tokens), seq_len
        self.global_batch, self.dp_rank, self.dp_size, self.seed = global_batch, dp_rank, dp_size, seed
        self.batch_filter = batch_filter
        self.starts = np.array([split.window_starts(seq_len).sum() for split in self.mixture.splits])
        weights = np.asarray(self.mixture.weights, dtype=np.float64)
        self.probabilities = weights / weights.sum()
        self.step = 0
        self.windows_read = np.zeros(len(self.starts), dtype=np.int64)
        self.skipped: list[dict] = []

    def global_windows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, position) of every window of step `step`, over all ranks."""
        rng = np.random.default_rng([self.seed, step])
        if len(self.starts) == 1:
            return np.zeros(self.global_batch, dtype=np.int64), rng.integers(0, self.starts[0], size=self.global_batch)
        sources = rng.choice(len(self.starts), size=self.global_batch, p=self.probabilities)
        positions = (rng.random(self.global_batch) * self.starts[sources]).astype(np.int64)
        return sources, positions

    def global_offsets(self, step: int) -> np.ndarray:
        """Every window's position (within its source) of step `step`, for event records."""
        return self.global_windows(step)[1]

    def _window(self, source: int, position: int) -> np.ndarray:
        return self.mixture.splits[source].window(int(position), self.seq_len)

    def _checked(self, step: int, index: int, source: int, position: int) -> np.ndarray:
        """The window at `position` of `source`, or the first good redraw for global batch slot `index`."""
        window = self._window(source, position)
        if self.batch_filter is None:
            return window
        for attempt in range(MAX_REDRAWS):
            reason = self.batch_filter.problem(window)
            if reason is None:
                return window
            self.skipped.append({"step": step, "offset": int(position), "reason": reason,
                                 **({"source": self.mixture.names[source]} if len(self.starts) > 1 else {})})
            position = int(np.random.default_rng([self.seed, step, index, attempt + 1]).integers(0, self.starts[source]))
            window = self._window(source, position)
        return window   # the data is degenerate nearly everywhere: train on it rather than stall

    def micro_batches(self, micro_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (inputs, targets) for the current step, micro_batch sequences at a time;
        advances to the next step when exhausted."""
        step = self.step
        every_source, every_position = self.global_windows(step)
        self.windows_read += np.bincount(every_source, minlength=len(self.starts))
        self.step += 1
        per_rank = self.global_batch // self.dp_size
        first = self.dp_rank * per_rank   # this rank's slice of the global batch
        sources, positions = every_source[first:first + per_rank], every_position[first:first + per_rank]
        for start in range(0, len(positions), micro_batch):
            rows = [self._checked(step, first + start + i, s, p)
                    for i, (s, p) in enumerate(zip(sources[start:start + micro_batch], positions[start:start + micro_batch]))]
            window_BT = torch.from_numpy(np.stack(rows).astype(np.int64))
            yield window_BT[:, :-1], window_BT[:, 1:]

    def tokens_read(self) -> dict[str, int]:
        """Tokens trained on per source so far, over all ranks."""
        return {name: int(n) * self.seq_len for name, n in zip(self.mixture.names, self.windows_read)}

    def take_skipped(self) -> list[dict]:
        """The degenerate windows replaced since the last call."""
        skipped, self.skipped = self.skipped, []
        return skipped

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed, "windows_read": self.windows_read.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.seed = int(state["step"]), int(state["seed"])
        if len(state.get("windows_read", ())) == len(self.windows_read):   # older checkpoints lack it
            self.windows_read = np.asarray(state["windows_read"], dtype=np.int64)


def eval_windows(tokens: Tokens, seq_len: int, n_windows: int, seed: int) -> torch.Tensor:
    """A fixed set of validation windows (B, seq_len + 1), the same at every evaluation: n_windows of
    each source, source after source (one source: the single-file loader's windows)."""
    mixture, rows = as_mixture(tokens), []
    for number, split in enumerate(mixture.splits):
        key = [seed, 2**31 - 1] if len(mixture.splits) == 1 else [seed, 2**31 - 1, number]
        positions = np.random.default_rng(key).integers(0, split.window_starts(seq_len).sum(), size=n_windows)
        rows += [split.window(int(p), seq_len) for p in positions]
    return torch.from_numpy(np.stack(rows).astype(np.int64))

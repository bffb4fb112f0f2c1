"""Prepared token data, memory-mapped: one directory (sharded with index.json, or the older single-file
train.bin / val.bin / meta.json), or a weighted mixture of several prepared with the same tokenizer.

A window never crosses a shard boundary: each shard of n tokens offers n - seq_len - 1 window starts,
and a draw picks one of all the starts of a split uniformly. With one shard this is exactly the
single-file loader's draw."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from planner.errors import UserError

SPLITS = ("train", "val")
FULL_SCAN_TOKENS = 2**27   # token files up to this size are checked whole for ids beyond the vocabulary


class TokenSplit:
    """One split of one source: its shards, memory-mapped."""

    def __init__(self, shards: Sequence[np.ndarray]):
        self.shards = [shard for shard in shards if shard.size]
        self.size = sum(shard.size for shard in self.shards)
        self._ends: dict[int, np.ndarray] = {}   # seq_len -> cumulative window starts per shard

    def window_starts(self, seq_len: int) -> np.ndarray:
        """How many windows of seq_len + 1 tokens each shard offers (a shard too short offers none)."""
        return np.array([max(0, shard.size - seq_len - 1) for shard in self.shards], dtype=np.int64)

    def window(self, position: int, seq_len: int) -> np.ndarray:
        """Window number `position` of all the split's window starts, shard after shard."""
        if seq_len not in self._ends:
            self._ends[seq_len] = np.cumsum(self.window_starts(seq_len))
        ends = self._ends[seq_len]
        shard = int(np.searchsorted(ends, position, side="right"))
        offset = position - (int(ends[shard - 1]) if shard else 0)
        return np.asarray(self.shards[shard][offset:offset + seq_len + 1])


@dataclass(frozen=True)
class MixedSplit:
    """The same split of every source of a mixture, with their weights: what the sampler draws from."""

    splits: tuple[TokenSplit, ...]
    weights: tuple[float, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class TokenSource:
    name: str
    weight: float
    directory: Path
    meta: dict
    train: TokenSplit
    val: TokenSplit


def tokenizer_identity(meta: dict) -> str:
    return str(meta.get("tokenizer_hash") or meta.get("tokenizer"))


def _header(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
        np.dtype(meta["dtype"]), int(meta["vocab_size"]), dict(meta.get("tokens") or {})
        return meta
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path} is not a scaleplan data header: {error}") from None


def _memmap(path: Path, dtype: np.dtype, expected, header: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"data file missing: {path}")
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise UserError(f"{path} has {size} bytes, not a whole number of {dtype.name} tokens: it was cut "
                        f"short; run `scaleplan prepare` again")
    if expected is not None and size // dtype.itemsize != expected:
        raise UserError(f"{path} holds {size // dtype.itemsize} tokens but {header.name} says {expected}: "
                        f"the files are from different preparations; run `scaleplan prepare` again")
    return np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)


def open_source(directory: Union[str, Path], name: str = "", weight: float = 1.0) -> TokenSource:
    """A prepared directory: index.json and its shards, or meta.json with train.bin and val.bin."""
    directory = Path(directory)
    splits = {}
    if (directory / "index.json").is_file():
        meta = _header(directory / "index.json")
        try:
            shard_lists = {split: [(s["file"], int(s["tokens"])) for s in meta["shards"][split]] for split in SPLITS}
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"{directory / 'index.json'} is not a scaleplan data header: {error}") from None
        for split, shards in shard_lists.items():
            splits[split] = TokenSplit([_memmap(directory / file, np.dtype(meta["dtype"]), tokens,
                                                directory / "index.json") for file, tokens in shards])
    elif (directory / "meta.json").is_file():
        meta = _header(directory / "meta.json")
        for split in SPLITS:
            splits[split] = TokenSplit([_memmap(directory / f"{split}.bin", np.dtype(meta["dtype"]),
                                                (meta.get("tokens") or {}).get(split), directory / "meta.json")])
    else:
        raise UserError(f"no prepared data in {directory} (missing meta.json or index.json): run "
                        f"`scaleplan prepare --out {directory}` or set data.dir")
    return TokenSource(name or directory.name, weight, directory, meta, splits["train"], splits["val"])


@dataclass(frozen=True)
class TokenData:
    """The prepared data of a run: one source, or a weighted mixture (`mixture` when the config named
    data.sources, so that per-source metrics are logged)."""

    sources: tuple[TokenSource, ...]
    mixture: bool = False

    @classmethod
    def open(cls, data) -> "TokenData":
        """A directory (str or Path), or the config's data section (`dir`, or `sources`)."""
        if isinstance(data, (str, Path)):
            return cls((open_source(data),))
        if not data.sources:
            return cls((open_source(data.dir),))
        sources = tuple(open_source(s.dir, s.name or Path(s.dir).name, s.weight) for s in data.sources)
        first = sources[0]
        for other in sources[1:]:
            if tokenizer_identity(other.meta) != tokenizer_identity(first.meta):
                raise UserError(f"data.sources: {first.name} was prepared with tokenizer {first.meta['tokenizer']} and "
                                f"{other.name} with {other.meta['tokenizer']}: one mixture needs one tokenizer")
        return cls(sources, mixture=True)

    @property
    def meta(self) -> dict:
        """The header the sources share (tokenizer, vocabulary, dtype), with the tokens of all of them."""
        totals = {split: sum(getattr(s, split).size for s in self.sources) for split in SPLITS}
        return {**self.sources[0].meta, "tokens": totals}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(source.name for source in self.sources)

    def _split(self, split: str):
        parts = [getattr(source, split) for source in self.sources]
        if len(parts) == 1 and len(parts[0].shards) <= 1:   # one array: what the single-file loader read
            return parts[0].shards[0] if parts[0].shards else np.zeros(0, np.dtype(self.meta["dtype"]))
        return MixedSplit(tuple(parts), tuple(s.weight for s in self.sources), self.names)

    @property
    def train(self):
        """What WindowSampler reads: the token array itself for one source in one file, else a MixedSplit."""
        return self._split("train")

    @property
    def val(self):
        """What eval_windows reads (as `train`)."""
        return self._split("val")

    def check_fits(self, vocab_size: int, seq_len: int) -> None:
        if self.meta["vocab_size"] > vocab_size:
            raise UserError(f"data vocabulary {self.meta['vocab_size']} is larger than "
                            f"model.vocab_size {vocab_size}")
        for source in self.sources:
            for split in SPLITS:
                tokens = getattr(source, split)
                where = f"{source.name}: " if len(self.sources) > 1 else ""
                if tokens.window_starts(seq_len).sum() < 1:
                    raise UserError(f"{where}{split} split has {tokens.size} tokens, fewer than "
                                    f"model.seq_len + 1 = {seq_len + 1} in any one shard")
                # Small splits are read whole; large ones sampled (the loader skips bad windows anyway).
                stride = tokens.size // FULL_SCAN_TOKENS + 1
                check_ids(tokens, stride, self.meta["vocab_size"], f"{where}{split}")


def check_ids(tokens: TokenSplit, stride: int, vocab_size: int, where: str) -> None:
    largest = max(int(shard[::stride].max()) for shard in tokens.shards)
    if largest >= vocab_size:
        raise UserError(f"{where}.bin: token id {largest} is beyond the vocabulary of {vocab_size} "
                        f"in meta.json: the data and its header disagree; run `scaleplan prepare` again")

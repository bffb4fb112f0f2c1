"""Tokenizing chunks in worker processes, with the results handed back in corpus order.

At most a few chunks per worker are in flight, so memory stays the same whatever the corpus size;
the results come back in the order the chunks were read, not the order they finish, so the output
does not depend on the number of workers."""
from __future__ import annotations

import json
import multiprocessing
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from planner.errors import UserError
from trainer.prepare.sources import Chunk
from trainer.tokenizer import load_tokenizer

IN_FLIGHT_PER_WORKER = 2


@dataclass(frozen=True)
class Recipe:
    """What a worker needs to turn raw documents into tokens."""

    tokenizer: str            # 'byte' or a path: each worker loads its own copy
    separator: tuple[int, ...]
    text_field: str
    val_every: int            # every val_every-th document of a source goes to validation
    dtype: str


@dataclass
class Tokenized:
    """One chunk's tokens, each split ready to append to its shards."""

    chunk: Chunk
    train: np.ndarray
    val: np.ndarray
    documents: dict           # split -> documents


_state: dict = {}


def start_worker(recipe: Recipe) -> None:
    _state["recipe"], _state["tokenizer"] = recipe, load_tokenizer(recipe.tokenizer)


def documents(chunk: Chunk, text_field: str) -> list[str]:
    """The texts of a chunk's documents, in order. UserError naming file:line for a bad record."""
    if chunk.kind == "texts":
        return chunk.items
    if chunk.kind == "paths":
        return [Path(path).read_text(encoding="utf-8", errors="replace") for path in chunk.items]
    texts = []
    for offset, line in enumerate(chunk.items):
        if not line.strip():
            continue
        where = f"{chunk.path}:{chunk.first_line + offset}"
        try:
            record = json.loads(line)
        except ValueError as error:
            raise UserError(f"{where} is not a JSON line: {str(error)[:80]}") from None
        if not isinstance(record, dict) or text_field not in record:
            raise UserError(f"{where} has no field '{text_field}'; name the text field with --text-field")
        if not isinstance(record[text_field], str):
            raise UserError(f"{where}: field '{text_field}' is not a string")
        texts.append(record[text_field])
    return texts


def tokenize(chunk: Chunk) -> Tokenized:
    """A chunk's documents tokenized, each followed by the separator, split into train and val."""
    recipe, tokenizer = _state["recipe"], _state["tokenizer"]
    texts = documents(chunk, recipe.text_field)
    separator = np.asarray(recipe.separator, dtype=recipe.dtype)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for offset, ids in enumerate(tokenizer.encode_batch(texts)):
        is_val = (chunk.first_document + offset) % recipe.val_every == recipe.val_every - 1
        parts["val" if is_val else "train"] += [ids, separator]
    arrays = {split: np.concatenate(p).astype(recipe.dtype, copy=False) if p else np.zeros(0, recipe.dtype)
              for split, p in parts.items()}
    counts = {split: len(p) // 2 for split, p in parts.items()}
    chunk.items = []   # the raw text goes no further: only the tokens travel back
    return Tokenized(chunk, arrays["train"], arrays["val"], counts)


def tokenize_in_order(chunks: Iterable[Chunk], recipe: Recipe, workers: int,
                      before_submit: Optional[Callable[[Chunk], None]] = None) -> Iterator[Tokenized]:
    """Tokenized chunks in the order of `chunks`, by `workers` processes (1: in this process).
    `before_submit` sees each chunk before it leaves (the pipeline numbers documents there)."""
    if workers <= 1:
        start_worker(recipe)
        for chunk in chunks:
            if before_submit:
                before_submit(chunk)
            yield tokenize(chunk)
        return
    # spawn, not fork: a forked copy of a process that already ran the tokenizers library's
    # threads can deadlock, and a fresh interpreter holds only what tokenizing needs.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=start_worker, initargs=(recipe,)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            if before_submit:
                before_submit(chunk)
            pending.append(pool.apply_async(tokenize, (chunk,)))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

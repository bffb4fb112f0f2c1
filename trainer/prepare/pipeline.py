"""prepare_corpus: sources -> chunks -> tokenizing workers (in corpus order) -> shards -> index.json."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from planner.errors import UserError
from trainer.prepare.index import build_index, publish
from trainer.prepare.progress import STAGING, Progress, clear_staging, previous_index, recipe_hash, resume_point
from trainer.prepare.shards import ShardWriter, token_dtype
from trainer.prepare.sources import Chunk, Source, corpus_chunks
from trainer.prepare.workers import Recipe, tokenize_in_order
from trainer.tokenizer import load_tokenizer


@dataclass(frozen=True)
class PrepareOptions:
    tokenizer: str = "byte"
    text_field: str = "text"
    separator: Optional[str] = None     # None: the tokenizer's end-of-text token, else a blank line
    val_fraction: float = 0.01
    shard_tokens: int = 2**27
    workers: int = 1
    progress_bar: bool = False


def header_of(sources: list[Source], options: PrepareOptions) -> tuple[dict, Recipe]:
    """What the output depends on (the index's header, hashed to tell a stale record) and the recipe
    the workers follow."""
    if not 0 < options.val_fraction < 1:
        raise UserError(f"--val-fraction {options.val_fraction} must be between 0 and 1")
    if options.shard_tokens < 1:
        raise UserError(f"--shard-tokens {options.shard_tokens} must be positive")
    tokenizer = load_tokenizer(options.tokenizer)
    if options.separator is not None:
        separator, text = tuple(tokenizer.encode(options.separator)), options.separator
    elif tokenizer.end_of_text() is not None:
        separator, text = (tokenizer.end_of_text(),), tokenizer.decode([tokenizer.end_of_text()])
    else:   # bytes, or a tokenizer without one: a blank line, as between files before shards existed
        separator, text = tuple(tokenizer.encode("\n\n")), "\n\n"
    dtype = token_dtype(tokenizer.vocab_size)
    val_every = max(2, round(1 / options.val_fraction))
    files = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for s in sources for f in s.files]
    header = {"dtype": dtype.name, "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.name,
              "tokenizer_hash": tokenizer.digest, "separator": list(separator), "separator_text": text,
              "val_fraction": options.val_fraction, "val_every": val_every, "shard_tokens": options.shard_tokens,
              "text_field": options.text_field}
    header["recipe_hash"] = recipe_hash({**header, "sources": [s.spec for s in sources], "files": files})
    return header, Recipe(options.tokenizer, separator, options.text_field, val_every, dtype.name)


def prepare_corpus(sources: list[Source], out: Path, options: PrepareOptions,
                   force: bool = False) -> tuple[dict, bool]:
    """Prepare `sources` (see sources.expand_sources) into `out`; (the index, whether an up-to-date one
    was already there). A re-run after an interruption resumes from the progress record."""
    header, recipe = header_of(sources, options)
    previous = previous_index(out)
    if previous and previous.get("recipe_hash") == header["recipe_hash"] and not force:
        return previous, True
    for split in ("train", "val"):   # never delete a folder that is not ours
        if (out / split).exists() and previous is None:
            raise UserError(f"{out / split} exists and is not a scaleplan preparation: pick another --out")
    staging, created = out / STAGING, not out.exists()
    staging.mkdir(parents=True, exist_ok=True)
    progress, resumed = resume_point(staging, header["recipe_hash"], len(sources))
    try:
        if not resumed or force:
            raise FileNotFoundError("start over")
        writers = open_writers(staging, options, recipe, progress)
    except FileNotFoundError:   # nothing to resume, or a staged shard the record needs is gone
        clear_staging(staging)
        progress = Progress.fresh(header["recipe_hash"], len(sources))
        writers = open_writers(staging, options, recipe, progress)
    try:
        write_all(sources, options, recipe, progress, writers, staging)
    except BaseException as error:
        for writer in writers.values():
            writer.abandon()
        if isinstance(error, UserError):   # bad input: nothing to resume, so leave nothing behind
            clear_staging(staging, remove=True)
            if created and not any(out.iterdir()):
                out.rmdir()
        raise   # an interruption keeps the staged shards and the record for the re-run
    shards = {split: writer.close() for split, writer in writers.items()}
    index = build_index(header, sources, progress.sources, shards)
    publish(out, index)
    return index, False


def open_writers(staging: Path, options: PrepareOptions, recipe: Recipe, progress: Progress) -> dict:
    return {split: ShardWriter(staging / split, split, options.shard_tokens, recipe.dtype,
                               progress.splits[split]["finished"], progress.splits[split]["open_tokens"])
            for split in ("train", "val")}


def write_all(sources: list[Source], options: PrepareOptions, recipe: Recipe, progress: Progress,
              writers: dict, staging: Path) -> None:
    """Tokenize every chunk from the resume point on and append it to the shards, recording progress."""
    documents_seen = [c["documents"]["train"] + c["documents"]["val"] for c in progress.sources]

    def number_documents(chunk: Chunk) -> None:   # a source's k-th document is val whoever tokenizes it
        chunk.first_document = documents_seen[chunk.source]
        documents_seen[chunk.source] += chunk.documents

    total_bytes = sum(f.stat().st_size for s in sources for f in s.files)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, dynamic_ncols=True, disable=not options.progress_bar,
               desc="prepare")
    started, tokens_now, documents_now = time.perf_counter(), 0, 0
    chunks = corpus_chunks(sources, options.text_field, tuple(progress.next_chunk))
    with bar:
        for done in tokenize_in_order(chunks, recipe, options.workers, number_documents):
            finished_before = sum(len(w.finished) for w in writers.values())
            counts = progress.sources[done.chunk.source]
            for split in ("train", "val"):
                writers[split].append(getattr(done, split))
                counts["tokens"][split] += int(getattr(done, split).size)
                counts["documents"][split] += done.documents[split]
                writers[split].flush()
                progress.splits[split] = {"finished": writers[split].finished,
                                          "open_tokens": writers[split].open_tokens}
            progress.next_chunk = (done.chunk.file, done.chunk.number + 1) if done.chunk.kind != "paths" \
                else (done.chunk.file + len(done.chunk.items), 0)
            progress.save(staging, force=sum(len(w.finished) for w in writers.values()) > finished_before)
            tokens_now += done.train.size + done.val.size
            documents_now += done.chunk.documents
            rate = tokens_now / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(docs=f"{documents_now:,}", tokens=f"{tokens_now:,}", tok_s=f"{rate:,.0f}", refresh=False)
            bar.update(done.chunk.disk_bytes)
    progress.save(staging, force=True)

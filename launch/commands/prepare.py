"""`scaleplan prepare`: stream text, JSONL (plain, gzip, zstd) and Parquet through a tokenizer into
token shards with an index.json, in parallel, in constant memory, resumable (trainer/prepare/)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

NAME = "prepare"
HELP = "tokenize text, JSONL(.gz/.zst) or Parquet (default: the Python standard library) into token shards"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="*",
                        help="files, folders or globs: plain text (one document per file), .jsonl, .jsonl.gz, "
                             ".jsonl.zst, .parquet (one document per record); none means the Python standard library")
    parser.add_argument("--out", default="data/stdlib", help="output directory (default data/stdlib)")
    parser.add_argument("--tokenizer", default="byte",
                        help="'byte' (built-in, vocab 256), a Hugging Face tokenizer.json, or a local folder with one")
    parser.add_argument("--text-field", default="text", help="the JSONL field / Parquet column holding the text")
    parser.add_argument("--separator", default=None,
                        help="text put between documents (default: the tokenizer's end-of-text token, "
                             "else a blank line, as for the byte tokenizer)")
    parser.add_argument("--val-fraction", type=float, default=0.01,
                        help="share of each source's documents held out for validation (every k-th, k = 1/share)")
    parser.add_argument("--shard-tokens", type=int, default=2**27, help="tokens per shard at most (default 2^27)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="tokenizing processes (default: all cores); the output is the same for any number")
    parser.add_argument("--force", action="store_true", help="prepare again even if --out is up to date")
    parser.add_argument("--json", action="store_true", help="print the index (without its shard list) as JSON")


def run(args: argparse.Namespace) -> int:
    from planner.errors import UserError
    from trainer.prepare.pipeline import PrepareOptions, prepare_corpus
    from trainer.prepare.sources import Source, expand_sources, stdlib_sources

    if args.workers < 1:
        raise UserError(f"--workers {args.workers} must be at least 1")
    if args.workers > 1:   # the workers are the parallelism: no tokenizer thread pools inside each on top
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sources = (expand_sources(args.sources) if args.sources
               else [Source("python-stdlib", tuple(stdlib_sources()))])
    options = PrepareOptions(tokenizer=args.tokenizer, text_field=args.text_field, separator=args.separator,
                             val_fraction=args.val_fraction, shard_tokens=args.shard_tokens, workers=args.workers,
                             progress_bar=sys.stderr.isatty() and not args.json)
    index, reused = prepare_corpus(sources, Path(args.out), options, force=args.force)
    _report(index, Path(args.out), args.json, reused)
    return 0


def _report(index: dict, out: Path, as_json: bool, reused: bool) -> None:
    if as_json:
        print(json.dumps({key: value for key, value in index.items() if key != "shards"}))
        return
    verb = "up to date" if reused else "wrote"
    shards = {split: len(index["shards"][split]) for split in ("train", "val")}
    documents = sum(s["documents"]["train"] + s["documents"]["val"] for s in index["sources"])
    print(f"{verb}: {out} — {index['tokens']['train']:,} train and {index['tokens']['val']:,} validation tokens "
          f"in {shards['train']}+{shards['val']} shards from {documents:,} documents of {len(index['sources'])} "
          f"source(s) ({index['tokenizer']} tokenizer, vocab {index['vocab_size']})")
    for source in index["sources"] if len(index["sources"]) > 1 else []:
        print(f"  {source['source']}: {source['tokens']['train']:,} train / {source['tokens']['val']:,} val tokens, "
              f"{source['documents']['train'] + source['documents']['val']:,} documents")

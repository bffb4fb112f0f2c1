"""`scaleplan prepare`: tokenize text files into the memory-mapped format the trainer reads."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "prepare"
HELP = "tokenize text files (default: the Python standard library) into train/val token arrays"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="*",
                        help="text files or directories; none means the Python standard library")
    parser.add_argument("--out", default="data/stdlib", help="output directory (default data/stdlib)")
    parser.add_argument("--tokenizer", default="byte",
                        help="'byte' (built-in, vocab 256) or a path to a Hugging Face tokenizer.json")
    parser.add_argument("--val-fraction", type=float, default=0.01, help="share held out for validation")
    parser.add_argument("--force", action="store_true", help="re-tokenize even if --out is up to date")
    parser.add_argument("--json", action="store_true", help="print the data header as JSON")


def run(args: argparse.Namespace) -> int:
    from trainer.data import expand_sources, prepare, stdlib_sources
    from trainer.tokenizer import load_tokenizer

    out = Path(args.out)
    tokenizer = load_tokenizer(args.tokenizer)
    if args.sources:
        files, source_name = expand_sources(args.sources), " ".join(args.sources)
    else:
        files, source_name = stdlib_sources(), "python-stdlib"
    meta_path = out / "meta.json"
    if meta_path.is_file() and not args.force:
        meta = json.loads(meta_path.read_text())
        wanted = {"source": source_name, "tokenizer": tokenizer.name, "val_fraction": args.val_fraction}
        if all(meta.get(key) == value for key, value in wanted.items()):
            _report(meta, out, args.json, reused=True)
            return 0
    meta = prepare(files, tokenizer, out, args.val_fraction, source_name)
    _report(meta, out, args.json, reused=False)
    return 0


def _report(meta: dict, out: Path, as_json: bool, reused: bool) -> None:
    if as_json:
        print(json.dumps(meta))
        return
    verb = "up to date" if reused else "wrote"
    print(f"{verb}: {out} — {meta['tokens']['train']:,} train and {meta['tokens']['val']:,} validation "
          f"tokens from {meta['files']} files ({meta['tokenizer']} tokenizer, vocab {meta['vocab_size']})")

"""`scaleplan export`: a run's checkpoint as a Hugging Face `transformers` folder (trainer/hf/)."""
from __future__ import annotations

import argparse
from pathlib import Path

from planner.errors import UserError

NAME = "export"
HELP = "write a run's checkpoint as a Hugging Face folder (LlamaForCausalLM or GPT2LMHeadModel), on the CPU"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the run directory, e.g. runs/default (its checkpoints/step_<n>/)")
    parser.add_argument("--step", type=int, default=None, help="the checkpoint's step (default: the latest)")
    parser.add_argument("--out", required=True, help="the folder to write (new or empty, unless --force)")
    parser.add_argument("--force", action="store_true", help="replace --out if it holds anything")


def run(args: argparse.Namespace) -> int:
    if args.step is not None and args.step < 0:
        raise UserError(f"--step {args.step}: give a checkpoint's step, 0 or more")
    from trainer.hf.export import export_run

    exported = export_run(Path(args.run_dir), Path(args.out), args.step, args.force)
    tokenizer = f"tokenizer from {exported.tokenizer}" if exported.tokenizer else "no tokenizer (byte-level data)"
    print(f"wrote {exported.out}: {exported.hf_class}, {exported.parameters:,} weights from {exported.checkpoint}, "
          f"{tokenizer}")
    print(f"load it with: AutoModelForCausalLM.from_pretrained({str(exported.out)!r})")
    return 0

"""`scaleplan allocate`: the compute-optimal (N, D) and a model shape for a budget."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from launch.arguments import add_json_flag, add_law_argument, add_shape_arguments
from launch.output import human, print_json, print_warnings
from planner.errors import UserError
from planner.scaling.allocate import Allocation, allocate, budget_flops
from planner.scaling.law import load_law
from planner.scaling.shape import Shape, shape_for_params

NAME = "allocate"
HELP = "split a compute budget into model size N and tokens D, and shape the model"


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("budget (give exactly one)")
    group.add_argument("--flops", type=float, metavar="C", help="training FLOPs")
    group.add_argument("--pf-days", type=float, metavar="X", help="petaFLOP/s-days (8.64e19 FLOPs each)")
    group.add_argument("--gpu-hours", type=float, metavar="H", help="GPU-hours, with --gpu and --mfu")
    group.add_argument("--gpu", metavar="ID", help="GPU id from the catalog (planner/hardware.py), e.g. h100-sxm")
    group.add_argument("--mfu", type=float, metavar="F", help="model FLOP utilisation, e.g. 0.4")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_budget_arguments(parser)
    add_law_argument(parser)
    add_shape_arguments(parser)
    parser.add_argument("--unique-tokens", metavar="U|DIR|CONFIG",
                        help="unique tokens available, as a number, a prepared data directory (its training tokens) "
                             "or a training config (its data.dir or data.sources mixture: epochs per source): "
                             "apply the data-constrained law (Muennighoff et al. 2023)")
    add_json_flag(parser)


def allocation_payload(allocation: Allocation, shape: Shape) -> dict:
    payload = allocation.to_json()
    payload["shape"] = shape.to_json()
    payload["shape"]["D_at_budget"] = allocation.C / (6.0 * shape.params)
    payload["warnings"] = list(allocation.warnings)
    return payload


def print_allocation(allocation: Allocation, shape: Shape) -> None:
    print(f"budget {allocation.C:.4g} FLOPs, law {allocation.law}")
    print(f"N {human(allocation.N)} params, D {human(allocation.D)} tokens "
          f"({allocation.tokens_per_param:.1f} tokens/param), predicted loss {allocation.loss:.4f}")
    if allocation.unique_tokens is not None:
        print(f"{allocation.epochs:.2f} epochs over {human(allocation.unique_tokens)} unique tokens "
              f"(worth {human(allocation.effective_tokens)} fresh ones)")
    for name, epochs in allocation.epochs_per_source.items():
        print(f"  {epochs:.2f} epochs over source {name}")
    print(f"shape {shape.describe()}")


def run(args: argparse.Namespace) -> int:
    C = budget_flops(args.flops, args.pf_days, args.gpu_hours, args.gpu, args.mfu)
    law = load_law(args.law)
    unique_tokens, sources = unique_tokens_of(args.unique_tokens)
    allocation = allocate(law, C, unique_tokens, sources)
    shape = shape_for_params(allocation.N, args.arch, args.vocab_size, args.seq_len, args.tie_embeddings)
    print_warnings(allocation.warnings)
    if args.json:
        print_json(allocation_payload(allocation, shape))
    else:
        print_allocation(allocation, shape)
    return 0


def unique_tokens_of(text: Optional[str]) -> tuple[Optional[float], Optional[list]]:
    """--unique-tokens as (a number, None), or (None, [(name, weight, training tokens)]) for a
    prepared directory or a config's data section (a mixture's sources, or its one data.dir)."""
    if text is None:
        return None, None
    try:
        return float(text), None
    except ValueError:
        pass
    path = Path(text)
    if path.is_dir():
        return None, [(path.name, 1.0, training_tokens(path))]
    if path.is_file():
        from trainer.config import load_config

        data = load_config(path).data
        if not data.sources:
            return None, [(Path(data.dir).name, 1.0, training_tokens(Path(data.dir)))]
        return None, [(s.name or Path(s.dir).name, s.weight, training_tokens(Path(s.dir))) for s in data.sources]
    raise UserError(f"--unique-tokens {text} is not a number, a prepared data directory or a config file")


def training_tokens(directory: Path) -> float:
    for name in ("index.json", "meta.json"):
        try:
            return float(json.loads((directory / name).read_text())["tokens"]["train"])
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{directory / name} is not a scaleplan data header") from None
    raise UserError(f"no prepared data in {directory} (no index.json or meta.json): run `scaleplan prepare` first")

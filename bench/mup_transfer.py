"""Learning-rate transfer under µP, beside the standard parametrization measured in the same run.

For each parametrization, widths (default 64, 128, 256; µP's base width is the smallest) each train at
five log-spaced learning rates on the byte-encoded Python standard library, in this process: the
trainer's model (`trainer.model.Transformer`) and optimizer (`trainer.optim.build_optimizer`, whose
µP groups run at `lr_scale` × the schedule's rate, as the engines apply it), the schedule from
`trainer.optim.lr_at`, the same batches in the same order for every run. Prints the validation loss
table (rows: learning rates; columns: widths) and each width's best learning rate. µP transfers when
every width's best is the same; under the standard parametrization it drifts lower as width grows.
Exit code 1 when the µP bests disagree.

    python bench/mup_transfer.py
    python bench/mup_transfer.py --steps 300 --widths 64 128 256 512 --threads 2
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from launch.errors import run_guarded  # noqa: E402
from trainer.config import ModelConfig, OptimConfig  # noqa: E402
from trainer.data import stdlib_sources  # noqa: E402
from trainer.model import Transformer  # noqa: E402
from trainer.optim import build_optimizer, lr_at  # noqa: E402

LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)   # half a decade apart
CORPUS_BYTES = 4_000_000
HEAD_DIM = 32


def stdlib_bytes(limit: int = CORPUS_BYTES) -> torch.Tensor:
    """The first `limit` bytes of the concatenated standard library, as token ids 0-255."""
    chunks, size = [], 0
    for path in stdlib_sources():
        chunks.append(path.read_bytes() + b"\n\n")
        size += len(chunks[-1])
        if size >= limit:
            break
    return torch.frombuffer(bytearray(b"".join(chunks)[:limit]), dtype=torch.uint8).long()


def windows(tokens: torch.Tensor, count: int, length: int, seed: int) -> torch.Tensor:
    offsets = torch.randint(0, tokens.numel() - length, (count,), generator=torch.Generator().manual_seed(seed))
    return torch.stack([tokens[o:o + length] for o in offsets.tolist()])


def train_once(width: int, lr: float, mup: bool, base_width: int, args: argparse.Namespace,
               train_BT: torch.Tensor, val_BT: torch.Tensor) -> float:
    """Validation loss after `args.steps` steps of one model at one peak learning rate."""
    torch.manual_seed(args.seed)
    cfg = ModelConfig(n_layers=args.layers, d_model=width, n_heads=width // HEAD_DIM, seq_len=args.seq_len,
                      mup=mup, mup_base_width=base_width)
    model = Transformer(cfg)
    optim_cfg = OptimConfig(lr=lr, warmup_steps=args.steps // 10, schedule="cosine")
    optimizer = build_optimizer(model, optim_cfg)
    batches = train_BT.view(args.steps, args.batch, -1)
    for step in range(args.steps):
        rate = lr_at(step, args.steps, optim_cfg)
        for group in optimizer.param_groups:
            group["lr"] = rate * group["lr_scale"]
        loss = model(batches[step, :, :-1], batches[step, :, 1:])
        if not torch.isfinite(loss):
            return float("nan")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        return model(val_BT[:, :-1], val_BT[:, 1:]).item()


def sweep(mup: bool, args: argparse.Namespace, train_BT: torch.Tensor, val_BT: torch.Tensor) -> dict:
    base, losses = min(args.widths), {}
    for width in args.widths:
        for lr in args.lrs:
            losses[width, lr] = train_once(width, lr, mup, base, args, train_BT, val_BT)
            print(f"  {'µP' if mup else 'SP'} width {width} lr {lr:.0e}: {losses[width, lr]:.4f}", flush=True)
    return losses


def best_lr(losses: dict, width: int, lrs) -> float:
    finite = {lr: losses[width, lr] for lr in lrs if math.isfinite(losses[width, lr])}
    return min(finite, key=finite.get) if finite else float("nan")


def print_table(title: str, losses: dict, args: argparse.Namespace) -> list[float]:
    print(f"\n{title}: validation loss (nats/byte) after {args.steps} steps")
    print("  lr       " + "".join(f"  width {w:<5}" for w in args.widths))
    bests = [best_lr(losses, w, args.lrs) for w in args.widths]
    for lr in args.lrs:
        cells = "".join(f"  {losses[w, lr]:>7.4f}{'*' if lr == b else ' '}   " for w, b in zip(args.widths, bests))
        print(f"  {lr:<8.0e}{cells}")
    print("  best lr  " + "".join(f"  {b:<10.0e} " for b in bests))
    return bests


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    tokens = stdlib_bytes()
    split = int(0.9 * tokens.numel())
    train_BT = windows(tokens[:split], args.steps * args.batch, args.seq_len + 1, seed=1)
    val_BT = windows(tokens[split:], args.val_windows, args.seq_len + 1, seed=2)
    start = time.perf_counter()
    mup = sweep(True, args, train_BT, val_BT)
    mup_bests = print_table(f"µP (base width {min(args.widths)})", mup, args)
    if not args.mup_only:
        standard = sweep(False, args, train_BT, val_BT)
        print_table("standard parametrization", standard, args)
    print(f"\n{time.perf_counter() - start:.0f} s; * marks each width's best learning rate")
    if len(set(mup_bests)) != 1:
        print("µP's best learning rate differs between widths", file=sys.stderr)
        return 1
    print(f"µP: the best learning rate {mup_bests[0]:.0e} holds at every width")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LEARNING_RATES))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--val-windows", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mup-only", action="store_true", help="skip the standard parametrization's sweep")
    args = parser.parse_args()
    return run_guarded("bench/mup_transfer.py", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of a preset on whatever device is present: tokens/s and MFU.

Our figure is `trainer.step.train_step` (autocast, loss scaling, clipping, accumulation); the
reference, measured in the same run on the same model and batches, is the plainest PyTorch loop
(forward, backward, AdamW step). The ratio shows what our step machinery costs.

    python bench/train_throughput.py --config configs/gpt2-124m.yaml precision.dtype=bf16
    python bench/train_throughput.py --config configs/default.yaml --steps 10
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from launch.errors import run_guarded  # noqa: E402
from planner.model_spec import count_params, flops_per_token  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.engine import TorchEngine  # noqa: E402
from trainer.metrics import peak_flops_per_device  # noqa: E402
from trainer.model import Transformer  # noqa: E402
from trainer.optim import build_optimizer  # noqa: E402
from trainer.precision import Precision  # noqa: E402
from trainer.runtime import pick_device  # noqa: E402
from trainer.step import train_step  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step_fn, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step after `warmup` untimed steps."""
    for _ in range(warmup):
        step_fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step_fn()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--micro-steps", type=int, default=1, help="micro-batches per step")
    args = parser.parse_args()
    return run_guarded("bench/train_throughput.py", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    device = pick_device(cfg.train.device, 0)
    spec = cfg.model.spec()
    batch, seq = cfg.parallel.micro_batch, cfg.model.seq_len
    tokens_per_step = batch * seq * args.micro_steps
    window_BT = torch.randint(0, cfg.model.vocab_size, (batch, seq + 1), device=device)
    inputs_BT, targets_BT = window_BT[:, :-1], window_BT[:, 1:]
    micro = [(inputs_BT, targets_BT)] * args.micro_steps

    def fresh():
        torch.manual_seed(cfg.train.seed)
        model = Transformer(cfg.model).to(device)
        return model, build_optimizer(model, cfg.optim)

    model, optimizer = fresh()
    precision = Precision(cfg.precision, device.type)
    engine = TorchEngine(model, optimizer, precision)
    ours = time_steps(lambda: train_step(engine, micro, args.micro_steps, cfg.optim.grad_clip, device),
                      args.steps, args.warmup, device)
    del model, optimizer, engine
    model, optimizer = fresh()

    def plain_step():
        for inputs, targets in micro:
            with precision.autocast():
                loss = model(inputs, targets) / args.micro_steps
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reference = time_steps(plain_step, args.steps, args.warmup, device)
    peak = peak_flops_per_device(device, cfg.precision.dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"model {count_params(spec) / 1e6:.1f}M params, {cfg.precision.dtype}, {tokens_per_step} tokens/step "
          f"on {name}")
    for label, seconds in (("scaleplan train_step", ours), ("plain PyTorch loop", reference)):
        tokens_per_s = tokens_per_step / seconds
        mfu = f"{flops_per_token(spec) * tokens_per_s / peak:.1%}" if peak else "n/a (no peak for this device)"
        print(f"{label:22s} {tokens_per_s:12,.0f} tokens/s  {seconds * 1e3:9.1f} ms/step  MFU {mfu}")
    print(f"ratio (ours / reference tokens/s): {reference / ours:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

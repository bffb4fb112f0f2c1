"""Model-FLOP utilization on one GPU: our trainer's step on a ~1.3B-parameter Llama-shaped model in
bf16 with torch.compile, beside an eager minimal training loop on the same shapes and batches, and
the planner's forecast for the same config.

Ours is what `launch/train.py` runs on one process (built as bench/train_throughput.py builds it:
`trainer.build` -> `parallel.parallelize` with every block compiled -> `trainer.engines`, DDP over a
world of one on NCCL, bf16 autocast over fp32 master weights, fused AdamW, guard, z-loss, clipping).
The reference is bench/minimal_gpt.py (none of our code) in eager mode under the same bf16
autocast, with torch's default AdamW. Both read the same windows of the byte-encoded standard
library. After warm-up steps (ours compiles there), `--pairs` pairs of `--steps` steps: the two take
turns by block, the order swapped every pair; tokens/s is the median over pairs, and MFU is
tokens/s × training FLOPs per token (planner.model_spec, the trainer's own count) / the GPU's dense
bf16 peak (planner/hardware.py's catalog entry for the detected GPU).

    python bench/gpu_mfu.py                      # one CUDA GPU: configs/llama-1b.yaml (1.24B)
    python bench/gpu_mfu.py --dry-run            # CPU: a tiny model, a couple of steps, the same code
    python bench/gpu_mfu.py --json result.json   # also the figures as JSON (make gpu-check reads them)

Exit code 1 when a loss does not start near ln(vocab) or does not fall, 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from bench.minimal_gpt import MinimalGPT, adamw, train_step as reference_step  # noqa: E402
from bench.train_throughput import build_ours, reference_shape, stdlib_windows, synchronize  # noqa: E402
from launch.errors import run_guarded  # noqa: E402
from planner.errors import UserError  # noqa: E402
from planner.hardware import identify, peak_flops  # noqa: E402
from planner.model_spec import flops_per_token  # noqa: E402
from trainer.callbacks.guard import global_mean  # noqa: E402
from trainer.config import Config, load_config  # noqa: E402
from trainer.engines import StepRequest  # noqa: E402
from trainer.optim import lr_at  # noqa: E402
from trainer.runtime import pick_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "llama-1b.yaml"
# One micro-batch of 4 × 2048 tokens per step; warm-up short enough that the loss moves in the run.
RUN = ["precision.dtype=bf16", "parallel.compile=true", "parallel.backend=ddp", "parallel.micro_batch=4",
       "train.global_batch=4", "train.global_batch_tokens=null", "optim.warmup_steps=2"]
# The dry runs (here and make gpu-check's): the llama-1b preset shrunk to a tiny model on the CPU.
TINY_MODEL = ["train.device=cpu", "model.n_layers=2", "model.d_model=64", "model.n_heads=4", "model.n_kv_heads=2",
              "model.ffn_hidden=192", "model.vocab_size=256", "model.seq_len=64"]
# Uncompiled: inductor's CPU compile alone takes minutes on a busy machine (tests/test_gpu.py
# compiles blocks on the GPU).
DRY = [*TINY_MODEL, "parallel.compile=false", "parallel.micro_batch=2", "train.global_batch=2", "optim.lr=3e-3"]


class Autocast(torch.nn.Module):
    """The reference's forward under bf16 autocast, its backward outside it (as torch's AMP recipe
    runs it, and as our engine does)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, enabled: bool):
        super().__init__()
        self.model, self.device_type, self.enabled = model, device.type, enabled

    def forward(self, *args) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.enabled):
            return self.model(*args)


def config(dry_run: bool, overrides: list[str]) -> Config:
    return load_config(CONFIG, [*RUN, *(DRY if dry_run else []), *overrides])


def forecast(cfg: Config, gpu_id: str | None) -> dict:
    """The planner's step-time forecast of this very config on one GPU (what the trainer writes to
    plan.json); h100-sxm where the device is not in the catalog."""
    from launch.layout_inputs import config_plan_json

    record = config_plan_json(cfg, 1, gpu_id)["layouts"][0]
    return {"gpu": gpu_id or "h100-sxm", "tokens_per_s": record["tokens_per_s"], "mfu": record["mfu"]}


def measure(cfg: Config, pairs: int, steps: int, warmup: int) -> dict:
    """Both loops on the same batches; tokens/s, MFU and loss curves of each, and the forecast."""
    device = pick_device(cfg.train.device, 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0,
                            world_size=1)
    try:
        return _measure(cfg, device, pairs, steps, warmup)
    finally:
        dist.destroy_process_group()


def _measure(cfg: Config, device: torch.device, pairs: int, steps: int, warmup: int) -> dict:
    model, engine, n_micro, backend, guard = build_ours(cfg, device)
    torch.manual_seed(cfg.train.seed + 1)
    reference = Autocast(MinimalGPT(reference_shape(cfg.model)).to(device), device, cfg.precision.dtype == "bf16")
    optimizer = adamw(reference, cfg.optim.lr, (cfg.optim.beta1, cfg.optim.beta2), cfg.optim.weight_decay,
                      cfg.optim.eps)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != sum(p.numel() for p in reference.parameters()):
        raise UserError("the reference's parameter count differs from ours: the comparison would not be fair")
    batch, seq = cfg.parallel.micro_batch, cfg.model.seq_len
    total = warmup + 2 * pairs * steps
    windows = stdlib_windows(total * n_micro * batch, seq + 1).view(total, n_micro, batch, seq + 1).to(device)
    batches = [[(w[:, :-1], w[:, 1:]) for w in step] for step in windows]

    def ours(step: int) -> torch.Tensor:
        engine.set_lr(lr_at(step, total, cfg.optim))
        request = StepRequest(grad_clip=cfg.optim.grad_clip, z_loss=cfg.guards.z_loss,
                              decide=lambda loss, norm: guard.check(global_mean(loss), norm))
        return engine.train_step(batches[step], request).loss

    def plain(step: int) -> torch.Tensor:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, cfg.optim)
        return reference_step(reference, optimizer, batches[step], n_micro, cfg.optim.grad_clip)

    loops, losses = {"ours": ours, "reference": plain}, {"ours": [], "reference": []}

    def run(label: str, first: int, count: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        losses[label] += [loops[label](step) for step in range(first, first + count)]
        synchronize(device)
        return time.perf_counter() - start

    compile_s = run("ours", 0, warmup)   # compiles every block's graph on its first step
    run("reference", 0, warmup)
    tokens = steps * n_micro * batch * seq
    rates: dict[str, list[float]] = {"ours": [], "reference": []}
    for pair in range(pairs):
        first = warmup + 2 * pair * steps
        for label in (("ours", "reference") if pair % 2 == 0 else ("reference", "ours")):
            rates[label].append(tokens / run(label, first, steps))
            first += steps
    gpu = identify(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    peak = peak_flops(gpu, "bf16") if gpu else None
    per_token = flops_per_token(cfg.model.spec())
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
              "gpu": gpu.id if gpu else None, "peak_flops": peak, "params": n_params, "backend": backend,
              "compiled": cfg.parallel.compile,
              "tokens_per_step": n_micro * batch * seq, "warmup_s": compile_s, "flops_per_token": per_token,
              "model": f"{cfg.model.arch} {cfg.model.n_layers} layers × {cfg.model.d_model}, seq {seq}"}
    for label in loops:
        rate = statistics.median(rates[label])
        result[label] = {"tokens_per_s": rate, "mfu": rate * per_token / peak if peak else None,
                         "losses": [float(x) for x in losses[label]]}
    result["ratio"] = result["ours"]["tokens_per_s"] / result["reference"]["tokens_per_s"]
    result["forecast"] = forecast(cfg, gpu.id if gpu else None)
    return result


def learned(curve: list[float], vocab_size: int) -> bool:
    """Starts within 5 % of ln(vocab) (a fresh model's uniform guess) and ends lower."""
    return abs(curve[0] - math.log(vocab_size)) < 0.05 * math.log(vocab_size) and curve[-1] < curve[0]


def percent(value) -> str:
    return f"{value:.1%}" if value is not None else "-"


def report(result: dict, vocab_size: int) -> bool:
    params = f"{result['params'] / 1e9:.2f}B" if result["params"] >= 1e9 else f"{result['params'] / 1e6:.2f}M"
    peak = f"peak {result['peak_flops'] / 1e12:,.0f} TFLOP/s ({result['gpu']})" if result["peak_flops"] else \
        "no peak FLOP/s in the catalog: no MFU"
    print(f"{result['device']}: {result['model']}, {params} parameters, bf16, {result['tokens_per_step']:,} "
          f"tokens/step; {peak}; ours' warm-up steps{' (compiling its blocks)' if result['compiled'] else ''} "
          f"took {result['warmup_s']:.0f} s")
    print(f"{'loop':34s} {'tokens/s':>10s} {'MFU':>6s}  {'first loss':>10s} {'last loss':>9s}")
    ok = True
    ours = f"ours ({result['backend']}, {'compiled' if result['compiled'] else 'not compiled'})"
    for label, text in (("ours", ours), ("reference", "reference (eager)")):
        row = result[label]
        ok &= learned(row["losses"], vocab_size)
        print(f"{text:34s} {row['tokens_per_s']:10,.0f} {percent(row['mfu']):>6s}  {row['losses'][0]:10.3f} "
              f"{row['losses'][-1]:9.3f}")
    fc = result["forecast"]
    print(f"{'planner forecast (' + fc['gpu'] + ')':34s} {fc['tokens_per_s']:10,.0f} {percent(fc['mfu']):>6s}")
    print(f"ours / reference: {result['ratio']:.2f}×; losses {'start at ln(vocab) and fall' if ok else 'WRONG'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="section.key=value, over the preset and the run's settings")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, a couple of steps")
    parser.add_argument("--pairs", type=int, default=None, help="timed turns of each (default 3; 1 dry)")
    parser.add_argument("--steps", type=int, default=None, help="steps per turn (default 10; 2 dry)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps of each first (default 3; 1 dry)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    def act() -> int:
        pairs, steps, warmup = (args.pairs or (1 if args.dry_run else 3), args.steps or (2 if args.dry_run else 10),
                                args.warmup or (1 if args.dry_run else 3))
        if min(pairs, steps, warmup) < 1:
            raise UserError("--pairs, --steps and --warmup must be at least 1")
        cfg = config(args.dry_run, args.overrides)
        if not args.dry_run and not torch.cuda.is_available():
            raise UserError("no CUDA GPU: run on one, or with --dry-run on the CPU")
        result = measure(cfg, pairs, steps, warmup)
        ok = report(result, cfg.model.vocab_size)
        if args.json:
            args.json.write_text(json.dumps({**result, "ok": ok, "dry_run": args.dry_run}, indent=1) + "\n")
        return 0 if ok else 1

    return run_guarded("bench/gpu_mfu.py", act)


if __name__ == "__main__":
    raise SystemExit(main())

"""Training throughput of our trainer beside an independent minimal GPT loop, in one process.

Ours is what `launch/train.py` runs on one process: the model from `trainer.model`, prepared by
`parallel.parallelize` for the config's layout (DDP over a world of one), `trainer.engines` with the
fused AdamW, and the engine's `train_step` with the spike guard, z-loss and clipping, the learning
rate set every step as the loop does. The reference is `bench/minimal_gpt.py`: the same shapes
(parameter count checked equal), written without any of our code, plain AdamW, float32.

Both train on the same batches: windows at fixed, evenly spaced offsets of the byte-encoded Python
standard library (no seed, no prepared data needed). After a warm-up, `--pairs` paired runs of
`--steps` steps each: inside a pair the two alternate step by step (A B B A ...), so a machine shared
with other jobs slows both alike. Each pair prints both tokens/s and the ratio ours / reference (by
wall time, and by the process's CPU time, which other jobs disturb less), then the medians. Both
loss curves are printed: from different random initial weights they must start near ln(vocab) and
end within `--loss-tolerance` of each other (exit code 1 otherwise).

    python bench/train_throughput.py --config configs/default.yaml
    python bench/train_throughput.py --config configs/default.yaml --pairs 5 --steps 8 --threads 2
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from bench.minimal_gpt import GPTShape, MinimalGPT, adamw, train_step as reference_step  # noqa: E402
from launch.errors import run_guarded  # noqa: E402
from parallel.mesh import build_mesh  # noqa: E402
from planner.errors import UserError  # noqa: E402
from planner.model_spec import count_params  # noqa: E402
from trainer.build import build_model_and_engine  # noqa: E402
from trainer.config import Config, ModelConfig, load_config  # noqa: E402
from trainer.data import stdlib_sources  # noqa: E402
from trainer.guards import SpikeGuard  # noqa: E402
from trainer.optim import lr_at  # noqa: E402
from trainer.run_layout import resolve_layout  # noqa: E402
from trainer.runtime import pick_device  # noqa: E402
from trainer.callbacks.guard import global_mean  # noqa: E402
from trainer.engines import StepRequest  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    parser.add_argument("--pairs", type=int, default=5, help="timed runs of each, interleaved")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per timed run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, for both")
    parser.add_argument("--loss-tolerance", type=float, default=0.05,
                        help="largest relative gap between the two final losses")
    args = parser.parse_args()
    return run_guarded("bench/train_throughput.py", lambda: run(args))


def reference_shape(model: ModelConfig) -> GPTShape:
    return GPTShape(arch=model.arch, n_layers=model.n_layers, d_model=model.d_model, n_heads=model.n_heads,
                    kv_heads=model.kv_heads, ffn=model.ffn, vocab_size=model.vocab_size, seq_len=model.seq_len,
                    bias=model.bias, tie_embeddings=model.tie_embeddings, qk_norm=model.qk_norm,
                    norm_eps=model.norm_eps, rope_theta=model.rope_theta)


def stdlib_windows(count: int, length: int) -> torch.Tensor:
    """`count` windows of `length` bytes at evenly spaced offsets of the concatenated standard library."""
    needed = count * length * 4   # spread the windows over at least this many bytes
    chunks, size = [], 0
    for path in stdlib_sources():
        chunks.append(path.read_bytes() + b"\n\n")
        size += len(chunks[-1])
        if size >= needed:
            break
    corpus = torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8).long()
    if corpus.numel() < count * length:
        raise UserError(f"the standard library holds {corpus.numel():,} bytes, fewer than the "
                        f"{count * length:,} this benchmark reads: lower --pairs or --steps")
    stride = (corpus.numel() - length) // max(1, count - 1)
    return torch.stack([corpus[i * stride:i * stride + length] for i in range(count)])


def build_ours(cfg: Config, device: torch.device):
    """Model, layout, engine and guard as `trainer.build.build_run` makes them on one process."""
    layout, backend = resolve_layout(cfg, 1)
    n_micro = cfg.grad_accum_steps(layout.dp)
    engine, _ = build_model_and_engine(cfg, layout, backend, n_micro, build_mesh(layout, device), device)
    return engine.module, engine, n_micro, backend, SpikeGuard(cfg.guards, device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if cfg.precision.dtype != "fp32":
        raise UserError(f"precision.dtype={cfg.precision.dtype}: the reference trains in float32; "
                        f"run with precision.dtype=fp32")
    if cfg.model.vocab_size < 256:
        raise UserError(f"model.vocab_size={cfg.model.vocab_size}: the benchmark's data are bytes, "
                        f"it needs a vocabulary of 256 or more")
    for name in ("pairs", "steps"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1")
    torch.set_num_threads(args.threads)
    device = pick_device(cfg.train.device, 0)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        return compare(cfg, args, device)
    finally:
        dist.destroy_process_group()


def compare(cfg: Config, args: argparse.Namespace, device: torch.device) -> int:
    model, engine, n_micro, backend, guard = build_ours(cfg, device)
    torch.manual_seed(cfg.train.seed + 1)
    shape = reference_shape(cfg.model)
    reference = MinimalGPT(shape).to(device)
    optimizer = adamw(reference, cfg.optim.lr, (cfg.optim.beta1, cfg.optim.beta2), cfg.optim.weight_decay,
                      cfg.optim.eps)
    ours_params = sum(p.numel() for p in model.parameters())
    reference_params = sum(p.numel() for p in reference.parameters())
    counted = count_params(cfg.model.spec())
    if ours_params != reference_params or ours_params != counted:
        raise UserError(f"parameters: ours built {ours_params:,}, the reference {reference_params:,}, the "
                        f"config's count {counted:,}: the models differ in shape, the comparison would not be fair")

    batch, seq = cfg.parallel.micro_batch, cfg.model.seq_len
    total_steps = args.warmup + args.pairs * args.steps
    windows_SMBT = stdlib_windows(total_steps * n_micro * batch, seq + 1).view(
        total_steps, n_micro, batch, seq + 1).to(device)
    batches = [[(w_BT[:, :-1], w_BT[:, 1:]) for w_BT in step_MBT] for step_MBT in windows_SMBT]
    tokens_per_step = n_micro * batch * seq

    def ours_step(step: int) -> torch.Tensor:
        engine.set_lr(lr_at(step, total_steps, cfg.optim))
        request = StepRequest(grad_clip=cfg.optim.grad_clip, z_loss=cfg.guards.z_loss,
                              decide=lambda loss, norm: guard.check(global_mean(loss), norm))
        return engine.train_step(batches[step], request).loss

    def reference_step_at(step: int) -> torch.Tensor:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, cfg.optim)
        return reference_step(reference, optimizer, batches[step], n_micro, cfg.optim.grad_clip)

    losses: dict[str, list[torch.Tensor]] = {"ours": [], "reference": []}
    steppers = {"ours": ours_step, "reference": reference_step_at}

    def timed(label: str, step: int) -> tuple[float, float]:
        """(wall, CPU) seconds of one step of `label`."""
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        losses[label].append(steppers[label](step))
        synchronize(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    for step in range(args.warmup):
        timed("ours", step), timed("reference", step)
    m = cfg.model
    print(f"{m.arch} {m.n_layers} layers × {m.d_model}, {ours_params / 1e6:.2f}M parameters in both; fp32 on "
          f"{device.type.upper()}, {torch.get_num_threads()} thread(s); {n_micro} micro-step(s) of {batch} × {seq} "
          f"= {tokens_per_step:,} tokens/step; ours: {backend} over one process")
    print(f"{args.pairs} pairs of {args.steps} steps each after {args.warmup} warm-up steps; within a pair the two "
          f"alternate step by step (ours first on even steps), on the same batches")
    print(f"{'pair':>4s} {'ours tokens/s':>14s} {'reference tokens/s':>19s} {'ours/reference':>15s} "
          f"{'(CPU time)':>11s}")
    ratios, cpu_ratios = [], []
    for pair in range(args.pairs):
        spent = {"ours": [0.0, 0.0], "reference": [0.0, 0.0]}
        for step in range(args.warmup + pair * args.steps, args.warmup + (pair + 1) * args.steps):
            for label in (("ours", "reference") if step % 2 == 0 else ("reference", "ours")):
                wall, cpu = timed(label, step)
                spent[label][0] += wall
                spent[label][1] += cpu
        (ours, ours_cpu), (plain, plain_cpu) = spent["ours"], spent["reference"]
        ratios.append(plain / ours)
        cpu_ratios.append(plain_cpu / ours_cpu)
        tokens = tokens_per_step * args.steps
        print(f"{pair + 1:4d} {tokens / ours:14,.0f} {tokens / plain:19,.0f} {ratios[-1]:15.3f} {cpu_ratios[-1]:11.3f}")
    median = statistics.median(ratios)
    print(f"median ratio ours/reference: {median:.3f} ({'at least as fast' if median >= 1.0 else 'SLOWER'}); "
          f"by CPU time {statistics.median(cpu_ratios):.3f}")
    return 0 if report_losses(losses, cfg.model.vocab_size, args.loss_tolerance) else 1


def report_losses(losses: dict[str, list[torch.Tensor]], vocab_size: int, tolerance: float) -> bool:
    """Print both curves; True when both start near ln(vocab) and end within `tolerance`."""
    ours = [float(x) for x in losses["ours"]]
    reference = [float(x) for x in losses["reference"]]
    every = max(1, len(ours) // 10)
    shown = sorted(set(range(0, len(ours), every)) | {len(ours) - 1})
    print("loss by step (ours includes the z-loss term):")
    print("  step " + " ".join(f"{s + 1:6d}" for s in shown))
    print("  ours " + " ".join(f"{ours[s]:6.3f}" for s in shown))
    print("  ref  " + " ".join(f"{reference[s]:6.3f}" for s in shown))
    uniform = math.log(vocab_size)
    tail = max(1, len(ours) // 5)
    final_ours, final_ref = statistics.mean(ours[-tail:]), statistics.mean(reference[-tail:])
    gap = abs(final_ours - final_ref) / final_ref
    starts = all(abs(curve[0] - uniform) / uniform < 0.05 for curve in (ours, reference))
    learns = all(statistics.mean(curve[-tail:]) < curve[0] * (1 - tolerance) for curve in (ours, reference))
    same = starts and learns and gap <= tolerance
    print(f"first step: ours {ours[0]:.3f}, reference {reference[0]:.3f}, ln(vocab) {uniform:.3f}; "
          f"mean of the last {tail} steps: ours {final_ours:.3f}, reference {final_ref:.3f}, gap {gap:.1%} "
          f"(limit {tolerance:.0%}): {'same curve' if same else 'CURVES DIFFER'}")
    return same


if __name__ == "__main__":
    raise SystemExit(main())

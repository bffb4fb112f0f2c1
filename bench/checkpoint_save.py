"""How long a checkpoint save takes: our `save_checkpoint` (torch.distributed.checkpoint, fsync,
per-file CRC-32 manifest, atomic rename) beside a plain `torch.save` of the same model and AdamW
state to the same disk, in one process, as a ratio. The figure to set a preemption signal's lead by.

Then the stall of an asynchronous save (`Checkpointer(async_save=True).save`): how long it blocks
the loop (the copy to host memory) against the synchronous save's time, and how long the save
takes to complete in the background. The first async save also allocates the host buffer; the
figure is the best of the later ones, as in a long run.

    python bench/checkpoint_save.py [--config configs/gpt2-124m.yaml] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from planner.model_spec import count_params  # noqa: E402
from trainer.async_checkpoint import Checkpointer  # noqa: E402
from trainer.checkpoint import save_checkpoint  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.engines.torch_engine import TorchEngine  # noqa: E402
from trainer.model import Transformer  # noqa: E402
from trainer.optim import build_optimizer  # noqa: E402
from trainer.precision import Precision  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/gpt2-124m.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(args.config)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29531", rank=0, world_size=1)
    torch.manual_seed(0)
    model = Transformer(cfg.model)
    optimizer = build_optimizer(model, cfg.optim)
    for p in model.parameters():            # AdamW states exist after a first step
        p.grad = torch.zeros_like(p)
    optimizer.step()
    engine = TorchEngine(model, optimizer, Precision(cfg.precision, "cpu"))
    ours, plain, stalls, completes = [], [], [], []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as scratch:
        root = Path(scratch)
        checkpointer = Checkpointer(root / "async", 0, keep=1, async_save=True)
        for repeat in range(args.repeats + 1):   # the first async save allocates its host buffer
            step = repeat + 1
            start = time.perf_counter()
            path = save_checkpoint(root / "ours", step, engine, {"step": step}, cfg.to_yaml(), 0, keep=1)
            ours.append(time.perf_counter() - start)
            size = sum(f.stat().st_size for f in path.iterdir())
            start = time.perf_counter()
            torch.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, root / "plain.pt")
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            checkpointer.save(step, engine, {"step": step}, cfg.to_yaml())
            stalls.append(time.perf_counter() - start)
            checkpointer.wait()
            completes.append(time.perf_counter() - start)
        checkpointer.close()
    dist.destroy_process_group()
    best_ours, best_plain = min(ours), min(plain)
    stall, complete = min(stalls[1:]), min(completes[1:])
    print(f"{Path(args.config).stem}: {count_params(cfg.model.spec()) / 1e6:.0f}M parameters, "
          f"{size / 2**30:.2f} GiB checkpoint (fp32 weights + AdamW moments), best of {args.repeats}")
    print(f"scaleplan save_checkpoint  {best_ours:7.2f} s  {size / 2**30 / best_ours:6.2f} GiB/s")
    print(f"plain torch.save           {best_plain:7.2f} s  {size / 2**30 / best_plain:6.2f} GiB/s")
    print(f"ratio (ours / plain time): {best_ours / best_plain:.2f}")
    print(f"async save: training stalls {stall:7.2f} s (first save, allocating the host copy: {stalls[0]:.2f} s); "
          f"complete after {complete:.2f} s")
    print(f"stall / synchronous save_checkpoint: {stall / best_ours:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

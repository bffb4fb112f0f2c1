"""Entry point: `torchrun --nproc_per_node=N launch/train.py --config configs/X.yaml key=value ...`.

Thin by design: parse -> validate -> init distributed -> train -> tear down. Also runs as a plain
`python launch/train.py ...` (a single process). The only trainer code that reads the environment.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from launch.errors import OneLineParser, run_guarded  # noqa: E402

PROG = "launch/train.py"


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML preset (configs/*.yaml); defaults apply when omitted")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, e.g. train.steps=100 optim.lr=3e-4")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the memory and speed plan for this config and exit without training")
    parser.add_argument("--gpu", default=None, help="GPU id for --dry-run (e.g. h100-sxm)")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="for --dry-run")
    return parser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    prog = PROG if rank == 0 else f"{PROG} (rank {rank})"
    return run_guarded(prog, lambda: run(args, os.environ))


def run(args: argparse.Namespace, environ) -> int:
    from trainer.config import load_config

    from trainer.run_layout import check_backend_installed, resolve_layout

    world_size = int(environ.get("WORLD_SIZE", 1))
    cfg = load_config(args.config, args.overrides)
    # A layout that does not fit the world, or a batch that does not divide, fails here: before any group.
    layout, backend = resolve_layout(cfg, world_size)
    check_backend_installed(backend)
    cfg.grad_accum_steps(layout.dp)
    if cfg.model.init_from:   # a folder that disagrees with model.* fails here too, before any group
        from trainer.hf.initial_weights import check_init_from

        check_init_from(cfg.model)
    if args.dry_run:
        from launch.layout_inputs import print_config_plan

        print_config_plan(cfg, world_size, args.gpu, args.gpus_per_node, (layout, backend))
        return 0

    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # cuBLAS's deterministic mode needs it
    import torch
    import torch.distributed as dist

    from trainer.data import TokenData
    from trainer.callbacks.preemption import PREEMPTED, StopSignal
    from trainer.loop import train
    from trainer.runtime import Runtime, pick_device

    TokenData.open(cfg.data).check_fits(cfg.model.vocab_size, cfg.model.seq_len)
    local_rank = int(environ.get("LOCAL_RANK", 0))
    device = pick_device(cfg.train.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    runtime = Runtime(int(environ.get("RANK", 0)), world_size, local_rank, device,
                      restart_count=int(environ.get("TORCHELASTIC_RESTART_COUNT", 0)))
    # SIGTERM (a preemption, torchrun stopping) and SIGUSR1 (SLURM's warning before the time limit):
    # finish the step, save, exit PREEMPTED; `checkpoint.resume=auto` continues from there.
    signals = StopSignal()
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signals)
    init_distributed("nccl" if device.type == "cuda" else "gloo", runtime, environ)
    if runtime.is_main and "SLURM_JOB_ID" in environ:
        print(f"[scaleplan] SLURM job {environ['SLURM_JOB_ID']}: {environ.get('SLURM_JOB_NUM_NODES', '?')} node(s), "
              f"world size {world_size}, rendezvous {environ.get('MASTER_ADDR')}:{environ.get('MASTER_PORT')}",
              flush=True)
    plan = planned(cfg, world_size, device, args.gpus_per_node, (layout, backend)) if runtime.is_main else None
    try:
        result = train(cfg, runtime, layout, backend, signals, plan)
    finally:
        dist.destroy_process_group()
    if result.preempted:
        return PREEMPTED
    if runtime.is_main and result.val_loss is not None:
        print(f"[scaleplan] step {result.step}: validation loss {result.val_loss:.4f}; run directory "
              f"{result.run_dir}")
        if result.sample:
            print("[scaleplan] sample:\n" + result.sample)
    return 0


def init_distributed(backend: str, runtime, environ) -> None:
    """The default process group, under torchrun or (a plain `python launch/train.py`) on its own.

    Under torchrun the group's keys go under a prefix per restart: after `--max-restarts` restarts
    the job, gloo would otherwise read the dead workers' addresses from the agent's store and hang.
    """
    from datetime import timedelta

    import torch.distributed as dist

    if "MASTER_ADDR" not in environ:
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        return
    agent_store = environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(environ["MASTER_ADDR"], int(environ["MASTER_PORT"]), runtime.world_size,
                          is_master=not agent_store and runtime.rank == 0, timeout=timedelta(minutes=10))
    store = dist.PrefixStore(f"scaleplan/attempt_{runtime.restart_count}", store)
    dist.init_process_group(backend, store=store, rank=runtime.rank, world_size=runtime.world_size)


def planned(cfg, world_size: int, device, gpus_per_node: int, resolved: tuple) -> Optional[dict]:
    """The planner's memory and speed prediction for this very run, which the trainer writes to
    runs/<name>/plan.json beside what metrics.jsonl measures. Planned for the GPU in use, or
    h100-sxm on a CPU; None (with a line saying why) where the planner cannot plan it."""
    import torch

    from launch.layout_inputs import config_plan_json
    from planner.errors import UserError
    from planner.hardware import identify

    gpu = identify(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    try:
        return {"gpu": gpu.id if gpu else None, **config_plan_json(cfg, world_size, gpu.id if gpu else None,
                                                                     gpus_per_node, resolved)}
    except UserError as error:  # a plan is advice: never a reason not to train
        print(f"[scaleplan] no plan.json: {error}", flush=True)
        return None


if __name__ == "__main__":
    raise SystemExit(main())

"""Runs of the trainer's real entry point, one worker process per rank, without torchrun.

Starting torchrun and importing torch again in every rank costs seconds per run; the tests launch
hundreds of runs. Here a forkserver imports torch and the trainer once per test session, and each
rank is a fork of it that sets the environment torchrun would set (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT, ...) and calls `launch.train.main(argv)`. Rank 0 hosts the rendezvous
store (TORCHELASTIC_USE_AGENT_STORE is unset), as for a plain `python launch/train.py` on a cluster.

Forked from a forkserver rather than from the test process: the test process has run torch (its
thread pools, gloo groups, patched modules) by then, and a fork of a process with threads may hang.
The forkserver only imports, so every worker starts from the same clean state, as a new process would.
"""
from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import wait
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "launch" / "train.py"

# Imported once, in the forkserver. A name that fails to import is skipped (then imported per worker).
PRELOAD = ["torch", "torch.distributed", "torch.distributed.checkpoint", "torch.distributed.fsdp",
           "torch.distributed.tensor", "torch.distributed.pipelining", "numpy", "yaml", "pydantic",
           "launch.train", "launch.layout_inputs", "trainer.config", "trainer.run_layout", "trainer.data",
           "trainer.runtime", "trainer.loop", "trainer.build", "trainer.checkpoint", "trainer.metrics",
           "parallel.parallelize", "planner.hardware", "fsspec", "deepspeed"]

# After the first rank fails, how long the others get to exit by themselves before they are killed
# (torchrun stops the rest of the job too: a rank waiting for a dead peer would wait until its timeout).
GRACE_S = 2.0
STACKS_SIGNAL = signal.SIGUSR2   # a worker prints every thread's stack to its stderr
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_context: Optional[multiprocessing.context.BaseContext] = None


def context() -> multiprocessing.context.BaseContext:
    """The forkserver context, its server started (once per test process) with the preloads imported."""
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        # DeepSpeed picks its accelerator as it loads, asking CUDA on a GPU machine, and a fork of a
        # process that has initialised CUDA cannot use it: there each worker imports DeepSpeed itself.
        gpu = any(Path("/dev").glob("nvidia[0-9]*"))
        ctx.set_forkserver_preload([name for name in PRELOAD if not (gpu and name == "deepspeed")])
        # The server's environment is the one its libraries see as they load (libgomp reads
        # OMP_NUM_THREADS then): that of a run_train worker; and CUDA asked through NVML, not initialised.
        server_env = {"OMP_NUM_THREADS": "1", "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
        saved = {name: os.environ.get(name) for name in server_env}
        os.environ.update(server_env)
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            for name, value in saved.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value
        _context = ctx
    return _context


def torchrun_environment(rank: int, nproc: int, port: int) -> dict[str, str]:
    """What `torchrun --standalone --nproc_per_node=nproc` sets for a rank (less its agent's store)."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
            "GROUP_RANK": "0", "ROLE_RANK": str(rank), "ROLE_WORLD_SIZE": str(nproc), "ROLE_NAME": "default",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "TORCHELASTIC_RESTART_COUNT": "0",
            "TORCHELASTIC_MAX_RESTARTS": "0"}


def _worker(argv: list[str], env: dict[str, str], cwd: str, stdout_path: str, stderr_path: str) -> None:
    """One rank: the process `python launch/train.py argv` would be, with its output in two files."""
    with contextlib.suppress(Exception):   # die with the forkserver (so with the test process)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    for stream in (sys.stdout, sys.stderr):   # as under PYTHONUNBUFFERED: nothing lost to a SIGKILL
        stream.reconfigure(line_buffering=True, write_through=True)
    faulthandler.register(STACKS_SIGNAL, all_threads=True)   # where a hung rank is, asked before it is killed
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = [str(TRAIN), *argv]
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
    code = 1
    try:
        if env.get("OMP_NUM_THREADS", "").isdigit():
            import torch

            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        from launch.train import main

        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    except BaseException:   # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    raise SystemExit(code)


def _kill(process) -> None:
    with contextlib.suppress(ProcessLookupError, OSError, ValueError):
        process.kill()


def run_ranks(argv: Sequence[str], nproc: int = 1, cwd: Optional[Path] = None, env: Optional[dict] = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """`launch.train.main(argv)` on `nproc` ranks, each a worker process: a CompletedProcess with the
    ranks' stdout and stderr concatenated in rank order and a return code as torchrun's (0 when every
    rank exits 0, else the first non-zero exit code, or minus the signal that killed the rank). For one
    process, the environment is `env` as given (a plain `python launch/train.py`). A run that takes
    longer than `timeout` seconds has its workers killed and raises subprocess.TimeoutExpired."""
    argv = [str(a) for a in argv]
    env = {str(k): str(v) for k, v in (os.environ if env is None else env).items()}
    command = [sys.executable, str(TRAIN), *argv] if nproc == 1 else \
        ["<in-process torchrun>", f"--nproc_per_node={nproc}", str(TRAIN), *argv]
    ctx = context()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ranks-") as tmp:
        outputs = [(os.path.join(tmp, f"{rank}.out"), os.path.join(tmp, f"{rank}.err")) for rank in range(nproc)]
        workers = []
        try:
            for rank in range(nproc):
                rank_env = env if nproc == 1 else {**env, **torchrun_environment(rank, nproc, port)}
                worker = ctx.Process(target=_worker, name=f"rank{rank}",
                                     args=(argv, rank_env, str(cwd or os.getcwd()), *outputs[rank]))
                worker.start()
                workers.append(worker)
            returncode = _wait(workers, time.monotonic() + timeout)
        except BaseException:
            for worker in workers:
                _kill(worker)
            for worker in workers:
                worker.join()
            if isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                stdout, stderr = _collect(outputs)
                raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr) from None
            raise
        finally:
            for worker in workers:
                with contextlib.suppress(ValueError):
                    worker.close()
        stdout, stderr = _collect(outputs)
    return subprocess.CompletedProcess(command, returncode, stdout, stderr)


def _wait(workers: list, deadline: float) -> int:
    """Wait for every worker; after the first failure give the rest GRACE_S, then kill them."""
    pending = {worker.sentinel: worker for worker in workers}
    first_failure: Optional[int] = None
    kill_at = float("inf")
    while pending:
        now = time.monotonic()
        if now >= deadline:
            for worker in pending.values():
                with contextlib.suppress(ProcessLookupError, OSError):
                    os.kill(worker.pid, STACKS_SIGNAL)
            time.sleep(1.0)
            raise subprocess.TimeoutExpired("ranks", 0)
        if now >= kill_at:
            for worker in pending.values():
                _kill(worker)
            kill_at = float("inf")
        ready = wait(list(pending), timeout=max(0.0, min(deadline, kill_at) - now))
        for worker in sorted((pending.pop(sentinel) for sentinel in ready), key=workers.index):
            worker.join()
            if worker.exitcode != 0 and first_failure is None:
                first_failure = worker.exitcode
                kill_at = time.monotonic() + GRACE_S
    return first_failure or 0


def _collect(outputs: list[tuple[str, str]]) -> tuple[str, str]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    return "".join(read(out) for out, _ in outputs), "".join(read(err) for _, err in outputs)

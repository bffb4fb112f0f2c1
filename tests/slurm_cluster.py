"""A one-node SLURM cluster for tests: Debian's slurm-wlm and munge (installed when missing, as root),
slurmctld and slurmd on free local ports, a config of their own in a temporary directory."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_installed() -> str:
    """'' when SLURM and munge are there (installing them if we may), else why they cannot be."""
    if all(shutil.which(name) for name in DAEMONS):
        return ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "slurm-wlm and munge are not installed and this user cannot apt-get install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        if subprocess.run(command, env=env, capture_output=True, timeout=900).returncode:
            return f"`{' '.join(command)}` failed"
    return "" if all(shutil.which(name) for name in DAEMONS) else "slurm-wlm installed but its commands are missing"


class Cluster:
    """slurmctld + slurmd for one node with `cpus` CPUs; `env` points the SLURM commands at it."""

    def __init__(self, root: Path, cpus: int = 2):
        self.root, self.host = root, socket.gethostname().split(".")[0]
        for sub in ("state", "spool", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        conf = root / "slurm.conf"
        conf.write_text("\n".join([
            # addresses given: the host name need not resolve
            "ClusterName=scaleplan", f"SlurmctldHost={self.host}(127.0.0.1)", "AuthType=auth/munge",
            "CredType=cred/munge",
            # no systemd or cgroups needed
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "SlurmUser=root", "SlurmdUser=root", "MpiDefault=none",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}", f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}", f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}", f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd.log'}", "ReturnToService=2", "JobRequeue=1",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
        self.env = {**os.environ, "SLURM_CONF": str(conf)}

    def start(self) -> None:
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode:
            subprocess.run(["munged", "--force"], check=True, capture_output=True)
        subprocess.run(["slurmctld"], env=self.env, check=True)
        subprocess.run(["slurmd"], env=self.env, check=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = self.run("sinfo", "--noheader", "--format=%T").stdout
            if "idle" in out:
                return
            time.sleep(0.5)
        raise RuntimeError("the test cluster's node did not become idle:\n" + self.log())

    def stop(self) -> None:
        self.run("scontrol", "shutdown")
        for pid_file in ("slurmctld.pid", "slurmd.pid"):
            pid = self.root / pid_file
            if pid.is_file():
                subprocess.run(["kill", "-9", pid.read_text().strip()], capture_output=True)

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)

    def submit(self, script: Path) -> str:
        result = self.run("sbatch", "--parsable", str(script))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().split(";")[0]

    def active(self, job: str) -> bool:
        return bool(self.run("squeue", "--noheader", f"--jobs={job}").stdout.strip())

    def wait(self, job: str, timeout: float = 300, release: bool = False) -> None:
        """Until `job` has left the queue; `release`: start a requeued job at once (SLURM otherwise
        holds a requeued job back for a while)."""
        deadline = time.monotonic() + timeout
        absent = 0   # a job being requeued can drop out of squeue for a moment: gone means gone a while
        released = False
        while time.monotonic() < deadline and absent < 6:
            absent = 0 if self.active(job) else absent + 1
            if release and not released and \
                    "BeginTime" in self.run("squeue", "--noheader", "--format=%r", f"--jobs={job}").stdout:
                # not `now`: slurmd refuses a credential issued in the same second as the revoked one
                # of the run that was just requeued ("Job credential revoked")
                self.run("scontrol", "update", f"jobid={job}", "StartTime=now+3")
                released = True
            time.sleep(0.5)
        assert not self.active(job), f"job {job} still queued after {timeout} s:\n{self.log()}"

    def log(self) -> str:
        return "\n".join((self.root / "log" / name).read_text()[-2000:] for name in ("slurmctld.log", "slurmd.log")
                         if (self.root / "log" / name).is_file())

"""SLURM: generated sbatch scripts checked as text, and run against a real one-node cluster
(slurmctld + slurmd, started here): a job trains to the end; a job signalled mid-run saves,
requeues itself and finishes with the losses of an uninterrupted run; a job array runs each config."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from launch.cli import main as scaleplan
from tests.helpers import TINY, run_train, step_losses, write_tiny_corpus
from tests.slurm_cluster import Cluster, ensure_installed


def tiny_config(path: Path, data: Path, runs: Path, name: str, steps: int, **train) -> Path:
    """The TINY test model as a config file, as a user would submit it."""
    tree: dict = {}
    for item in TINY:
        dotted, value = item.split("=", 1)
        section, key = dotted.split(".")
        tree.setdefault(section, {})[key] = yaml.safe_load(value)
    tree["data"] = {"dir": str(data)}
    tree["train"].update(name=name, runs_dir=str(runs), steps=steps, eval_every=1000, **train)
    tree["checkpoint"] = {"every": 10}
    path.write_text(yaml.safe_dump(tree))
    return path


def test_script_for_4_nodes_of_8_gpus(tmp_path, capsys):
    out = tmp_path / "job.sbatch"
    assert scaleplan(["slurm", "--config", "configs/llama-8b.yaml", "--nodes", "4", "--gpus-per-node", "8",
                      "--partition", "gpu", "--account", "lab", "--time", "12:00:00", "--requeue-max", "5",
                      "--exclusive", "--out", str(out), "--log-dir", str(tmp_path / "logs")]) == 0
    text = out.read_text()
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --exclusive", "#SBATCH --requeue",
                 "#SBATCH --time=12:00:00", "--nnodes=$SLURM_JOB_NUM_NODES --nproc_per_node=8",
                 "--rdzv_backend=c10d --rdzv_endpoint=$HEAD_NODE:$PORT --rdzv_id=$SLURM_JOB_ID",
                 'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                 "PORT=$(( 20000 + SLURM_JOB_ID % 20000 ))", 'if [ "$RESTARTS" -gt 5 ]', "checkpoint.resume=auto",
                 "trap on_usr1 USR1", 'scontrol requeue "$SLURM_JOB_ID"'):
        assert line in text, line
    signal = [line for line in text.splitlines() if line.startswith("#SBATCH --signal=")]
    assert len(signal) == 1 and signal[0].startswith("#SBATCH --signal=B:USR1@")   # B: reaches the trap
    lead = int(signal[0].rsplit("@", 1)[1])
    assert f"USR1 {lead} s before the time limit" in capsys.readouterr().out
    assert lead >= 90
    assert subprocess.run(["bash", "-n", str(out)]).returncode == 0
    assert (tmp_path / "logs").is_dir()


@pytest.mark.parametrize("nodes,gpus,fragment", [
    (3, 8, "3 node(s) × 8 = 24 ranks do not fit"),
    (1, 0, "ranks per node"),
])
def test_node_or_gpu_count_that_does_not_fit_exits_2(tmp_path, capsys, nodes, gpus, fragment):
    argv = ["slurm", "--config", "configs/llama-8b.yaml", "--nodes", str(nodes), "--gpus-per-node", str(gpus),
            "--procs-per-node", "0", "--out", str(tmp_path / "job.sbatch")]
    with pytest.raises(SystemExit) as exit_info:
        scaleplan(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "job.sbatch").exists()


def test_plan_emits_an_sbatch_sized_from_the_layout(tmp_path, capsys):
    from trainer.config import load_config
    from trainer.run_layout import resolve_layout

    out = tmp_path / "job.sbatch"
    assert scaleplan(["plan", "--params", "1e8", "--gpus", "16", "--gpus-per-node", "8",
                      "--emit-sbatch", str(out)]) == 0
    text, config = out.read_text(), tmp_path / "job.yaml"
    assert "#SBATCH --nodes=2" in text and "#SBATCH --gpus-per-node=8" in text and str(config) in text
    layout, _ = resolve_layout(load_config(config), 16)    # the config beside it runs on those 16 GPUs
    assert f"wrote {out}: 2 node(s) × 8 GPU(s)" in capsys.readouterr().out and layout.dp == 16


def test_nnodes(data, tmp_path):
    """Two torchrun agents (as on two nodes, here on localhost) with c10d rendezvous train like one
    agent with two processes; when a third agent never joins, the others fail within the join
    timeout instead of hanging."""
    import os
    import sys

    from tests.helpers import REPO, TRAIN
    from tests.slurm_cluster import free_port

    args = [*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path / 'runs'}", "train.steps=6"]
    run_train([*args, "train.name=one-agent"], nproc=2)

    def agents(count: int, nnodes: int, name: str, join_timeout: int = 60) -> list[subprocess.Popen]:
        port = free_port()
        command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", "--nproc_per_node=1",
                   "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={name}",
                   f"--rdzv_conf=join_timeout={join_timeout}", str(TRAIN), *args, f"train.name={name}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(count)]

    for agent in agents(2, 2, "two-agents"):
        assert agent.wait(timeout=300) == 0, agent.stderr.read()[-2000:]
    one, two = step_losses(tmp_path / "runs" / "one-agent"), step_losses(tmp_path / "runs" / "two-agents")
    assert sorted(two) == list(range(1, 7))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-6), step
    start = time.monotonic()
    waiting = agents(2, 3, "missing-agent", join_timeout=10)
    for agent in waiting:
        assert agent.wait(timeout=120) != 0
    assert time.monotonic() - start < 90
    said = "".join(agent.stderr.read() for agent in waiting)
    assert "RendezvousTimeoutError" in said      # the agent hosting the rendezvous says why


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = ensure_installed()
    if why:
        pytest.skip(why)
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("data"))


def script(tmp_path: Path, *configs: Path, overrides: tuple = ()) -> Path:
    out = tmp_path / "job.sbatch"
    which = ["--config", str(configs[0])] if len(configs) == 1 else ["--array", *map(str, configs)]
    extra = ["--overrides", *overrides] if overrides else []
    assert scaleplan(["slurm", *which, "--nodes", "1", "--gpus-per-node", "0", "--procs-per-node", "2",
                      "--time", "00:20:00", "--log-dir", str(tmp_path / "logs"), "--out", str(out), *extra]) == 0
    return out


pytestmark = pytest.mark.slow


def test_slurm_job(cluster, data, tmp_path):
    """The CPU default config (the demo's model), shortened to 12 steps, submitted as generated."""
    job = script(tmp_path, Path("configs/default.yaml"), overrides=(
        f"data.dir={data}", f"train.runs_dir={tmp_path / 'runs'}", "train.name=slurm-job", "train.steps=12",
        "train.eval_every=1000", "train.sample_tokens=0", "log.every=1", "log.progress=false",
        "log.tensorboard=false"))
    cluster.wait(cluster.submit(job))
    log = "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert "rendezvous" in log and "world size 2" in log, log
    assert sorted(step_losses(tmp_path / "runs" / "slurm-job")) == list(range(1, 13)), log


def test_slurm_requeue(cluster, data, tmp_path):
    """USR1 to the batch shell mid-run (what --signal=B:USR1@T sends before the time limit): the ranks
    save, the job requeues itself and resumes from the checkpoint to the end, with the losses of an
    uninterrupted run."""
    steps = 400
    config = tiny_config(tmp_path / "long.yaml", data, tmp_path / "runs", "slurm-requeue", steps)
    job = cluster.submit(script(tmp_path, config))
    metrics = tmp_path / "runs" / "slurm-requeue" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 30):
        time.sleep(0.2)
    assert cluster.run("scancel", "--signal=USR1", "--batch", job).returncode == 0
    cluster.wait(job, release=True)
    log = "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert "requeueing job" in log and "resuming from" in log, log
    preempted = [json.loads(line) for line in metrics.read_text().splitlines() if '"preempted"' in line]
    assert len(preempted) == 1 and preempted[0]["step"] < steps, log
    run_train(["--config", str(config), "train.name=straight"], nproc=2)
    straight, requeued = step_losses(tmp_path / "runs" / "straight"), step_losses(metrics.parent)
    assert sorted(requeued) == list(range(1, steps + 1))
    for step in straight:
        assert requeued[step] == pytest.approx(straight[step], rel=1e-6), step


def test_slurm_array(cluster, data, tmp_path):
    configs = [tiny_config(tmp_path / f"seed{i}.yaml", data, tmp_path / "runs", f"seed{i}", 6, seed=i)
               for i in range(3)]
    cluster.wait(cluster.submit(script(tmp_path, *configs)), timeout=600)
    losses = [step_losses(tmp_path / "runs" / f"seed{i}") for i in range(3)]
    assert all(sorted(l) == list(range(1, 7)) for l in losses)
    assert losses[0][1] != losses[1][1]          # each task ran its own config
    assert len(list((tmp_path / "logs").iterdir())) == 3

"""`make gpu-check` starts: its dry run (GPU_CHECK_DRY=1: the same parts on the CPU with a tiny
model) prints the one table, with a row per part and measured figures beside the planner's
forecasts; and every test marked gpu lives where the check collects them (tests/test_gpu*.py)."""
import ast
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow   # end to end: the check's parts run as subprocesses
NUMBER = r"[\d,]+(?:\.\d+)?%?"


@pytest.fixture(scope="module")
def dry_run():
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py")], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "GPU_CHECK_DRY": "1", "OMP_NUM_THREADS": "1"})
    return result


def rows(output: str, part: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(part)]


def test_dry_run_passes_and_prints_one_table(dry_run):
    assert dry_run.returncode == 0, dry_run.stdout[-3000:] + dry_run.stderr[-3000:]
    out = dry_run.stdout
    assert "DRY RUN on the CPU" in out and out.rstrip().endswith("gpu-check: all parts passed"), out
    header = next(line for line in out.splitlines() if line.startswith("part "))
    assert header.split() == ["part", "run", "tokens/s", "MFU", "peak", "GiB", "states", "GiB", "result"]
    assert len(rows(out, "pytest -m gpu")) == 1
    assert len(rows(out, "gpu_mfu")) == 2 and len(rows(out, "memory_forecast")) == 2


def test_dry_run_runs_the_gpu_tests_and_skips_them_on_a_cpu(dry_run):
    (line,) = rows(dry_run.stdout, "pytest -m gpu")
    skipped = re.search(r"(\d+) skipped", line)
    assert skipped and int(skipped.group(1)) >= 5, line


def test_measured_figures_sit_beside_the_forecast(dry_run):
    """The trainer's tokens/s and the planner's for the same config, both positive numbers."""
    ours = next(line for line in rows(dry_run.stdout, "gpu_mfu") if " ours" in line)
    measured, forecast = re.search(rf"({NUMBER}) / ({NUMBER})", ours).groups()
    assert float(measured.replace(",", "")) > 0 and float(forecast.replace(",", "")) > 0, ours
    assert "losses fall" in ours and "× the reference" in ours
    for line in rows(dry_run.stdout, "memory_forecast"):
        cells = re.findall(rf"({NUMBER}|-) / ({NUMBER}|-)", line)
        assert len(cells) == 4, line   # tokens/s, MFU, peak and model states: measured / forecast
        assert re.search(r"peak \d+\.\d\d× forecast", line), line


def test_every_gpu_test_lives_in_a_test_gpu_file():
    """gpu-check collects tests/test_gpu*.py only: a gpu mark elsewhere would never run there."""
    for path in (REPO / "tests").glob("test_*.py"):
        if path.name.startswith("test_gpu"):
            continue
        marks = [node for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Attribute) and node.attr == "gpu"
                 and isinstance(node.value, ast.Attribute) and node.value.attr == "mark"]
        assert not marks, f"{path.name} marks a test gpu: move it to tests/test_gpu*.py"


def test_make_target_runs_the_check():
    result = subprocess.run(["make", "-n", "gpu-check"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "bench/gpu_check.py" in result.stdout, result.stdout + result.stderr

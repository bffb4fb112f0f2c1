"""`scaleplan plan --software`: the training stack's efficiencies on the GPU's generation reach the
forecast (NeMo's GEMMs and overlapped TP run an H100 layout faster than PyTorch-native kernels, which
run it faster than 2023's), and leave other generations alone."""
from __future__ import annotations

import pytest

from tests.test_cli_plan import fails
from tests.test_cli_plan_frontier import plan_json

ONE_LAYOUT = ["--params", "7e10", "--gpus", "512", "--seq-len", "8192",
              "--layout", "dp=16,tp=8,pp=4,zero=1,mb=1,sp=true"]


def tokens_per_s(capsys, gpu: str, software: str) -> float:
    return plan_json(capsys, *ONE_LAYOUT, "--gpu", gpu, "--software", software)[0]["tokens_per_s"]


def test_software_changes_the_h100_forecast(capsys):
    old, current, nemo = (tokens_per_s(capsys, "h100-sxm", name) for name in ("2023", "current", "nemo"))
    assert old < current < nemo


def test_software_of_another_generation_changes_nothing(capsys):
    assert tokens_per_s(capsys, "a100-80gb", "nemo") == pytest.approx(tokens_per_s(capsys, "a100-80gb", "current"))


def test_unknown_software_is_one_line(capsys):
    assert "--software" in fails(capsys, *ONE_LAYOUT, "--software", "jax")

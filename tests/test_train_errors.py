"""Bad input to launch/train.py: exit code 2 and one line naming the problem, before any training."""
import pytest

from tests.helpers import TINY, run_train, write_tiny_corpus


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("data"))


def one_line_error(args, cwd):
    result = run_train(args, cwd=cwd, check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("override,fragment", [
    ("train.nosuch=1", "unknown key 'train.nosuch'"),
    ("optim.lr=fast", "optim.lr"),
    ("parallel.micro_batch=3", "not divisible by parallel.micro_batch 3"),
    ("data.dir=/no/such/dir", "/no/such/dir"),
    ("checkpoint.resume=/no/ckpt", "checkpoint.resume"),
])
def test_bad_override(tmp_path, data, override, fragment):
    line = one_line_error([*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path}", override], tmp_path)
    assert fragment in line


def test_config_that_is_not_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n  d_model: 3")
    assert "not valid YAML" in one_line_error(["--config", str(bad)], tmp_path)


def test_config_that_is_not_a_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    assert "not a YAML mapping" in one_line_error(["--config", str(bad)], tmp_path)


def test_missing_config_file(tmp_path):
    assert "config file not found" in one_line_error(["--config", str(tmp_path / "none.yaml")], tmp_path)


def test_unknown_flag(tmp_path):
    assert "--frobnicate" in one_line_error(["--frobnicate"], tmp_path)

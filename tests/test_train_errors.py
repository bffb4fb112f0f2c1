"""Bad input to launch/train.py: exit code 2 and one line naming the problem, before any training."""
import pytest

import launch.train
from tests.helpers import TINY, run_train, write_tiny_corpus

# Checked once a process group exists (each rank reads the checkpoint): run in a worker process.
AFTER_THE_GROUP = {"checkpoint.resume=/no/ckpt"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("data"))


def one_line_error(args, cwd, env=None, real_process=False):
    result = run_train(args, cwd=cwd, check=False, timeout=120, env=env, real_torchrun=real_process)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def one_line_error_before_any_group(args, cwd, monkeypatch, capsys, world_size=None):
    """`launch.train.main(args)` in this process, as a rank of a `world_size` job: exit code 2 and
    one line on stderr, raised before a process group would be made (reaching it fails the test)."""
    def no_group(*args, **kwargs):
        raise AssertionError("the error was not raised before init_distributed")

    monkeypatch.setattr(launch.train, "init_distributed", no_group)
    monkeypatch.chdir(cwd)
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    if world_size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", str(world_size))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        launch.train.main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("override,fragment", [
    ("train.nosuch=1", "unknown key 'train.nosuch'"),
    ("optim.lr=fast", "optim.lr"),
    ("parallel.micro_batch=3", "not divisible by parallel.micro_batch 3"),
    ("data.dir=/no/such/dir", "/no/such/dir"),
    ("checkpoint.resume=/no/ckpt", "checkpoint.resume"),
    # layouts that cannot run, refused before any process group exists
    ("parallel.dp_replicate=3", "dp_replicate 3 does not divide the 1 data-parallel ranks"),
    ("parallel.tp=2", "tp 2 × parallel.pp 1 does not divide the 1 ranks"),
])
def test_bad_override(tmp_path, data, monkeypatch, capsys, override, fragment):
    args = [*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path}", override]
    if override in AFTER_THE_GROUP:
        line = one_line_error(args, tmp_path)
    else:
        line = one_line_error_before_any_group(args, tmp_path, monkeypatch, capsys)
    assert fragment in line


@pytest.mark.parametrize("overrides,nproc,fragment", [
    (["parallel.backend=fsdp", "parallel.dp_replicate=1", "parallel.dp_shard=4"], 2,
     "dp_replicate 1 × dp_shard 4 × cp 1 × tp 1 × pp 1 = 4 ranks, but the world has 2"),
    (["parallel.backend=ddp", "parallel.zero_stage=3"], 2, "parallel.backend=ddp runs zero_stage 0, not 3"),
    (["parallel.backend=fsdp", "parallel.dp_shard=3"], 2, "dp_shard 3 does not divide the 2 data-parallel ranks"),
    (["parallel.backend=ddp", "parallel.zero_stage=1"], 2, "for zero_stage 1 use backend fsdp or deepspeed"),
    (["parallel.backend=deepspeed", "parallel.dp_replicate=2"], 2, "HSDP runs on backend fsdp"),
    # model-parallel layouts that do not fit the model
    (["parallel.tp=4", "model.n_heads=2"], 4, "tp=4 does not divide the 2 attention heads"),
    (["parallel.tp=2", "model.arch=llama", "model.n_heads=4", "model.n_kv_heads=1"], 2,
     "tp=2 does not divide the 1 key/value heads"),
    (["parallel.tp=4", "model.n_heads=4", "model.ffn_hidden=126"], 4, "tp=4 does not divide the FFN width 126"),
    (["parallel.pp=4"], 4, "pp=4 × vpp=1 is more pipeline stages than the 2 layers"),
    (["parallel.pp=2", "parallel.pp_schedule=interleaved", "parallel.vpp=2"], 2,
     "pp=2 × vpp=2 is more pipeline stages than the 2 layers"),
    (["parallel.vpp=2", "parallel.pp=2"], 2, "vpp=2 needs pp_schedule=interleaved or zero_bubble"),
    (["parallel.sequence_parallel=true"], 1, "sequence_parallel needs tp > 1"),
    (["parallel.backend=deepspeed", "parallel.tp=2"], 2, "deepspeed runs data parallelism only"),
    (["parallel.backend=deepspeed", "parallel.zero_stage=2", "parallel.pp=2"], 2, "deepspeed runs data parallelism only"),
    (["parallel.pp=2", "model.tie_embeddings=true"], 2, "set it false for parallel.pp > 1"),
    (["parallel.pp=2", "train.global_batch=4", "parallel.micro_batch=4"], 2, "needs at least 2 micro-batches per step"),
])
def test_bad_layout_exits_before_any_process_group(tmp_path, data, monkeypatch, capsys, overrides, nproc,
                                                   fragment):
    """What each rank of a `torchrun --nproc_per_node=N` job does (the world size read from the
    environment torchrun sets): one line and exit 2, before it would wait for the others."""
    line = one_line_error_before_any_group([*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path}", *overrides],
                                           tmp_path, monkeypatch, capsys, world_size=nproc)
    assert fragment in line


def test_bad_layout_under_torchrun(tmp_path, data):
    """Each rank that gets to speak says the same line, and nothing of ours prints a traceback
    (torchrun adds its own report of the failed workers)."""
    result = run_train([*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path}", "parallel.backend=ddp",
                        "parallel.zero_stage=1"], nproc=2, cwd=tmp_path, check=False, timeout=120,
                       real_torchrun=True)
    # (torchrun's own log lines may land between ours: count the message, not lines; and once the first
    # rank has failed, torchrun may stop the other before it says anything)
    assert result.returncode != 0 and result.stderr.count("for zero_stage 1 use backend fsdp or deepspeed") >= 1, \
        result.stderr[-2000:]
    assert "[rank0]" not in result.stderr and "exitcode  : 2" in result.stderr


def test_deepspeed_missing_is_one_line(tmp_path, data, monkeypatch, capsys):
    import sys

    from launch.train import main as train_main

    monkeypatch.setitem(sys.modules, "deepspeed", None)   # `import deepspeed` now fails, as where it is absent
    with pytest.raises(SystemExit) as exit_info:
        train_main([*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path}", "parallel.backend=deepspeed"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DeepSpeed is not installed: `pip install deepspeed`" in err


def test_config_that_is_not_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n  d_model: 3")
    assert "not valid YAML" in one_line_error(["--config", str(bad)], tmp_path, real_process=True)


def test_config_that_is_not_a_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    assert "not a YAML mapping" in one_line_error(["--config", str(bad)], tmp_path)


def test_missing_config_file(tmp_path):
    assert "config file not found" in one_line_error(["--config", str(tmp_path / "none.yaml")], tmp_path)


def test_unknown_flag(tmp_path):
    assert "--frobnicate" in one_line_error(["--frobnicate"], tmp_path, real_process=True)

import pytest
from pydantic import ValidationError

from planner.errors import UserError
from trainer.config import PRESETS_DIR, load_config, parse_override


def test_every_preset_loads():
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    assert {"default", "gpt2-124m", "llama-1b", "llama-8b"} <= set(names)
    for name in names:
        load_config(PRESETS_DIR / f"{name}.yaml")


def test_overrides_are_typed_by_the_schema():
    cfg = load_config(PRESETS_DIR / "default.yaml",
                      ["train.steps=7", "optim.lr=1e-3", "log.tensorboard=false", "model.n_kv_heads=null"])
    assert cfg.train.steps == 7 and isinstance(cfg.train.steps, int)
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.log.tensorboard is False and cfg.model.n_kv_heads is None


@pytest.mark.parametrize("override,fragment", [
    ("train.stpes=3", "train.stpes"),
    ("train.steps=many", "train.steps"),
    ("nosuch.key=1", "nosuch"),
    ("model.arch=mamba", "model.arch"),
])
def test_bad_overrides_name_the_field(override, fragment):
    with pytest.raises(ValidationError) as error:
        load_config(PRESETS_DIR / "default.yaml", [override])
    assert fragment in str(error.value)


def test_malformed_override():
    with pytest.raises(UserError, match="section.key=value"):
        parse_override("train.steps")


def test_batch_arithmetic():
    cfg = load_config(None, ["train.global_batch_tokens=4096", "model.seq_len=128", "train.micro_batch=8"])
    assert cfg.global_batch == 32 and cfg.tokens_per_step == 4096
    assert cfg.grad_accum_steps(2) == 2
    assert cfg.grad_accum_steps(4) == 1
    with pytest.raises(UserError, match="multiple of 24"):
        cfg.grad_accum_steps(3)


def test_batch_tokens_must_be_whole_sequences():
    with pytest.raises(ValidationError, match="multiple of model.seq_len"):
        load_config(None, ["train.global_batch_tokens=1000", "model.seq_len=128"])


def test_heads_must_divide_width():
    with pytest.raises(ValidationError, match="not divisible by n_heads"):
        load_config(None, ["train.global_batch=8", "model.d_model=100", "model.n_heads=3"])

import pytest

from trainer.config import OptimConfig
from trainer.model import Transformer
from trainer.config import ModelConfig
from trainer.optim import build_optimizer, lr_at


def test_warmup_then_cosine_to_floor():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1, schedule="cosine")
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(55, 100, cfg) == pytest.approx(0.55)  # halfway through the cosine: midpoint
    assert lr_at(100, 100, cfg) == pytest.approx(0.1)


def test_wsd_holds_then_decays_linearly():
    cfg = OptimConfig(lr=1.0, warmup_steps=0, min_lr_ratio=0.0, schedule="wsd", decay_fraction=0.2)
    assert lr_at(79, 100, cfg) == 1.0
    assert lr_at(90, 100, cfg) == pytest.approx(0.5)
    assert lr_at(100, 100, cfg) == pytest.approx(0.0)


def test_constant():
    cfg = OptimConfig(lr=0.3, warmup_steps=0, schedule="constant")
    assert {lr_at(s, 50, cfg) for s in range(50)} == {0.3}


def test_no_weight_decay_on_norms_and_biases():
    model = Transformer(ModelConfig(n_layers=1, d_model=32, n_heads=2, seq_len=8, bias=True))
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.1))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    assert optimizer.defaults["betas"] == (0.9, 0.95)

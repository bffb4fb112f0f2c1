import pytest

from parallel.layout import Layout
from trainer.config import ModelConfig


def test_layout_sizes():
    layout = Layout(dp_replicate=2, dp_shard=4, tp=2, pp=2)
    assert layout.dp == 8 and layout.world_size == 32
    layout.validate(32, ModelConfig(n_heads=4, n_layers=4))


def test_layout_names_every_factor_that_does_not_divide():
    model = ModelConfig(d_model=96, n_heads=6, n_kv_heads=3, n_layers=5)
    with pytest.raises(ValueError) as error:
        Layout(dp_replicate=2, tp=2, pp=2).validate(16, model)
    message = str(error.value)
    assert "= 8 ranks, but the world has 16" in message
    assert "tp=2 does not divide the 3 key/value heads" in message
    assert "layers" not in message      # 5 layers on 2 stages: a balanced uneven cut, not a problem
    assert "attention heads" not in message  # 6 heads divide by 2

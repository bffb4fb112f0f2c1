import pytest
import torch

from planner.model_spec import ModelSpec, count_params, flops_per_token
from trainer.config import PRESETS_DIR, ModelConfig, load_config
from trainer.model import Transformer


def built_params(cfg: ModelConfig, meta: bool = False) -> int:
    with torch.device("meta" if meta else "cpu"):
        model = Transformer(cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
def test_planner_count_equals_built_model_for_every_preset(preset):
    cfg = load_config(PRESETS_DIR / f"{preset}.yaml").model
    assert count_params(cfg.spec()) == built_params(cfg, meta=True)


@pytest.mark.parametrize("fields", [
    dict(arch="gpt"), dict(arch="gpt", bias=True), dict(arch="gpt", tie_embeddings=True),
    dict(arch="llama"), dict(arch="llama", n_kv_heads=2), dict(arch="llama", bias=True, ffn_hidden=300),
])
def test_planner_count_equals_built_model_for_variants(fields):
    cfg = ModelConfig(n_layers=2, d_model=64, n_heads=4, seq_len=16, **fields)
    assert count_params(cfg.spec()) == built_params(cfg)


def test_forward_shapes_and_initial_loss_near_uniform():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, d_model=64, n_heads=4, seq_len=16, arch="llama", n_kv_heads=2)
    model = Transformer(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 16))
    assert model(idx).shape == (3, 16, cfg.vocab_size)
    loss = model(idx, idx).item()
    assert abs(loss - torch.log(torch.tensor(256.0)).item()) < 0.3


def test_meta_build_then_materialize_matches_eager_init():
    cfg = ModelConfig(n_layers=2, d_model=64, n_heads=4, seq_len=16, arch="llama")
    eager = Transformer(cfg)
    torch.manual_seed(3)
    eager.init_weights()
    with torch.device("meta"):
        lazy = Transformer(cfg)
    lazy.to_empty(device="cpu")
    torch.manual_seed(3)
    lazy.init_weights()
    idx = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(eager(idx), lazy(idx))


def test_flops_per_token_is_six_n_plus_attention():
    spec = ModelSpec(arch="gpt", n_layers=12, d_model=768, n_heads=12, vocab_size=50304, seq_len=1024,
                     tie_embeddings=True)
    n_params = count_params(spec)
    positions = 1024 * 768
    norms = (2 * 12 + 1) * 768
    # Independent: 6 per weight of every matrix multiply (all but positions and norms) + 12·L·T·d.
    expected = 6 * (n_params - positions - norms) + 12 * 12 * 1024 * 768
    assert flops_per_token(spec) == pytest.approx(expected, rel=1e-12)


def test_tied_embeddings_stay_tied_when_built_on_meta():
    """The trainer builds on the meta device, materializes with `to_empty` and then initializes:
    the head must still be the embedding, and the parameter count the planner's."""
    import torch

    from planner.model_spec import count_params
    from trainer.config import ModelConfig
    from trainer.model import Transformer

    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, seq_len=32, vocab_size=256, tie_embeddings=True)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    assert model.output.weight is model.tok_embeddings.weight
    assert sum(p.numel() for p in model.parameters()) == count_params(cfg.spec())

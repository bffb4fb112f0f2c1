"""Must-show 2: activation bytes predicted for the trainer's model (no recompute, TP = 1) match the
bytes of the tensors autograd saves for backward, measured with saved_tensors_hooks, to 10 %."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from planner.layout.activations import (embedding_bytes, head_bytes, layer_activation_bytes,  # noqa: E402
                                        logits_bytes)
from planner.layout.model_states import compute_bytes  # noqa: E402

# Sizes chosen so no activation shape equals a weight shape (B·T = 60 is no model dimension):
# under autocast the cached 16-bit weight copies (saved transposed) are told apart by shape.
BATCH = 3
MODELS = {
    "gpt": dict(arch="gpt", n_layers=3, d_model=64, n_heads=4, vocab_size=96, seq_len=20),
    "llama-gqa": dict(arch="llama", n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, vocab_size=96,
                      seq_len=20),
    "gpt-long": dict(arch="gpt", n_layers=2, d_model=32, n_heads=4, vocab_size=50, seq_len=96),
}


def measure_saved_bytes(model_fields: dict, precision: str, weight_copies: dict | None = None) -> int:
    """Unique storages autograd saves during one forward with targets, excluding parameters,
    buffers and autocast's cached weight copies (collected into `weight_copies` when given)."""
    from trainer.config import ModelConfig
    from trainer.model import Transformer

    torch.manual_seed(0)
    cfg = ModelConfig(**model_fields)
    model = Transformer(cfg)
    owned = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    weight_shapes = {shape for p in model.parameters() for shape in (tuple(p.shape), tuple(p.shape)[::-1])}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        is_weight_copy = tensor.dtype != torch.float32 and tuple(tensor.shape) in weight_shapes
        if storage.data_ptr() not in owned and not is_weight_copy:
            saved[storage.data_ptr()] = storage.nbytes()
        elif is_weight_copy and weight_copies is not None:
            weight_copies[storage.data_ptr()] = storage.nbytes()
        return tensor

    idx = torch.randint(0, cfg.vocab_size, (BATCH, cfg.seq_len))
    targets = torch.randint(0, cfg.vocab_size, (BATCH, cfg.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if precision == "fp32":
            loss = model(idx, targets)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(idx, targets)
    assert loss.requires_grad
    return sum(saved.values())


def predicted_saved_bytes(model_fields: dict, precision: str) -> float:
    """Saved-for-backward bytes of the whole model (one stage, TP = 1, no recompute) as the planner
    counts them: layers + embedding ids + final norm/head input/targets + log-softmax."""
    from trainer.config import ModelConfig

    spec = ModelConfig(**model_fields).spec()
    act = compute_bytes(precision)
    residual = 4.0   # the trainer keeps fp32 parameters, so the residual stream stays fp32
    layer = layer_activation_bytes(spec, BATCH, 1, False, 0, act, residual)["stored"]
    return float(spec.n_layers * layer + embedding_bytes(spec, BATCH)
                 + head_bytes(spec, BATCH, 1, False, act, residual)
                 + logits_bytes(spec, BATCH, 1, act)["saved"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_activation_bytes_match_saved_tensors(name, precision):
    measured = measure_saved_bytes(MODELS[name], precision)
    predicted = predicted_saved_bytes(MODELS[name], precision)
    assert predicted == pytest.approx(measured, rel=0.10), (measured, predicted)


def test_math_attention_term_is_what_flash_avoids():
    """The s×s term (Korthikanti's 5as²b without dropout) is absent under flash attention and
    present under math attention; the measured model (flash kernel on CPU) matches flash."""
    from trainer.config import ModelConfig

    fields = MODELS["gpt-long"]
    spec = ModelConfig(**fields).spec()
    flash = layer_activation_bytes(spec, BATCH, 1, False, 0, 4, 4, "flash")["stored"]
    math = layer_activation_bytes(spec, BATCH, 1, False, 0, 4, 4, "math")["stored"]
    assert math - flash == pytest.approx(4 * spec.n_heads * spec.seq_len ** 2 * BATCH)
    measured = measure_saved_bytes(fields, "fp32")
    assert abs(predicted_saved_bytes(fields, "fp32") - measured) < 0.5 * float(math - flash) * spec.n_layers


@pytest.mark.parametrize("name", ["gpt", "llama-gqa"])
def test_autocast_weight_copies_match_compute_copies(name):
    """DDP under bf16 autocast: the 16-bit copies of the Linear weights autocast caches for the
    backward are the `compute_copies` the planner adds to the weights."""
    from planner.layout.model_states import detailed_model_states, matmul_params_on_stage
    from trainer.config import ModelConfig

    copies: dict[int, int] = {}
    measure_saved_bytes(MODELS[name], "bf16", copies)
    spec = ModelConfig(**MODELS[name]).spec()
    predicted = detailed_model_states(0, 1, 0, 0, "bf16", 0, matmul_params_on_stage(spec, 1, 1, 0))
    assert float(predicted["compute_copies"]) == pytest.approx(sum(copies.values()), rel=0.02)

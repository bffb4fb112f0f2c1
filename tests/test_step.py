import copy

import torch

from trainer.config import ModelConfig, PrecisionConfig, OptimConfig
from trainer.model import Transformer
from trainer.optim import build_optimizer
from trainer.precision import Precision
from trainer.engines.torch_engine import TorchEngine
from trainer.engines import StepRequest

CPU = torch.device("cpu")


def train_step(engine, micro_batches, grad_clip):
    """One optimizer step: (mean loss, grad norm, skipped)."""
    result = engine.train_step(micro_batches, StepRequest(grad_clip=grad_clip))
    return result.loss, result.grad_norm, result.skipped


def tiny_model():
    torch.manual_seed(0)
    return Transformer(ModelConfig(n_layers=2, d_model=32, n_heads=2, seq_len=16))


def batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    window = torch.randint(0, 256, (n, 17), generator=g)
    return window[:, :-1], window[:, 1:]


def test_accumulation_equals_one_big_batch():
    x, y = batch(8)
    results = []
    for n_micro in (1, 4):
        model = tiny_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # Adam would amplify ~0 gradients
        micro = list(zip(x.chunk(n_micro), y.chunk(n_micro)))
        loss, norm, _ = train_step(TorchEngine(model, optimizer, Precision(PrecisionConfig(), "cpu")), micro, 1.0)
        results.append((loss, norm, [p.detach().clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_loss_falls_on_a_repeated_batch():
    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig(lr=3e-3))
    precision = Precision(PrecisionConfig(), "cpu")
    x, y = batch(4)
    losses = [train_step(TorchEngine(model, optimizer, precision), [(x, y)], 1.0)[0].item() for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def test_gradient_clipping_bounds_the_update():
    model = tiny_model()
    before = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = batch(4)
    _, norm, _ = train_step(TorchEngine(model, optimizer, Precision(PrecisionConfig(), "cpu")), [(x, y)], 0.01)
    moved = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(model.parameters(), before.parameters())))
    assert norm.item() > 0.01 and moved.item() <= 0.01 * 1.0001


def test_bf16_and_fp16_steps_stay_finite_and_keep_fp32_params():
    for dtype in ("bf16", "fp16"):
        model = tiny_model()
        optimizer = build_optimizer(model, OptimConfig())
        precision = Precision(PrecisionConfig(dtype=dtype), "cpu")
        x, y = batch(4)
        for _ in range(3):
            loss, norm, _ = train_step(TorchEngine(model, optimizer, precision), [(x, y)], 1.0)
        assert torch.isfinite(loss) and all(p.dtype == torch.float32 for p in model.parameters())
        assert (precision.scaler is not None) == (dtype == "fp16")


def test_fp16_overflow_skips_the_step_and_lowers_the_scale():
    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig())
    precision = Precision(PrecisionConfig(dtype="fp16", initial_loss_scale=2.0**60), "cpu")
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch(4)
    train_step(TorchEngine(model, optimizer, precision), [(x, y)], 1.0)
    assert precision.scaler.get_scale() < 2.0**60
    for a, b in zip(model.parameters(), before):
        torch.testing.assert_close(a.detach(), b)

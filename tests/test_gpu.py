"""GPU checks: bf16 training steps with the fused optimizer and SDPA kernels, and MFU reporting."""
import pytest
import torch

from trainer.config import ModelConfig, OptimConfig, PrecisionConfig
from trainer.metrics import peak_flops_per_device
from trainer.model import Transformer
from trainer.optim import build_optimizer
from trainer.precision import Precision
from trainer.engines.torch_engine import TorchEngine
from trainer.engines import StepRequest

pytestmark = pytest.mark.gpu


def test_bf16_steps_on_cuda_learn_and_keep_fp32_master_weights():
    device = torch.device("cuda", 0)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(arch="llama", n_layers=2, d_model=128, n_heads=4, n_kv_heads=2,
                                    seq_len=64)).to(device)
    optimizer = build_optimizer(model, OptimConfig(lr=3e-3))
    precision = Precision(PrecisionConfig(dtype="bf16"), "cuda")
    window = torch.randint(0, 256, (8, 65), device=device)
    losses = [TorchEngine(model, optimizer, precision).train_step([(window[:, :-1], window[:, 1:])], StepRequest(grad_clip=1.0)).loss.item()
              for _ in range(20)]
    assert losses[-1] < 0.7 * losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert optimizer.defaults["fused"]


def test_known_gpus_have_a_peak_for_mfu():
    name = torch.cuda.get_device_name(0)
    if not any(key in name for key in ("A100", "H100", "H200", "B200", "L40S", "A10", "V100")):
        pytest.skip(f"{name} is not in the catalog")
    assert peak_flops_per_device(torch.device("cuda", 0), "bf16") > 1e13


@pytest.mark.parametrize("layout", ["ddp", "fsdp", "fsdp_zero2", "zero1", "zero2", "zero3"])
def test_one_gpu_layouts_train_in_bf16_on_nccl(tmp_path, layout):
    """Each backend on one GPU (NCCL, bf16): it trains, and the model-state bytes it holds are the
    planner's forecast (plan.json) to 5 %."""
    import json

    from tests.helpers import DEEPSPEED_MISSING, LAYOUTS, TINY, run_train, step_losses, write_tiny_corpus

    if DEEPSPEED_MISSING and layout.startswith("zero"):
        pytest.skip("DeepSpeed is not installed")
    data = write_tiny_corpus(tmp_path / "data")
    overrides = [o for o in LAYOUTS[layout][1] if "dp_" not in o]
    run_train([*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path / 'runs'}", "train.steps=12",
               "precision.dtype=bf16", "model.arch=llama", "model.d_model=128", "model.n_heads=4",
               "parallel.deepspeed.zero_optimization.stage3_param_persistence_threshold=0", *overrides,
               "train.name=gpu"])
    run_dir = tmp_path / "runs" / "gpu"
    losses = step_losses(run_dir)
    assert losses[12] < losses[1]
    measured = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["model_states_gib"]
    predicted = json.loads((run_dir / "plan.json").read_text())["model_states_gib"]
    assert measured == pytest.approx(predicted, rel=0.05), (measured, predicted)


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_compiled_blocks_train_in_bf16(tmp_path, recompute):
    """World size 1, bf16, torch.compile on every block, each recompute mode: it trains."""
    from tests.helpers import TINY, run_train, step_losses, write_tiny_corpus

    data = write_tiny_corpus(tmp_path / "data")
    run_train([*TINY, f"data.dir={data}", f"train.runs_dir={tmp_path / 'runs'}", "train.steps=12",
               "precision.dtype=bf16", "model.arch=llama", "model.d_model=128", "model.n_heads=4",
               "parallel.compile=true", f"parallel.recompute={recompute}", "train.name=compiled"], timeout=900)
    losses = step_losses(tmp_path / "runs" / "compiled")
    assert losses[12] < losses[1]

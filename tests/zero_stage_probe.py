"""Run under torchrun with 4 ranks: what FSDP2 holds after each micro-batch's backward at ZeRO stages
1, 2 and 3, in the torch engine (4 data-parallel ranks) and in a pipeline's schedule (2 stages × 2
data-parallel ranks). Prints one JSON object: per path and stage, one record per micro-batch.

Seen through the model's own attributes: a block's weight is a plain tensor while FSDP keeps it
gathered and a DTensor shard once resharded; the gathered weight's `.grad` is the whole gradient
still waiting to be reduced (None once reduce-scattered into the shard), the shard's `.grad` the
reduced one."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

from parallel.layout import Layout  # noqa: E402
from parallel.mesh import build_mesh  # noqa: E402
from parallel.parallelize import parallelize  # noqa: E402
from trainer.config import ModelConfig, PrecisionConfig  # noqa: E402
from trainer.engines import StepRequest  # noqa: E402
from trainer.engines.pipeline_engine import PipelineEngine  # noqa: E402
from trainer.engines.torch_engine import TorchEngine  # noqa: E402
from trainer.model import Transformer  # noqa: E402
from trainer.precision import Precision  # noqa: E402

MODEL = dict(arch="gpt", n_layers=4, d_model=32, n_heads=2, vocab_size=64, seq_len=16)
N_MICRO, BATCH = 4, 2


def held(block: torch.nn.Module) -> dict:
    weight = next(block.parameters())
    sharded = isinstance(weight, DTensor)
    return {"gathered": not sharded, "whole_grad": not sharded and weight.grad is not None,
            "shard_grad": sharded and weight.grad is not None}


def run(layout: Layout) -> list[dict]:
    """Train one step of N_MICRO micro-batches under `layout`, recording the first local block after each backward."""
    device = torch.device("cpu")
    mesh = build_mesh(layout, device)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**MODEL))
    parallel = parallelize(model, layout, "fsdp", mesh, device)
    optimizer = torch.optim.AdamW(parallel.module.parameters(), lr=1e-3)
    precision = Precision(PrecisionConfig(dtype="fp32"), "cpu", autocast=False, sharded=True)
    records: list[dict] = []
    if layout.pp > 1:
        engine = PipelineEngine(parallel, optimizer, precision, layout, N_MICRO, mesh, device)
        stage = engine.schedule._stage   # the one stage of this rank under 1F1B
        block = next(iter(parallel.stages[0].layers.values()))
        backward = stage.backward_maybe_with_nosync

        def recorded(*args, **kwargs):
            result = backward(*args, **kwargs)
            records.append(held(block))
            return result

        stage.backward_maybe_with_nosync = recorded
    else:
        engine = TorchEngine(parallel, optimizer, precision, BATCH, zero_stage=layout.zero_stage)
        block = next(iter(parallel.module.layers.values()))
        backward = engine.backward
        engine.backward = lambda loss: (backward(loss), records.append(held(block)))
    tokens = torch.randint(0, MODEL["vocab_size"], (N_MICRO, BATCH, MODEL["seq_len"] + 1),
                           generator=torch.Generator().manual_seed(dist.get_rank()))
    engine.train_step([(window[:, :-1], window[:, 1:]) for window in tokens], StepRequest(grad_clip=1.0))
    records.append({**held(block), "after_step": True})
    return records


def main() -> None:
    dist.init_process_group("gloo")
    results = {}
    for stage in (1, 2, 3):
        results[f"fsdp_zero{stage}"] = run(Layout(dp_shard=4, zero_stage=stage, micro_batch=BATCH))
        results[f"fsdp_pp_zero{stage}"] = run(Layout(dp_shard=2, pp=2, zero_stage=stage, micro_batch=BATCH))
    if dist.get_rank() == 0:
        print("ZERO_STAGES " + json.dumps(results), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

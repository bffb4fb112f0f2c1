"""Must-show 1: model-state bytes per rank predicted by the `detailed` memory model equal the bytes
of the parameter, gradient and optimizer-state tensors measured on each rank after a real step of
the trainer (DDP over gloo, 2 and 4 processes, fp32 and bf16 autocast), to 2 %.

FSDP2 and DeepSpeed ZeRO are not trainer backends yet; their accounting is checked the same way on
the trainer's model: FSDP2 as `fully_shard` per block and at the root (the torchtitan recipe), and
DeepSpeed ZeRO-1/2/3 through `deepspeed.initialize` on its CPU accelerator, both in bf16.
"""
from __future__ import annotations

import json
import os
import socket

import pytest

from parallel.layout import Layout
from planner.hardware import CATALOG
from planner.layout.candidates import LayoutArrays
from planner.layout.memory import stage_memory
from planner.layout.inputs import PlanInputs

TINY_MODEL = dict(arch="gpt", n_layers=2, d_model=64, n_heads=4, vocab_size=256, seq_len=32)
TINY_LLAMA = dict(arch="llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, vocab_size=256, seq_len=32)
PRECISIONS = ("fp32", "bf16")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tensor_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (gradients are views into DDP's buckets)."""
    storages = {}
    for t in tensors:
        if t is not None:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


def _worker(rank: int, world: int, port: int, out_dir: str, model_fields: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch
    import torch.distributed as dist

    from parallel.mesh import build_mesh
    from parallel.parallelize import parallelize
    from trainer.config import ModelConfig, OptimConfig, PrecisionConfig
    from trainer.model import Transformer
    from trainer.optim import build_optimizer
    from trainer.precision import Precision
    from trainer.engine import TorchEngine
from trainer.step import train_step

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    device = torch.device("cpu")
    results = {}
    try:
        for dtype in PRECISIONS:
            torch.manual_seed(0)
            cfg = ModelConfig(**model_fields)
            layout = Layout(dp_replicate=world, micro_batch=2)
            model = parallelize(Transformer(cfg), layout, build_mesh(layout, device), device)
            optimizer = build_optimizer(model, OptimConfig(), "cpu")
            precision = Precision(PrecisionConfig(dtype=dtype), "cpu")
            batch = [(torch.randint(0, cfg.vocab_size, (2, cfg.seq_len)),
                      torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))) for _ in range(2)]
            train_step(TorchEngine(model, optimizer, precision), batch, 2, 1.0, device)   # one real step
            # The step ends with zero_grad(set_to_none); the next backward is when gradients,
            # parameters and optimizer states are all alive, as at every step's peak.
            with precision.autocast():
                loss = model(*batch[0])
            precision.backward(loss)
            params = list(model.parameters())
            states = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
            results[dtype] = {"params": _tensor_bytes(params),
                              "gradients": _tensor_bytes([p.grad for p in params]),
                              "optimizer": _tensor_bytes(states)}
            del model, optimizer
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)


def _predicted(model_fields: dict, world: int, precision: str) -> float:
    from trainer.config import ModelConfig

    spec = ModelConfig(**model_fields).spec()
    inputs = PlanInputs(spec, CATALOG["h100-sxm"], world, global_batch=4 * world, precision=precision,
                        backend="ddp")
    layouts = LayoutArrays.from_layouts([Layout(dp_replicate=world, micro_batch=2)], "ddp")
    return float(stage_memory(inputs, layouts, 0)["model_state_tensors"][0])


@pytest.mark.parametrize("world,model_fields", [(2, TINY_MODEL), (4, TINY_LLAMA)], ids=["2proc-gpt", "4proc-llama"])
def test_ddp_model_states_match_measurement(tmp_path, world, model_fields):
    import torch.multiprocessing as mp

    import torch._dynamo  # noqa: F401  (DDP imports it on first use: ~3 s, paid once here)

    import parallel.parallelize, parallel.mesh, trainer.model, trainer.optim, trainer.step  # noqa: F401,E401
    # fork: the children inherit the imported torch instead of importing it again (seconds each)
    mp.start_processes(_worker, args=(world, _free_port(), str(tmp_path), model_fields), nprocs=world,
                       join=True, start_method="fork")
    for rank in range(world):
        measured = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for precision in PRECISIONS:
            m = measured[precision]
            total = m["params"] + m["gradients"] + m["optimizer"]
            predicted = _predicted(model_fields, world, precision)
            assert predicted == pytest.approx(total, rel=0.02), (rank, precision, m, predicted)
            # and part by part: fp32 parameters, fp32 gradients, two fp32 Adam moments
            assert m["gradients"] == pytest.approx(m["params"], rel=0.02)
            assert m["optimizer"] == pytest.approx(2 * m["params"], rel=0.02)


def _fsdp_worker(rank: int, world: int, port: int, out_dir: str, model_fields: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from trainer.config import ModelConfig, OptimConfig
    from trainer.model import Transformer
    from trainer.optim import build_optimizer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    try:
        mesh = init_device_mesh("cpu", (world,))
        for zero, reshard in ((3, True), (2, False)):
            torch.manual_seed(0)
            cfg = ModelConfig(**model_fields)
            model = Transformer(cfg)
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            for block in model.layers:
                fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
            fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
            optimizer = build_optimizer(model, OptimConfig(), "cpu")
            idx = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
            for _ in range(2):               # a step, then the next backward (the peak)
                optimizer.zero_grad(set_to_none=True)
                model(idx, idx).backward()
                if not optimizer.state:
                    optimizer.step()
            params = [p.to_local() for p in model.parameters()]
            grads = [p.grad.to_local() for p in model.parameters()]
            states = [v.to_local() if hasattr(v, "to_local") else v
                      for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
            results[str(zero)] = {"params": _tensor_bytes(params), "gradients": _tensor_bytes(grads),
                                  "optimizer": _tensor_bytes(states)}
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"fsdp{rank}.json"), "w") as f:
        json.dump(results, f)


@pytest.mark.parametrize("world", [2, 4])
def test_fsdp2_model_states_match_measurement(tmp_path, world):
    import torch.multiprocessing as mp

    import torch._dynamo  # noqa: F401
    import trainer.model, trainer.optim  # noqa: F401,E401
    from trainer.config import ModelConfig

    mp.start_processes(_fsdp_worker, args=(world, _free_port(), str(tmp_path), TINY_LLAMA), nprocs=world,
                       join=True, start_method="fork")
    spec = ModelConfig(**TINY_LLAMA).spec()
    inputs = PlanInputs(spec, CATALOG["h100-sxm"], world, global_batch=2 * world, precision="bf16",
                        backend="fsdp")
    for rank in range(world):
        measured = json.loads((tmp_path / f"fsdp{rank}.json").read_text())
        for zero in (3, 2):
            layouts = LayoutArrays.from_layouts([Layout(dp_shard=world, zero_stage=zero, micro_batch=2)], "fsdp")
            predicted = float(stage_memory(inputs, layouts, 0)["model_state_tensors"][0])
            m = measured[str(zero)]
            assert predicted == pytest.approx(m["params"] + m["gradients"] + m["optimizer"], rel=0.02), (zero, m)


def _deepspeed_worker(rank: int, world: int, port: int, out_dir: str, model_fields: dict) -> None:
    """DeepSpeed ZeRO-1/2/3 in bf16 on CPU: snapshot the model-state tensors after the backward and
    inside the optimizer step of the second step; the larger snapshot is the peak."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    import deepspeed
    import torch
    import torch.distributed as dist

    from trainer.config import ModelConfig
    from trainer.model import Transformer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    try:
        for stage in (1, 2, 3):
            torch.manual_seed(0)
            model = Transformer(ModelConfig(**model_fields))
            config = {"train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": True},
                      "zero_allow_untested_optimizer": True,
                      # the tiny model's tensors are all below the default 1e5-element threshold
                      # under which ZeRO-3 keeps parameters whole; shard them all, as for a big model
                      "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}}
            engine, zero_optimizer, _, _ = deepspeed.initialize(
                model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3), config=config,
                dist_init_required=False)
            snapshots = []

            def snapshot():
                module_params = list(engine.module.parameters())
                fp32 = list(getattr(zero_optimizer, "single_partition_of_fp32_groups", [])) + list(
                    getattr(zero_optimizer, "fp32_partitioned_groups_flat", []))
                grads16 = getattr(zero_optimizer, "averaged_gradients", {}) or {}
                grads16 = [g for group in (grads16.values() if isinstance(grads16, dict) else grads16)
                           for g in (group if isinstance(group, list) else [group])]
                tensors = (module_params + [p.grad for p in module_params]
                           + [getattr(p, "ds_tensor", None) for p in module_params] + fp32
                           + [t.grad for t in fp32] + grads16
                           + [v for s in zero_optimizer.optimizer.state.values() for v in s.values()])
                snapshots.append(_tensor_bytes([t for t in tensors if torch.is_tensor(t) and t.numel()]))

            inner_step = zero_optimizer.optimizer.step

            def step_and_snapshot(*args, **kwargs):
                result = inner_step(*args, **kwargs)
                snapshot()
                return result

            zero_optimizer.optimizer.step = step_and_snapshot
            idx = torch.randint(0, 256, (2, model.cfg.seq_len))
            for _ in range(2):
                engine.backward(engine(idx, idx))
                snapshot()
                engine.step()
            results[str(stage)] = max(snapshots[2:])
            del engine, zero_optimizer
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"deepspeed{rank}.json"), "w") as f:
        json.dump(results, f)


@pytest.mark.parametrize("world", [2, 4])
def test_deepspeed_zero_model_states_match_measurement(tmp_path, world):
    pytest.importorskip("deepspeed")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch.multiprocessing as mp

    import deepspeed  # noqa: F401  (imported once here, inherited by the forked ranks)
    import torch._dynamo  # noqa: F401
    import trainer.model  # noqa: F401
    from trainer.config import ModelConfig

    mp.start_processes(_deepspeed_worker, args=(world, _free_port(), str(tmp_path), TINY_MODEL),
                       nprocs=world, join=True, start_method="fork")
    spec = ModelConfig(**TINY_MODEL).spec()
    inputs = PlanInputs(spec, CATALOG["h100-sxm"], world, global_batch=2 * world, precision="bf16",
                        backend="deepspeed")
    for rank in range(world):
        measured = json.loads((tmp_path / f"deepspeed{rank}.json").read_text())
        for stage in (1, 2, 3):
            layouts = LayoutArrays.from_layouts([Layout(dp_shard=world, zero_stage=stage, micro_batch=2)],
                                                "deepspeed")
            predicted = float(stage_memory(inputs, layouts, 0)["model_state_tensors"][0])
            assert predicted == pytest.approx(measured[str(stage)], rel=0.02), (stage, measured, predicted)

"""Run under torchrun with 2 ranks: the bytes of activations autograd saves for backward on rank 0,
measured with saved_tensors_hooks, for the layouts of tests/test_activation_memory.py, beside the
planner's prediction for the same layout. Prints one JSON object."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

from parallel.context import apply_context_parallel  # noqa: E402
from parallel.layout import Layout  # noqa: E402
from parallel.pipeline import build_schedule, keep_local_stages  # noqa: E402
from parallel.recompute import apply_recompute  # noqa: E402
from parallel.tensor import apply_tensor_parallel, loss_context  # noqa: E402
from planner.layout.activations import (embedding_bytes, head_bytes, layer_activation_bytes,  # noqa: E402
                                        logits_bytes, micro_batches_in_flight)
from planner.hardware import get_gpu  # noqa: E402
from planner.layout.candidates import LayoutArrays  # noqa: E402
from planner.layout.inputs import PlanInputs  # noqa: E402
from planner.layout.memory import stage_memory  # noqa: E402
from trainer.config import ModelConfig  # noqa: E402
from trainer.model import Transformer, language_model_loss  # noqa: E402

# B·T = 120 and T = 40 are no model dimension, so autocast's cached weight copies are told apart by shape.
MODEL = dict(arch="gpt", n_layers=4, d_model=64, n_heads=4, vocab_size=96, seq_len=40)
BATCH, RECOMPUTE = 3, {"none": 0, "selective": 1, "full": 2}


class SavedBytes:
    """Bytes of the distinct storages autograd holds for backward right now, and their peak."""

    def __init__(self, model: torch.nn.Module, only_inside: torch.nn.Module | None = None):
        self.owned = {_local(t).untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        self.weight_shapes = {s for p in model.parameters() for s in (tuple(_local(p).shape), tuple(_local(p).shape)[::-1])}
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.current = self.peak = 0
        self.inside = only_inside is None
        if only_inside is not None:
            only_inside.register_forward_pre_hook(lambda *_: setattr(self, "inside", True))
            only_inside.register_forward_hook(lambda *_: setattr(self, "inside", False))

    def pack(self, tensor):
        local = _local(tensor)
        ptr = local.untyped_storage().data_ptr()
        weight_copy = local.dtype != torch.float32 and tuple(local.shape) in self.weight_shapes
        if not self.inside or ptr in self.owned or weight_copy or local.device.type == "meta":
            return tensor
        if ptr not in self.refs:
            self.sizes[ptr] = local.untyped_storage().nbytes()
            self.current += self.sizes[ptr]
            self.peak = max(self.peak, self.current)
        self.refs[ptr] = self.refs.get(ptr, 0) + 1
        return _Held(self, ptr, tensor)

    def unpack(self, packed):
        return packed.tensor if isinstance(packed, _Held) else packed

    def release(self, ptr: int) -> None:
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            del self.refs[ptr]
            self.current -= self.sizes.pop(ptr)

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class _Held:
    def __init__(self, counter: SavedBytes, ptr: int, tensor):
        self.counter, self.ptr, self.tensor = counter, ptr, tensor

    def __del__(self):
        self.counter.release(self.ptr)


def _local(tensor):
    return tensor._local_tensor if isinstance(tensor, DTensor) else tensor


def build(fields: dict) -> tuple[Transformer, ModelConfig]:
    torch.manual_seed(0)
    cfg = ModelConfig(**fields)
    return Transformer(cfg), cfg


def whole_model_prediction(cfg: ModelConfig, tp: int, sp: bool, recompute: str, act: float, res: float,
                           lean_sp: bool = False) -> float:
    spec = cfg.spec()
    layer = layer_activation_bytes(spec, BATCH, tp, sp, RECOMPUTE[recompute], act, res, lean_sp=lean_sp)["stored"]
    return float(spec.n_layers * layer + embedding_bytes(spec, BATCH)
                 + head_bytes(spec, BATCH, tp, sp, act, res, lean_sp) + logits_bytes(spec, BATCH, tp, act)["saved"])


def measure_whole(tp_mesh, sp: bool, recompute: str, lean_sp: bool = False) -> dict:
    model, cfg = build(MODEL)
    if tp_mesh is not None:
        apply_tensor_parallel(model, tp_mesh, sp, lean_sp=lean_sp)
    apply_recompute(model, "layers", recompute)
    counter = SavedBytes(model)
    idx = torch.randint(0, cfg.vocab_size, (BATCH, cfg.seq_len), generator=torch.Generator().manual_seed(1))
    with counter.hooks(), loss_context(tp_mesh is not None):
        loss = model(idx, idx)
    measured = counter.current
    del loss
    tp = tp_mesh.size() if tp_mesh is not None else 1
    return {"measured": measured, "predicted": whole_model_prediction(cfg, tp, sp, recompute, 4.0, 4.0, lean_sp)}


def saved_under_1f1b(model, stages, cfg: ModelConfig, pp_mesh, n_micro: int) -> SavedBytes:
    """What this pipeline rank saves for backward during its second 1F1B step over 2 stages (the first
    also infers shapes, holding one more graph)."""
    schedule = build_schedule(stages, pp_mesh.get_local_rank(), 2, 1, pp_mesh, torch.device("cpu"), "1f1b",
                              n_micro, lambda out, target: language_model_loss(out, target))
    idx = torch.randint(0, cfg.vocab_size, (BATCH * n_micro, cfg.seq_len), generator=torch.Generator().manual_seed(1))
    schedule.step(idx, target=idx, losses=[])
    counter = SavedBytes(model)
    with counter.hooks():
        schedule.step(idx, target=idx, losses=[])
    return counter


def measure_pipeline_first_stage(pp_mesh, n_micro: int = 4) -> dict:
    model, cfg = build(MODEL)
    model, stages = keep_local_stages(model, pp_mesh.get_local_rank(), 2, 1)
    counter = saved_under_1f1b(model, stages, cfg, pp_mesh, n_micro)
    spec = cfg.spec()
    in_flight = float(micro_batches_in_flight(0, 2, n_micro, 1, 1))
    layer = layer_activation_bytes(spec, BATCH, 1, False, 0, 4.0, 4.0)["stored"]
    predicted = in_flight * (spec.n_layers / 2 * layer + embedding_bytes(spec, BATCH))
    return {"measured": counter.peak, "predicted": float(predicted), "in_flight": in_flight}


def measure_bf16_layer() -> dict:
    """One layer under bf16 autocast with fp32 parameters (the DDP path), against Korthikanti's
    34·s·b·h and the planner's layer."""
    model, cfg = build(MODEL)
    counter = SavedBytes(model, only_inside=model.layers["1"])
    idx = torch.randint(0, cfg.vocab_size, (BATCH, cfg.seq_len), generator=torch.Generator().manual_seed(1))
    with counter.hooks(), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(idx, idx)
    measured = counter.current
    del loss
    spec = cfg.spec()
    sbh = BATCH * cfg.seq_len * cfg.d_model
    planner = float(layer_activation_bytes(spec, BATCH, 1, False, 0, 2.0, 4.0)["stored"])
    return {"measured": measured, "predicted": planner, "korthikanti_34sbh": 34 * sbh}


def measure_pipeline_cut(pp_mesh, cut: tuple[int, ...], n_micro: int = 4) -> dict:
    """The first stage of an explicit (uneven) cut under 1F1B, beside the activations the planner's
    per-stage memory gives that stage: its blocks from the same cut, its micro-batches in flight."""
    model, cfg = build({**MODEL, "n_layers": sum(cut)})
    model, stages = keep_local_stages(model, pp_mesh.get_local_rank(), 2, 1, cut)
    counter = saved_under_1f1b(model, stages, cfg, pp_mesh, n_micro)
    inputs = PlanInputs(cfg.spec(), get_gpu("h100-sxm"), n_gpus=2, global_batch=BATCH * n_micro, precision="fp32",
                        backend="ddp")
    layouts = LayoutArrays.from_layouts([Layout(pp=2, micro_batch=BATCH, pp_layers=cut)], backend="ddp")
    predicted = float(stage_memory(inputs, layouts, 0)["activations"][0])
    return {"measured": counter.peak, "predicted": predicted, "blocks": len(stages[0].layers)}


def measure_context(cp_mesh) -> dict:
    """Context parallelism over the 2 ranks: each holds 2 of the 4 chunks of every sequence, and
    attention keeps the K and V all-gathered over the cp group (the planner: per-token terms / cp,
    plus the whole sequence's K and V; the embedding, head and logits of this rank's tokens only).
    The trainer keeps about 6 % more here: attention runs once per local chunk, each call saving its
    output, and the output projection saves their concatenation (one more d_model per token)."""
    model, cfg = build(MODEL)
    context = apply_context_parallel(model, cp_mesh)
    counter = SavedBytes(model)
    idx = torch.randint(0, cfg.vocab_size, (BATCH, cfg.seq_len), generator=torch.Generator().manual_seed(1))
    with counter.hooks(), context.sharded(cfg.seq_len, idx.device):
        loss = model(context.split(idx), context.split(idx))
    measured = counter.current
    del loss
    spec, cp = cfg.spec(), cp_mesh.size()
    local = BATCH / cp   # this rank's tokens, in sequences
    layer = layer_activation_bytes(spec, BATCH, 1, False, 0, 4.0, 4.0, cp=cp)["stored"]
    predicted = (spec.n_layers * layer + embedding_bytes(spec, local) + head_bytes(spec, local, 1, False, 4.0, 4.0)
                 + logits_bytes(spec, local, 1, 4.0)["saved"])
    return {"measured": measured, "predicted": float(predicted)}


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("model",))
    results = {
        "tp2": measure_whole(mesh, False, "none"),
        "tp2_sp": measure_whole(mesh, True, "none", lean_sp=False),      # the gathered norm outputs saved
        "tp2_sp_lean": measure_whole(mesh, True, "none", lean_sp=True),  # their sequence shards saved
        "pp2_1f1b_first_stage": measure_pipeline_first_stage(mesh),
        "bf16_layer": measure_bf16_layer(),
        **{f"recompute_{mode}": measure_whole(None, False, mode) for mode in RECOMPUTE},
    }
    results["pp_uneven"] = measure_pipeline_cut(mesh, (1, 3))   # the first stage: 1 block of 4 and the embedding
    results["cp2"] = measure_context(mesh)   # rank 0: chunks 0 and 3 of each sequence
    if rank == 0:
        print("ACTIVATIONS " + json.dumps(results), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

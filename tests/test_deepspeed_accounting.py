"""Must-show 3: with DeepSpeed's accounting, model states equal DeepSpeed's own
estimate_zero2/3_model_states_mem_needs(_all_cold) for 1.3B, 7B and 70B on 8 and 64 GPUs."""
from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pytest

from parallel.layout import Layout
from planner.hardware import CATALOG
from planner.layout.candidates import LayoutArrays
from planner.layout.memory import stage_memory
from planner.layout.model_states import deepspeed_model_states, largest_layer_params
from planner.model_spec import ModelSpec, count_params
from planner.layout.inputs import PlanInputs

pytest.importorskip("deepspeed")
stage2 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")

MODELS = {   # GPT-3 XL 1.3B, Llama 2 7B and 70B shapes
    "1.3B": ModelSpec("gpt", 24, 2048, 16, 50257, 2048),
    "7B": ModelSpec("llama", 32, 4096, 32, 32000, 4096),
    "70B": ModelSpec("llama", 80, 8192, 64, 32000, 4096, n_kv_heads=8, ffn_hidden=28672),
}
GPU_COUNTS = (8, 64)


def _nodes(gpus: int) -> tuple[int, int]:
    return min(gpus, 8), max(1, gpus // 8)


def _printed_gpu_gib(function, *args, **kwargs) -> list[tuple[float, float]]:
    """(CPU GB, GPU GB) rows of the table an _all_cold function prints."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        function(*args, **kwargs)
    return [(float(cpu), float(gpu)) for cpu, gpu in re.findall(r"^\s*([\d.]+)GB \|\s*([\d.]+)GB", buffer.getvalue(), re.M)]


@pytest.mark.parametrize("gpus", GPU_COUNTS)
@pytest.mark.parametrize("name", list(MODELS))
def test_planner_model_states_equal_deepspeed(name, gpus):
    spec = MODELS[name]
    total, largest = count_params(spec), largest_layer_params(spec)
    per_node, nodes = _nodes(gpus)
    inputs = PlanInputs(spec, CATALOG["h100-sxm"], gpus, global_batch=gpus, accounting="deepspeed",
                        backend="deepspeed")
    for zero, expected in (
        (2, stage2.estimate_zero2_model_states_mem_needs(
            total, per_node, nodes, cpu_offload=False)[1]),
        (3, stage3.estimate_zero3_model_states_mem_needs(
            total, largest, per_node, nodes, cpu_offload=False, cpu_offload_params=False)[1]),
    ):
        layouts = LayoutArrays.from_layouts([Layout(dp_shard=gpus, zero_stage=zero)], "deepspeed")
        parts = stage_memory(inputs, layouts, 0)
        states = float(parts["weights"][0] + parts["gradients"][0] + parts["optimizer"][0])
        assert states == pytest.approx(expected, abs=1.0), (zero, states, expected)


@pytest.mark.parametrize("gpus", GPU_COUNTS)
@pytest.mark.parametrize("name", list(MODELS))
def test_every_offload_row_of_all_cold_tables(name, gpus):
    """Both estimators' printed tables, every offload option, row by row (printed to 0.01 GB)."""
    spec = MODELS[name]
    total, largest = count_params(spec), largest_layer_params(spec)
    per_node, nodes = _nodes(gpus)
    rows2 = _printed_gpu_gib(stage2.estimate_zero2_model_states_mem_needs_all_cold, total, per_node, nodes)
    ours2 = [deepspeed_model_states(total, largest, per_node, nodes, 2, cpu_offload=o) for o in (True, False)]
    rows3 = _printed_gpu_gib(stage3.estimate_zero3_model_states_mem_needs_all_cold, total, largest,
                             per_node, nodes)
    ours3 = [deepspeed_model_states(total, largest, per_node, nodes, 3, cpu_offload=o, cpu_offload_params=p,
                                    zero_init=z)
             for o in (True, False) for p in (True, False) if o or not p for z in (True, False)]
    for printed, ours in ((rows2, ours2), (rows3, ours3)):
        assert len(printed) == len(ours) > 0
        for (cpu_gb, gpu_gb), (cpu, gpu) in zip(printed, ours):
            assert cpu / 2**30 == pytest.approx(cpu_gb, abs=0.006)
            assert gpu / 2**30 == pytest.approx(gpu_gb, abs=0.006)


def test_exact_bytes_of_every_option():
    for spec in MODELS.values():
        total, largest = count_params(spec), largest_layer_params(spec)
        for gpus in GPU_COUNTS:
            per_node, nodes = _nodes(gpus)
            for offload in (True, False):
                assert deepspeed_model_states(total, largest, per_node, nodes, 2, cpu_offload=offload) == \
                    stage2.estimate_zero2_model_states_mem_needs(total, per_node, nodes, cpu_offload=offload)
                for params in (True, False):
                    for init in (True, False):
                        expected = stage3.estimate_zero3_model_states_mem_needs(
                            total, largest, per_node, nodes, offload, params, init)
                        assert deepspeed_model_states(total, largest, per_node, nodes, 3, offload,
                                                      params, init) == expected[:2]


def test_native_accounting_at_stage_2_is_deepspeeds_estimate():
    """Native DeepSpeed ZeRO-2 accounting is what the trainer's DeepSpeed engine holds at the step,
    2Ψ + 18Ψ/N (measured in test_model_states_per_rank): both gradient partitions, 16-bit and fp32,
    are alive, as DeepSpeed's estimator counts them."""
    spec = MODELS["7B"]
    n = count_params(spec)
    native = PlanInputs(spec, CATALOG["h100-sxm"], 64, 64, backend="deepspeed")
    layouts = LayoutArrays.from_layouts([Layout(dp_shard=64, zero_stage=2)], "deepspeed")
    parts = stage_memory(native, layouts, 0)
    states = float(parts["weights"][0] + parts["gradients"][0] + parts["optimizer"][0])
    assert states == pytest.approx(2 * n + 18 * n / 64, rel=1e-9)
    estimate = stage2.estimate_zero2_model_states_mem_needs(n, 8, 8, cpu_offload=False)[1]
    assert states == pytest.approx(estimate, rel=1e-6)
    assert np.isfinite(states)

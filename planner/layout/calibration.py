"""Published training runs, and the cost model's forecast of each with its published layout.

Every entry is a measurement someone published (paper or project docs), with the model shape, the
GPUs, the layout, the global batch and the step time (or what it follows from: tokens/s, TFLOP/s
per GPU). `compare()` runs the planner on each with exactly that layout and reports the error of the
predicted step time; tests/test_calibration.py holds every entry within 10 % and the median within
5 %, and `scaleplan plan --calibration` prints the table.

The figures (tokens per second, TFLOP/s, batch, layout) are copied from the sources named; the step
time is derived from them where the source gives throughput instead: step = tokens per step / tokens
per second, or FLOPs per step (the source's own formula) / (TFLOP/s per GPU × GPUs).
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Optional

from parallel.layout import Layout
from planner.hardware import CATALOG, GIB, GPU
from planner.layout.inputs import PlanInputs
from planner.model_spec import ModelSpec, flops_per_token

# Sources, one line each.
LLM_FOUNDRY = ("MosaicML llm-foundry, scripts/train/benchmarking/README.md (MPT training benchmarks: "
               "FSDP FULL_SHARD, amp_bf16, tokens/s and MFU per row)")
TORCHTITAN_A100 = ("torchtitan docs/performance.md, Llama 3 70B on 64 A100 80GB with FSDP2 "
                   "(local batch 1, seq 8192, full AC; WPS per GPU and MFU)")
TORCHTITAN_LLAMA2 = ("torchtitan docs/performance.md (2024 version), Llama 2 13B on 64 A100 80GB with FSDP2 "
                     "(local batch 2, seq 4096, no AC; WPS per GPU and MFU)")
NARAYANAN_2021 = ("Narayanan et al. 2021, Efficient Large-Scale Language Model Training on GPU Clusters "
                  "(SC21), Table 1: 1T GPT on 3072 A100, t=8, p=64, batch 3072, 163 TFLOP/s per GPU")


# The MPT family as the llm-foundry yamls shape it: GPT blocks (LayerNorm, GeLU 4h MLP, no biases),
# vocabulary 50368, tied embeddings; the parameter counts match the tables' NumParams to 0.1 %.
def _mpt(layers: int, d_model: int, heads: int, seq: int = 2048) -> ModelSpec:
    return ModelSpec("gpt", layers, d_model, heads, 50368, seq, tie_embeddings=True)


LLAMA2_13B = ModelSpec("llama", 40, 5120, 40, 32000, 4096, ffn_hidden=13824)
LLAMA3_70B = ModelSpec("llama", 80, 8192, 64, 128256, 8192, n_kv_heads=8, ffn_hidden=28672)
GPT_1T = ModelSpec("gpt", 128, 25600, 160, 51200, 2048, bias=True, tie_embeddings=True)


def _megatron_step_s(spec: ModelSpec, batch: int, gpus: int, tflops_per_gpu: float) -> float:
    """Narayanan et al.'s FLOPs per iteration with full recomputation,
    96 B s l h² (1 + s/6h + V/16lh), over the reported TFLOP/s per GPU."""
    b, s, l, h, v = batch, spec.seq_len, spec.n_layers, spec.d_model, spec.vocab_size
    flops = 96 * b * s * l * h**2 * (1 + s / (6 * h) + v / (16 * l * h))
    return flops / (tflops_per_gpu * 1e12 * gpus)


@dataclass(frozen=True)
class Measurement:
    """One published run: what ran, how it was laid out, and how long a step took."""

    id: str
    source: str
    spec: ModelSpec
    gpu: GPU
    n_gpus: int
    global_batch: int            # sequences per optimizer step
    layout: str                  # in the `--layout` syntax
    backend: str                 # ddp | fsdp | deepspeed (as the planner names them)
    step_time_s: float           # published, or derived from the published throughput
    published: str               # the figure as the source gives it
    precision: str = "bf16"
    gpus_per_node: int = 8
    peak_memory_gib: Optional[float] = None

    def inputs(self) -> PlanInputs:
        return PlanInputs(self.spec, self.gpu, self.n_gpus, self.global_batch,
                          gpus_per_node=min(self.gpus_per_node, self.n_gpus), precision=self.precision,
                          backend=self.backend)

    @property
    def published_mfu(self) -> float:
        """MFU as this planner counts model FLOPs (6 per weight per token plus attention)."""
        from planner.hardware import peak_flops

        tokens = self.global_batch * self.spec.seq_len
        return flops_per_token(self.spec) * tokens / (self.step_time_s * self.n_gpus
                                                     * peak_flops(self.gpu, self.precision))


def _tokens_step(batch: int, seq: int, tokens_per_s: float) -> float:
    return batch * seq / tokens_per_s


A100 = CATALOG["a100-80gb"]
H100 = CATALOG["h100-sxm"]

MEASUREMENTS: tuple[Measurement, ...] = (
    # --- A100 80GB ------------------------------------------------------------------------------
    Measurement("mpt-125m-a100x8", LLM_FOUNDRY, _mpt(12, 768, 12), A100, 8, 512,
                "dp=8,zero=3,mb=32", "fsdp", _tokens_step(512, 2048, 1133901),
                "1,133,901 tokens/s (MFU 44.45 %)"),
    Measurement("mpt-1b-a100x8", LLM_FOUNDRY, _mpt(24, 2048, 16), A100, 8, 448,
                "dp=8,zero=3,mb=14", "fsdp", _tokens_step(448, 2048, 164109),
                "164,109 tokens/s (MFU 59.86 %)"),
    Measurement("mpt-7b-a100x8", LLM_FOUNDRY, _mpt(32, 4096, 32), A100, 8, 96,
                "dp=8,zero=3,mb=6", "fsdp", _tokens_step(96, 2048, 37130),
                "37,130 tokens/s (MFU 64.23 %)"),
    Measurement("mpt-70b-a100x64", LLM_FOUNDRY, _mpt(80, 8192, 64), A100, 64, 2048,
                "dp=64,zero=3,mb=8,recompute=full", "fsdp", _tokens_step(2048, 2048, 26274),
                "26,274 tokens/s (MFU 53.33 %, activation checkpointing)"),
    Measurement("mpt-13b-a100x8", LLM_FOUNDRY, _mpt(40, 5120, 40), A100, 8, 48,
                "dp=8,zero=3,mb=2", "fsdp", _tokens_step(48, 2048, 18097),
                "18,097 tokens/s (MFU 59.57 %)"),
    Measurement("torchtitan-llama2-13b-a100x64", TORCHTITAN_LLAMA2, LLAMA2_13B, A100, 64, 128,
                "dp=64,zero=3,mb=2", "fsdp", _tokens_step(2, 4096, 2162),
                "2,162 tokens/s per GPU (MFU 61.1 %, no AC)"),
    Measurement("torchtitan-llama3-70b-a100x64", TORCHTITAN_A100, LLAMA3_70B, A100, 64, 64,
                "dp=64,zero=3,mb=1,recompute=full", "fsdp", _tokens_step(1, 8192, 331),
                "331 tokens/s per GPU (MFU 51.7 %, full AC)"),
    Measurement("megatron-1t-a100x3072", NARAYANAN_2021, GPT_1T, A100, 3072, 3072,
                "dp=6,tp=8,pp=64,mb=1,recompute=full,sp=false", "ddp",
                _megatron_step_s(GPT_1T, 3072, 3072, 163), "163 TFLOP/s per GPU (52 % of peak)",
                precision="fp16"),
    # --- H100 -----------------------------------------------------------------------------------
    Measurement("mpt-1b-h100x8", LLM_FOUNDRY, _mpt(24, 2048, 16), H100, 8, 112,
                "dp=8,zero=3,mb=14", "fsdp", _tokens_step(112, 2048, 363645),
                "363,645 tokens/s (MFU 41.82 %)"),
    Measurement("mpt-7b-h100x8", LLM_FOUNDRY, _mpt(32, 4096, 32), H100, 8, 48,
                "dp=8,zero=3,mb=6", "fsdp", _tokens_step(48, 2048, 85144),
                "85,144 tokens/s (MFU 46.44 %)"),
    Measurement("mpt-13b-h100x64", LLM_FOUNDRY, _mpt(40, 5120, 40), H100, 64, 128,
                "dp=64,zero=3,mb=2", "fsdp", _tokens_step(128, 2048, 307209),
                "307,209 tokens/s (MFU 39.86 %)"),
    Measurement("mpt-70b-h100x64", LLM_FOUNDRY, _mpt(80, 8192, 64), H100, 64, 2048,
                "dp=64,zero=3,mb=8,recompute=full", "fsdp", _tokens_step(2048, 2048, 66523),
                "66,523 tokens/s (MFU 42.57 %, activation checkpointing)"),
    Measurement("mpt-30b-h100x32", LLM_FOUNDRY, _mpt(48, 7168, 64), H100, 32, 1344,
                "dp=32,zero=3,mb=14,recompute=full", "fsdp", _tokens_step(1344, 2048, 73860),
                "73,860 tokens/s (MFU 43.92 %, activation checkpointing)"),
)


@dataclass(frozen=True)
class Comparison:
    measurement: Measurement
    predicted_step_s: float
    predicted_mfu: float
    predicted_memory_gib: float

    @property
    def error(self) -> float:
        """Signed relative error of the predicted step time (positive: predicted slower)."""
        return self.predicted_step_s / self.measurement.step_time_s - 1.0


def predict(measurement: Measurement) -> Comparison:
    """The planner's forecast for one published run, with its published layout."""
    from planner.layout.search import evaluate_layout, parse_layout

    inputs = measurement.inputs()
    layout: Layout = parse_layout(measurement.layout, measurement.n_gpus)
    result = evaluate_layout(inputs, layout)
    return Comparison(measurement, float(result.cost["step_time_s"][0]), float(result.cost["mfu"][0]),
                      float(result.memory["detailed"][0]) / GIB)


def compare(measurements=MEASUREMENTS) -> list[Comparison]:
    return [predict(m) for m in measurements]


def median_abs_error(comparisons: list[Comparison]) -> float:
    return median(abs(c.error) for c in comparisons)


def render_calibration(comparisons: list[Comparison] | None = None, console=None) -> None:
    """Print published vs predicted step time (and MFU, memory where published) for every entry."""
    from rich.console import Console
    from rich.table import Table

    comparisons = compare() if comparisons is None else comparisons
    console = console or Console(width=200)
    with_memory = any(c.measurement.peak_memory_gib for c in comparisons)
    table = Table(title="Cost model vs published runs (each with its published layout)")
    for name in ("id", "GPUs", "layout", "published figure", "step s", "predicted s", "error",
                 "MFU pub.", "MFU pred.") + (("memory GiB pub./pred.",) if with_memory else ()):
        left = name in ("id", "layout", "published figure")
        table.add_column(name, justify="left" if left else "right", no_wrap=name != "published figure")
    for c in comparisons:
        m = c.measurement
        row = [m.id, f"{m.n_gpus} × {m.gpu.id}", m.layout, m.published, f"{m.step_time_s:.3g}",
               f"{c.predicted_step_s:.3g}", f"{100 * c.error:+.1f}%", f"{100 * m.published_mfu:.1f}%",
               f"{100 * c.predicted_mfu:.1f}%"]
        if with_memory:
            row.append((f"{m.peak_memory_gib:.1f}" if m.peak_memory_gib else "-") + f" / {c.predicted_memory_gib:.1f}")
        table.add_row(*row)
    console.print(table)
    console.print(f"median |error| {100 * median_abs_error(comparisons):.1f}%, "
                  f"largest {100 * max(abs(c.error) for c in comparisons):.1f}% over {len(comparisons)} runs")
    console.print("Sources:")
    for source in dict.fromkeys(c.measurement.source for c in comparisons):
        console.print(f"  - {source}")

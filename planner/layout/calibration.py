"""Published training runs against the cost model's forecast of each with its published layout.

The runs themselves are in calibration_runs.py (one `Measurement` each, its source in one line).
`compare()` runs the planner on each with exactly that layout and reports the error of the
predicted step time; tests/test_calibration.py holds every entry within 15 % and the median within
7 %, and `scaleplan plan --calibration` prints the table.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from statistics import median
from typing import Optional

from parallel.layout import Layout
from planner.hardware import GIB, GPU, peak_flops, with_software
from planner.layout.inputs import PlanInputs
from planner.model_spec import ModelSpec, flops_per_token


@dataclass(frozen=True)
class Measurement:
    """One published run: what ran, how it was laid out, and how long a step took."""

    id: str
    source: str
    spec: ModelSpec
    gpu: GPU
    n_gpus: int
    global_batch: int            # sequences per optimizer step
    layout: str                  # in the `--layout` syntax (a long pipeline cut below)
    backend: str                 # ddp | fsdp | deepspeed | auto (as the planner names them)
    step_time_s: float           # published, or derived from the published throughput
    published: str               # the figure as the source gives it
    precision: str = "bf16"
    gpus_per_node: int = 8
    peak_memory_gib: Optional[float] = None
    pp_layers: Optional[tuple[int, ...]] = None   # the published pipeline cut, where uneven
    software: str = "current"                # which kernels ran (planner.hardware.SOFTWARE)
    attention: str = "flash"                 # math where no flash kernel ran (V100)

    def inputs(self) -> PlanInputs:
        return PlanInputs(self.spec, with_software(self.gpu, self.software), self.n_gpus, self.global_batch,
                          gpus_per_node=min(self.gpus_per_node, self.n_gpus), precision=self.precision,
                          backend=self.backend, attention=self.attention)

    def parallel(self) -> Layout:
        """The published layout as a `Layout`."""
        from planner.layout.layout_text import parse_layout

        layout = parse_layout(self.layout, self.n_gpus)
        return replace(layout, pp_layers=self.pp_layers) if self.pp_layers else layout

    @property
    def published_mfu(self) -> float:
        """MFU as this planner counts model FLOPs (6 per weight per token plus attention)."""
        tokens = self.global_batch * self.spec.seq_len
        return flops_per_token(self.spec) * tokens / (self.step_time_s * self.n_gpus
                                                     * peak_flops(self.gpu, self.precision))


def tokens_step(batch: int, seq: int, tokens_per_s: float) -> float:
    """Step time from a published throughput in tokens per second."""
    return batch * seq / tokens_per_s


def model_flops_step(spec: ModelSpec, batch: int, gpus: int, tflops_per_gpu: float) -> float:
    """Step time from published model TFLOP/s per GPU, counting model FLOPs as this planner does."""
    return flops_per_token(spec) * batch * spec.seq_len / (tflops_per_gpu * 1e12 * gpus)


def megatron_step_s(spec: ModelSpec, batch: int, gpus: int, tflops_per_gpu: float) -> float:
    """Narayanan et al.'s FLOPs per iteration with full recomputation,
    96 B s l h² (1 + s/6h + V/16lh), over the reported TFLOP/s per GPU."""
    b, s, l, h, v = batch, spec.seq_len, spec.n_layers, spec.d_model, spec.vocab_size
    flops = 96 * b * s * l * h**2 * (1 + s / (6 * h) + v / (16 * l * h))
    return flops / (tflops_per_gpu * 1e12 * gpus)


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
    from planner.layout.search import evaluate_layout

    result = evaluate_layout(measurement.inputs(), measurement.parallel())
    return Comparison(measurement, float(result.cost["step_time_s"][0]), float(result.cost["mfu"][0]),
                      float(result.memory["detailed"][0]) / GIB)


def compare(measurements=None) -> list[Comparison]:
    from planner.layout.calibration_runs import MEASUREMENTS

    return [predict(m) for m in (MEASUREMENTS if measurements is None else measurements)]


def median_abs_error(comparisons: list[Comparison]) -> float:
    return median(abs(c.error) for c in comparisons)


def render_calibration(comparisons: list[Comparison] | None = None, console=None) -> None:
    """Print published vs predicted step time (and MFU, memory where published) for every entry."""
    from rich.console import Console
    from rich.table import Table

    from planner.layout.layout_text import describe

    from planner.layout.calibration_runs import OUTSIDE

    comparisons = compare() if comparisons is None else comparisons
    outside = {m.id: reason for reason, runs in OUTSIDE.items() for m in runs}
    held = [c for c in comparisons if c.measurement.id not in outside]
    missed = [predict(m) for runs in OUTSIDE.values() for m in runs if m.id not in
              {c.measurement.id for c in comparisons}]
    console = console or Console(width=220)
    with_memory = any(c.measurement.peak_memory_gib for c in comparisons)
    table = Table(title="Cost model vs published runs (each with its published layout)")
    for name in ("id", "GPUs", "layout", "published figure", "step s", "predicted s", "error",
                 "MFU pub.", "MFU pred.") + (("memory GiB pub./pred.",) if with_memory else ()):
        left = name in ("id", "layout", "published figure")
        table.add_column(name, justify="left" if left else "right", no_wrap=name == "id")
    for c in held + missed:
        m = c.measurement
        row = [m.id + (" (outside)" if m.id in outside else ""), f"{m.n_gpus} × {m.gpu.id}", describe(m.parallel()), m.published, f"{m.step_time_s:.3g}",
               f"{c.predicted_step_s:.3g}", f"{100 * c.error:+.1f}%", f"{100 * m.published_mfu:.1f}%",
               f"{100 * c.predicted_mfu:.1f}%"]
        if with_memory:
            row.append((f"{m.peak_memory_gib:.1f}" if m.peak_memory_gib else "-") + f" / {c.predicted_memory_gib:.1f}")
        table.add_row(*row)
    console.print(table)
    console.print(f"median |error| {100 * median_abs_error(held):.1f}%, "
                  f"largest {100 * max(abs(c.error) for c in held):.1f}% over {len(held)} runs")
    for reason in dict.fromkeys(outside[c.measurement.id] for c in held + missed if c.measurement.id in outside):
        console.print(f"outside the tolerance, not in the median: {reason}")
    console.print("Sources:")
    for source in dict.fromkeys(c.measurement.source for c in held + missed):
        console.print(f"  - {source}")


def __getattr__(name: str):
    """MEASUREMENTS and OUTSIDE live in calibration_runs.py (which imports this module); still
    importable from here."""
    if name in ("MEASUREMENTS", "OUTSIDE"):
        from planner.layout import calibration_runs

        return getattr(calibration_runs, name)
    raise AttributeError(name)

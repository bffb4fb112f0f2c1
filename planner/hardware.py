"""Catalog of accelerators: memory, peak dense FLOP/s and interconnect bandwidth.

Peak figures are the vendors' dense (no sparsity) datasheet numbers. The trainer reads the bf16/fp16
peak from here to report MFU; the layout planner reads all of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

TERA = 1e12
GIB = 1024**3
GB = 1e9


@dataclass(frozen=True)
class GPU:
    id: str
    name: str
    hbm_bytes: float
    peak_bf16: float          # FLOP/s, dense
    peak_fp16: float
    peak_fp8: float           # 0 where the chip has no fp8 tensor cores
    peak_fp32: float
    intra_node_bw: float      # bytes/s per GPU, one direction (NVLink or PCIe)
    network_bw: float         # bytes/s per GPU across nodes (InfiniBand / Ethernet)
    match: tuple[str, ...] = ()   # substrings of torch.cuda.get_device_name() that identify it
    hbm_bw: float = 2.0e12    # bytes/s of device memory: what memory-bound (element-wise) kernels run at
    # Shares of the dense peak that real kernels sustain in training (the cost model's): a large
    # GEMM, and flash attention forward + backward (causal FLOPs counted once). A100 and H100 are
    # calibrated against published runs (planner/layout/calibration.py); the others take these
    # defaults, between the two.
    matmul_efficiency: float = 0.72
    attention_efficiency: float = 0.45
    tp_overlap: float = 0.0   # share of TP communication the software hides behind GEMMs
    generation: str = ""      # ampere | hopper | ...: which SOFTWARE efficiencies apply


# Sustained shares of peak with PyTorch-native software (torchtitan, Llama 3's stack: cuBLAS GEMMs,
# FlashAttention-2), fitted once on planner/layout/calibration_runs.py (not per run). GEMMs sustain
# ~240 of 312 TFLOP/s on A100 and ~730 of 989 on H100; FlashAttention-2 reaches 50-73 % of A100 peak
# forward, less backward (Dao 2023), and about 35 % of H100's forward (Shah et al. 2024).
_AMPERE = {"matmul_efficiency": 0.77, "attention_efficiency": 0.55}
_HOPPER = {"matmul_efficiency": 0.74, "attention_efficiency": 0.30}

# Other software on the same GPU generation, each fitted on the calibration runs that used it:
# "2023": Hopper before its kernels matured (llm-foundry's H100 benchmarks); "nemo": NeMo /
# Megatron-Core with Transformer Engine GEMMs, cuDNN flash attention (FlashAttention-3 class: up to
# 75 % of H100 peak, Shah et al. 2024) and TP communication overlapped with the GEMMs.
SOFTWARE: dict[str, dict[str, dict[str, float]]] = {
    "current": {},
    "2023": {"hopper": {"matmul_efficiency": 0.68, "attention_efficiency": 0.30}},
    "nemo": {"hopper": {"matmul_efficiency": 0.82, "attention_efficiency": 0.75, "tp_overlap": 1.0}},
}

CATALOG: dict[str, GPU] = {g.id: g for g in [
    # NVIDIA datasheets (A100, H100, H200, B200, L40S, A10, V100); network 200-400 Gb/s per GPU.
    GPU("a100-40gb", "NVIDIA A100 40GB SXM", 40 * GIB, 312 * TERA, 312 * TERA, 0, 19.5 * TERA,
        300 * GB, 25 * GB, ("A100-SXM4-40GB", "A100-PCIE-40GB"), hbm_bw=1555 * GB,
        generation="ampere", **_AMPERE),
    GPU("a100-80gb", "NVIDIA A100 80GB SXM", 80 * GIB, 312 * TERA, 312 * TERA, 0, 19.5 * TERA,
        300 * GB, 25 * GB, ("A100-SXM4-80GB", "A100 80GB", "A100-PCIE-80GB"), hbm_bw=2039 * GB,
        generation="ampere", **_AMPERE),
    GPU("h100-sxm", "NVIDIA H100 SXM 80GB", 80 * GIB, 989 * TERA, 989 * TERA, 1979 * TERA,
        67 * TERA, 450 * GB, 50 * GB, ("H100 80GB HBM3", "H100 SXM"), hbm_bw=3350 * GB,
        generation="hopper", **_HOPPER),
    GPU("h100-pcie", "NVIDIA H100 PCIe 80GB", 80 * GIB, 756 * TERA, 756 * TERA, 1513 * TERA,
        51 * TERA, 64 * GB, 25 * GB, ("H100 PCIe",), hbm_bw=2000 * GB,
        generation="hopper", **_HOPPER),
    GPU("h200", "NVIDIA H200 SXM 141GB", 141 * GB, 989 * TERA, 989 * TERA, 1979 * TERA,
        67 * TERA, 450 * GB, 50 * GB, ("H200",), hbm_bw=4800 * GB,
        generation="hopper", **_HOPPER),
    GPU("b200", "NVIDIA B200 180GB", 180 * GB, 2250 * TERA, 2250 * TERA, 4500 * TERA,
        75 * TERA, 900 * GB, 50 * GB, ("B200",), hbm_bw=8000 * GB),
    GPU("l40s", "NVIDIA L40S 48GB", 48 * GB, 362 * TERA, 362 * TERA, 733 * TERA, 91.6 * TERA,
        32 * GB, 12.5 * GB, ("L40S",), hbm_bw=864 * GB),
    GPU("a10", "NVIDIA A10 24GB", 24 * GB, 125 * TERA, 125 * TERA, 0, 31.2 * TERA,
        32 * GB, 12.5 * GB, ("A10",), hbm_bw=600 * GB),
    GPU("v100-32gb", "NVIDIA V100 SXM2 32GB", 32 * GIB, 125 * TERA, 125 * TERA, 0, 15.7 * TERA,
        150 * GB, 12.5 * GB, ("V100",), hbm_bw=900 * GB),
]}


def with_software(gpu: GPU, software: str = "current") -> GPU:
    """The GPU with the sustained efficiencies of `software` (a SOFTWARE key) on its generation."""
    from dataclasses import replace

    return replace(gpu, **SOFTWARE[software].get(gpu.generation, {}))


def identify(device_name: str) -> Optional[GPU]:
    """The catalog entry whose identifying substring appears in a CUDA device name, if any."""
    for gpu in CATALOG.values():
        if any(token in device_name for token in gpu.match):
            return gpu
    return None


# ---- Looking GPUs up, and extending the catalog from a YAML file -------------------------------

# Units a catalog file is written in: memory in GiB or GB, compute in TFLOP/s, links in GB/s.
_YAML_FIELDS = {
    "name": ("name", 1, str),
    "hbm_gib": ("hbm_bytes", GIB, float), "hbm_gb": ("hbm_bytes", GB, float),
    "peak_bf16_tflops": ("peak_bf16", TERA, float), "peak_fp16_tflops": ("peak_fp16", TERA, float),
    "peak_fp8_tflops": ("peak_fp8", TERA, float), "peak_fp32_tflops": ("peak_fp32", TERA, float),
    "intra_node_gbps": ("intra_node_bw", GB, float), "network_gbps": ("network_bw", GB, float),
    "hbm_gbps": ("hbm_bw", GB, float), "matmul_efficiency": ("matmul_efficiency", 1, float),
    "attention_efficiency": ("attention_efficiency", 1, float),
}
_REQUIRED = ("hbm_bytes", "peak_bf16", "intra_node_bw", "network_bw")


def _gpu_from_entry(gpu_id: str, entry: object, source: str) -> GPU:
    from planner.errors import UserError

    if not isinstance(entry, dict):
        raise UserError(f"{source}: entry '{gpu_id}' must be a mapping of fields such as hbm_gib, "
                        "peak_bf16_tflops, intra_node_gbps, network_gbps")
    values: dict = {"id": gpu_id, "name": gpu_id, "peak_fp8": 0.0}
    for key, raw in entry.items():
        if key not in _YAML_FIELDS:
            raise UserError(f"{source}: unknown field '{key}' for '{gpu_id}'; allowed: "
                            + ", ".join(_YAML_FIELDS))
        field_name, unit, kind = _YAML_FIELDS[key]
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise UserError(f"{source}: '{gpu_id}.{key}' = {raw!r} is not a number") from None
        if kind is float and value < 0:
            raise UserError(f"{source}: '{gpu_id}.{key}' = {raw!r} must not be negative")
        values[field_name] = value * unit if kind is float else value
    missing = [name for name in _REQUIRED if name not in values]
    if missing:
        raise UserError(f"{source}: '{gpu_id}' lacks " + ", ".join(missing)
                        + " (give hbm_gib or hbm_gb, peak_bf16_tflops, intra_node_gbps, network_gbps)")
    values.setdefault("peak_fp16", values["peak_bf16"])
    values.setdefault("peak_fp32", values["peak_bf16"] / 16)  # a guess; only fp32 runs read it
    return GPU(**values)


def load_catalog(path: Optional[str] = None) -> dict[str, GPU]:
    """The built-in catalog plus the GPUs in a YAML file (`{id: {hbm_gib: 96, peak_bf16_tflops: ...}}`);
    an entry with a built-in id replaces it."""
    catalog = dict(CATALOG)
    if path is None:
        return catalog
    from pathlib import Path

    import yaml

    from planner.errors import UserError
    from planner.user_files import read_text

    file = Path(path)
    if not file.is_file():
        raise UserError(f"GPU catalog file not found: {path}")
    try:
        loaded = yaml.safe_load(read_text(file, "GPU catalog")) or {}
    except yaml.YAMLError:
        raise UserError(f"GPU catalog {path} is not valid YAML") from None
    if not isinstance(loaded, dict):
        raise UserError(f"GPU catalog {path} must map GPU ids to their fields")
    for gpu_id, entry in loaded.items():
        catalog[str(gpu_id)] = _gpu_from_entry(str(gpu_id), entry, str(path))
    return catalog


def get_gpu(gpu_id: str, catalog_path: Optional[str] = None) -> GPU:
    """The GPU with this id, or a UserError listing the ids there are."""
    from planner.errors import UserError

    catalog = load_catalog(catalog_path)
    if gpu_id not in catalog:
        raise UserError(f"unknown GPU '{gpu_id}'; known: {', '.join(sorted(catalog))} "
                        "(or add it with --gpu-catalog FILE)")
    return catalog[gpu_id]


def peak_flops(gpu: GPU, precision: str) -> float:
    """Dense peak FLOP/s for the compute dtype of a run (fp32 runs use the fp32 figure)."""
    return {"bf16": gpu.peak_bf16, "fp16": gpu.peak_fp16, "fp8": gpu.peak_fp8 or gpu.peak_bf16,
            "fp32": gpu.peak_fp32}[precision]

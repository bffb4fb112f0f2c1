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


CATALOG: dict[str, GPU] = {g.id: g for g in [
    # NVIDIA datasheets (A100, H100, H200, B200, L40S, A10, V100); network 200-400 Gb/s per GPU.
    GPU("a100-40gb", "NVIDIA A100 40GB SXM", 40 * GIB, 312 * TERA, 312 * TERA, 0, 19.5 * TERA,
        300 * GB, 25 * GB, ("A100-SXM4-40GB", "A100-PCIE-40GB")),
    GPU("a100-80gb", "NVIDIA A100 80GB SXM", 80 * GIB, 312 * TERA, 312 * TERA, 0, 19.5 * TERA,
        300 * GB, 25 * GB, ("A100-SXM4-80GB", "A100 80GB", "A100-PCIE-80GB")),
    GPU("h100-sxm", "NVIDIA H100 SXM 80GB", 80 * GIB, 989 * TERA, 989 * TERA, 1979 * TERA,
        67 * TERA, 450 * GB, 50 * GB, ("H100 80GB HBM3", "H100 SXM")),
    GPU("h100-pcie", "NVIDIA H100 PCIe 80GB", 80 * GIB, 756 * TERA, 756 * TERA, 1513 * TERA,
        51 * TERA, 64 * GB, 25 * GB, ("H100 PCIe",)),
    GPU("h200", "NVIDIA H200 SXM 141GB", 141 * GB, 989 * TERA, 989 * TERA, 1979 * TERA,
        67 * TERA, 450 * GB, 50 * GB, ("H200",)),
    GPU("b200", "NVIDIA B200 180GB", 180 * GB, 2250 * TERA, 2250 * TERA, 4500 * TERA,
        75 * TERA, 900 * GB, 50 * GB, ("B200",)),
    GPU("l40s", "NVIDIA L40S 48GB", 48 * GB, 362 * TERA, 362 * TERA, 733 * TERA, 91.6 * TERA,
        32 * GB, 12.5 * GB, ("L40S",)),
    GPU("a10", "NVIDIA A10 24GB", 24 * GB, 125 * TERA, 125 * TERA, 0, 31.2 * TERA,
        32 * GB, 12.5 * GB, ("A10",)),
    GPU("v100-32gb", "NVIDIA V100 SXM2 32GB", 32 * GIB, 125 * TERA, 125 * TERA, 0, 15.7 * TERA,
        150 * GB, 12.5 * GB, ("V100",)),
]}


def identify(device_name: str) -> Optional[GPU]:
    """The catalog entry whose identifying substring appears in a CUDA device name, if any."""
    for gpu in CATALOG.values():
        if any(token in device_name for token in gpu.match):
            return gpu
    return None

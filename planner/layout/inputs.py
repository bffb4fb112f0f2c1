"""Everything a layout plan depends on besides the layout itself."""
from __future__ import annotations

from dataclasses import dataclass

from planner.hardware import GIB, GPU
from planner.model_spec import ModelSpec

MEMORY_MODELS = ("rule24", "detailed")
ACCOUNTINGS = ("native", "deepspeed", "megatron")
PRECISIONS = ("bf16", "fp16", "fp32")


@dataclass(frozen=True)
class PlanInputs:
    """Model, machine, batch and the assumptions the memory and cost models make."""

    spec: ModelSpec
    gpu: GPU
    n_gpus: int
    global_batch: int                   # sequences per optimizer step
    gpus_per_node: int = 8
    precision: str = "bf16"
    backend: str = "auto"               # auto | ddp | fsdp | deepspeed (see candidates.py)
    attention: str = "flash"            # flash | math (math keeps the s×s scores)
    memory_model: str = "rule24"        # which model decides feasibility
    accounting: str = "native"          # native | deepspeed (model states as DeepSpeed counts them) | megatron (activations as Korthikanti et al. 2022)
    # Outside PyTorch's allocator: CUDA context, cuBLAS workspaces, NCCL communicators (~1 GiB on
    # H100-class GPUs), and the caching allocator's fragmentation as a share of what it holds.
    context_bytes: float = 1.0 * GIB
    fragmentation: float = 0.05

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.spec.seq_len

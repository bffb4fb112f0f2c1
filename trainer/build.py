"""Build everything a run needs from its config, in the design's order: data -> layout -> model on
the meta device -> materialize -> parallelize -> optimizer and engine -> restore from a checkpoint."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch
import torch.distributed as dist

from parallel.layout import Layout
from parallel.mesh import build_mesh, data_parallel_rank
from parallel.parallelize import Parallelized, parallelize
from parallel.zero import deepspeed_config
from planner.errors import UserError
from planner.layout.model_states import DEEPSPEED_BUCKET_ELEMENTS
from trainer.checkpoint import checkpoint_steps, load_checkpoint, resolve_resume
from trainer.config import Config
from trainer.data import BatchFilter, TokenData, WindowSampler, eval_windows
from trainer.engines import Engine
from trainer.engines.pipeline_engine import PipelineEngine
from trainer.engines.torch_engine import TorchEngine
from trainer.hf.initial_weights import load_initial_weights
from trainer.metrics import MetricsWriter
from trainer.model import Transformer
from trainer.optim import build_optimizer
from trainer.precision import DTYPES, Precision
from trainer.runtime import Runtime

if TYPE_CHECKING:
    from trainer.callbacks import Callbacks


@dataclass
class Run:
    """One run's state, shared by the loop and its callbacks."""

    cfg: Config
    runtime: Runtime
    run_dir: Path
    data: TokenData
    layout: Layout
    backend: str                 # ddp, fsdp or deepspeed
    n_micro: int                 # micro-steps per optimizer step on each rank
    engine: Engine               # the parallelized model with its optimizer: train_step, score, state
    precision: Precision
    sampler: WindowSampler
    val_BT: torch.Tensor
    control_group: dist.ProcessGroup   # gloo: flags the loop agrees on without touching the GPU
    metrics: Optional[MetricsWriter] = None   # metrics.jsonl and TensorBoard (rank 0), once the run is built
    dp_rank: int = 0             # which slice of each batch this rank's model replica reads
    step: int = 0
    stop_at: int = 0             # the last step of this invocation
    lr_scale: float = 1.0        # lowered by each rollback when guards.rollback_lr_factor < 1
    rollbacks: int = 0
    val_loss: Optional[float] = None
    preempted: bool = False
    resumed_from: Optional[Path] = None
    callbacks: Optional["Callbacks"] = None

    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def train_state(self) -> dict:
        """Everything besides model and optimizer that an exact resume needs."""
        return {"step": self.step, "sampler": self.sampler.state_dict(), "scaler": self.precision.state_dict(),
                "callbacks": self.callbacks.state_dict()}

    def restore(self, saved: dict) -> None:
        """Take a checkpoint's train state (what `train_state` returned, loaded)."""
        self.step = int(saved["step"])
        self.sampler.load_state_dict(saved["sampler"])
        self.precision.load_state_dict(saved["scaler"])
        self.callbacks.load_state_dict(saved["callbacks"])

    def say(self, message: str) -> str:
        """A line on the main rank's terminal; returns it (for the metrics line that records it)."""
        if self.runtime.is_main:
            print(f"[scaleplan] {message}", flush=True)
        return message

    @property
    def model(self) -> Transformer:
        """The model for evaluation and sampling: DDP's inner module (local), the sharded model
        itself under FSDP and DeepSpeed (collective: every rank must call it alike)."""
        return getattr(self.engine.module, "module", self.engine.module)


def run_directory(cfg: Config) -> Path:
    return Path(cfg.train.runs_dir) / cfg.train.name


def build_run(cfg: Config, runtime: Runtime, layout: Layout, backend: str,
              callbacks: Callable[[Run], "Callbacks"]) -> Run:
    """Collective on all ranks: the run for `layout` (resolved once, by launch/), its callbacks, and
    its state restored from the latest good checkpoint. UserError for a run directory or data that
    cannot be used."""
    device, run_dir = runtime.device, run_directory(cfg)
    resume_from = resolve_resume(cfg.checkpoint.resume, run_dir / "checkpoints", cfg.checkpoint.verify)
    if cfg.checkpoint.resume == "none" and checkpoint_steps(run_dir / "checkpoints"):
        raise UserError(f"{run_dir} already holds checkpoints: resume with checkpoint.resume=auto "
                        f"or pick another train.name")
    data = TokenData.open(cfg.data)   # one directory, or the weighted sources of a mixture
    data.check_fits(cfg.model.vocab_size, cfg.model.seq_len)
    n_micro = cfg.grad_accum_steps(layout.dp)
    mesh = build_mesh(layout, device)
    dp_rank = data_parallel_rank(mesh, layout)
    engine, precision = build_model_and_engine(cfg, layout, backend, n_micro, mesh, device)
    run = Run(cfg=cfg, runtime=runtime, run_dir=run_dir, data=data, layout=layout, backend=backend,
              n_micro=n_micro, engine=engine, precision=precision,
              sampler=WindowSampler(data.train, cfg.model.seq_len, cfg.global_batch, dp_rank, layout.dp,
                                    cfg.train.seed, batch_filter(cfg)),
              val_BT=eval_windows(data.val, cfg.model.seq_len,
                                  cfg.train.eval_batches * cfg.parallel.micro_batch, cfg.train.seed),
              control_group=dist.new_group(backend="gloo"), dp_rank=dp_rank)
    run.callbacks = callbacks(run)
    if resume_from is not None:
        run.restore(load_checkpoint(resume_from, engine, run.train_state(), runtime.rank, model_yaml(cfg)))
        run.resumed_from = resume_from
    if runtime.is_main:   # only now: a run that cannot start leaves nothing on disk
        run_dir.mkdir(parents=True, exist_ok=True)
    run.metrics = MetricsWriter(run_dir, runtime.is_main, cfg.log.tensorboard)
    return run


def build_model_and_engine(cfg: Config, layout: Layout, backend: str, n_micro: int, mesh,
                           device: torch.device) -> tuple[Engine, Precision]:
    """The model, initialized whole, parallelized for `layout`, with its optimizer and engine."""
    # Every layout starts from the same weights: initialize whole, then shard. Sharded backends
    # initialize in host memory and move only their shards to the GPU.
    with torch.device("meta"):
        model = Transformer(cfg.model)
    model.to_empty(device=device if backend == "ddp" else torch.device("cpu"))
    torch.manual_seed(cfg.train.seed)
    model.init_weights()
    load_initial_weights(model, cfg.model)   # model.init_from=hf:DIR, whole, before sharding
    parallel = parallelize(model, layout, backend, mesh, device, DTYPES[cfg.precision.dtype], cfg.parallel.bucket_mb,
                           cfg.parallel.cpu_offload, compile_blocks=cfg.parallel.compile)
    precision = Precision(cfg.precision, device.type, autocast=backend == "ddp", sharded=backend == "fsdp")
    return build_engine(cfg, backend, layout, parallel, precision, n_micro, device, mesh), precision


def batch_filter(cfg: Config) -> Optional[BatchFilter]:
    guards = cfg.guards
    if guards.bad_batch_period == 0:
        return None
    return BatchFilter(cfg.model.vocab_size, guards.bad_batch_period, guards.bad_batch_fraction)


def model_yaml(cfg: Config) -> str:
    """This run's `model` section, to tell a checkpoint of another model before loading it."""
    import yaml

    return yaml.safe_dump(cfg.model.model_dump(mode="json"))


def build_engine(cfg: Config, backend: str, layout: Layout, parallel: Parallelized, precision: Precision,
                 n_micro: int, device: torch.device, mesh) -> Engine:
    """The optimizer and the engine that owns micro-batching, backward and step for this backend."""
    if backend == "deepspeed":
        from trainer.engines.deepspeed_engine import DeepSpeedEngine

        model = parallel.module.to(device)
        config = deepspeed_config(layout.zero_stage, layout.micro_batch, n_micro, layout.dp, cfg.optim.grad_clip,
                                  cfg.precision.dtype, cfg.precision.initial_loss_scale, cfg.parallel.cpu_offload,
                                  int(DEEPSPEED_BUCKET_ELEMENTS), cfg.parallel.deepspeed)
        return DeepSpeedEngine(model, build_optimizer(model, cfg.optim), config)
    optimizer = build_optimizer(parallel.module, cfg.optim)
    if layout.pp > 1:
        return PipelineEngine(parallel, optimizer, precision, layout, n_micro, mesh, device)
    return TorchEngine(parallel, optimizer, precision, layout.micro_batch, zero_stage=layout.zero_stage,
                       tensor_parallel=layout.tp > 1)

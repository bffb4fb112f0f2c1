"""Build everything a run needs from its config, in the design's order: data -> layout -> model on
the meta device -> materialize -> parallelize -> optimizer -> restore from a checkpoint."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from parallel.layout import Layout
from parallel.mesh import build_mesh
from parallel.parallelize import parallelize
from planner.errors import UserError
from trainer.checkpoint import checkpoint_steps, load_checkpoint, resolve_resume
from trainer.config import Config
from trainer.data import TokenData, WindowSampler, eval_windows
from trainer.model import Transformer
from trainer.optim import build_optimizer
from trainer.precision import Precision
from trainer.runtime import Runtime


@dataclass
class Run:
    cfg: Config
    runtime: Runtime
    run_dir: Path
    data: TokenData
    layout: Layout
    n_micro: int                 # micro-steps per optimizer step on each rank
    raw_model: Transformer       # unwrapped: for evaluation, sampling and counting
    model: nn.Module             # parallelized: for training
    optimizer: torch.optim.Optimizer
    precision: Precision
    sampler: WindowSampler
    val_BT: torch.Tensor
    step: int = 0
    resumed_from: Optional[Path] = None

    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def train_state(self) -> dict:
        """Everything besides model and optimizer that an exact resume needs."""
        return {"step": self.step, "sampler": self.sampler.state_dict(), "scaler": self.precision.state_dict()}


def run_directory(cfg: Config) -> Path:
    return Path(cfg.train.runs_dir) / cfg.train.name


def build_run(cfg: Config, runtime: Runtime) -> Run:
    """Collective on all ranks. Raises UserError for a run directory or data that cannot be used."""
    device, run_dir = runtime.device, run_directory(cfg)
    resume_from = resolve_resume(cfg.checkpoint.resume, run_dir / "checkpoints")
    if cfg.checkpoint.resume == "none" and checkpoint_steps(run_dir / "checkpoints"):
        raise UserError(f"{run_dir} already holds checkpoints: resume with checkpoint.resume=auto "
                        f"or pick another train.name")
    data = TokenData.open(cfg.data.dir)
    data.check_fits(cfg.model.vocab_size, cfg.model.seq_len)
    layout = Layout(dp_replicate=runtime.world_size, micro_batch=cfg.train.micro_batch)
    n_micro = cfg.grad_accum_steps(layout.dp)
    mesh = build_mesh(layout, device)

    with torch.device("meta"):
        raw_model = Transformer(cfg.model)
    raw_model.to_empty(device=device)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank and in every layout
    raw_model.init_weights()
    model = parallelize(raw_model, layout, mesh, device, cfg.parallel.bucket_mb)

    run = Run(cfg=cfg, runtime=runtime, run_dir=run_dir, data=data, layout=layout, n_micro=n_micro,
              raw_model=raw_model, model=model,
              optimizer=build_optimizer(model, cfg.optim, device.type),
              precision=Precision(cfg.precision, device.type),
              sampler=WindowSampler(data.train, cfg.model.seq_len, cfg.global_batch, runtime.rank,
                                    layout.dp, cfg.train.seed),
              val_BT=eval_windows(data.val, cfg.model.seq_len,
                                  cfg.train.eval_batches * cfg.train.micro_batch, cfg.train.seed))
    if resume_from is not None:
        saved = load_checkpoint(resume_from, model, run.optimizer, run.train_state(), runtime.rank)
        run.step, run.resumed_from = int(saved["step"]), resume_from
        run.sampler.load_state_dict(saved["sampler"])
        run.precision.load_state_dict(saved["scaler"])
    return run

"""A pipeline rank: its stages run forward and backward of every micro-batch inside the
torch.distributed.pipelining schedule; clipping over all stages, the step and the state dicts are
the torch engine's. The schedule is built here, with this engine's loss, when the engine is."""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from parallel.gradients import local
from parallel.layout import Layout
from parallel.parallelize import Parallelized
from parallel.pipeline import build_schedule
from trainer.engines import Batches, LossHook, StepRequest, StepResult
from trainer.engines.torch_engine import TorchEngine, skip_by_norm
from trainer.model import language_model_loss, summed_token_loss
from trainer.precision import Precision


class PipelineEngine(TorchEngine):
    def __init__(self, parallel: Parallelized, optimizer: torch.optim.Optimizer, precision: Precision,
                 layout: Layout, n_micro: int, mesh, device: torch.device):
        super().__init__(parallel, optimizer, precision, layout.micro_batch, zero_stage=layout.zero_stage,
                         tensor_parallel=layout.tp > 1)
        self.n_micro = n_micro
        self.eval_batch = layout.micro_batch * n_micro   # the schedule's stages expect whole micro-batches
        self.local_gradients = False                      # the schedule runs all micro-batches in one go
        self._loss_hook: Optional[LossHook] = None
        self.schedule = build_schedule(parallel.stages, mesh["pp"].get_local_rank(), layout.pp, layout.vpp,
                                       mesh["pp"], device, layout.pp_schedule, n_micro, self.loss_fn,
                                       zero_stage=layout.zero_stage)

    def loss_fn(self, output: torch.Tensor, targets_BT: torch.Tensor, z_loss: float = 0.0,
                scoring: bool = False) -> torch.Tensor:
        """The last stage's loss per micro-batch (the schedule averages gradients over micro-batches)."""
        if scoring:
            return summed_token_loss(output, targets_BT)
        loss = language_model_loss(output, targets_BT, z_loss)
        return self._loss_hook(loss) if self._loss_hook is not None else loss

    def _run(self, inputs_BT, targets_BT, scoring: bool, z_loss: float = 0.0) -> torch.Tensor:
        """The sum of the last stage's micro-batch losses, on every rank of the pipeline."""
        losses: list[torch.Tensor] = []
        run = self.schedule.eval if scoring else self.schedule.step
        # positions are set before the schedule runs: every stage's attention reads them from the model
        [(inputs_BT, targets_BT)], shard = self.context_chunks([(inputs_BT, targets_BT)])
        with shard, self.autocast():
            run(inputs_BT, target=targets_BT, losses=losses, return_outputs=False,
                loss_kwargs={"z_loss": z_loss, "scoring": scoring})
        total = torch.zeros((), device=inputs_BT.device)
        for loss in losses:
            total += local(loss).detach().float()
        dist.all_reduce(total, group=self.parallel.pipeline_group)   # only the last stage holds losses
        if scoring and self.parallel.context is not None:   # each cp rank scored its own chunks
            total = self.parallel.context.sum(total)
        return total

    def train_step(self, batches: Batches, request: StepRequest) -> StepResult:
        """Forward and backward of all micro-batches in the schedule, then the step."""
        batches = list(batches)
        inputs_BT = torch.cat([inputs for inputs, _ in batches]).to(self.device, non_blocking=True)
        targets_BT = torch.cat([targets for _, targets in batches]).to(self.device, non_blocking=True)
        self._loss_hook = request.loss_hook
        try:
            loss = self._run(inputs_BT, targets_BT, scoring=False, z_loss=request.z_loss) / self.n_micro
        finally:
            self._loss_hook = None
        grad_norm, skipped = self.step(request.grad_clip, request.measure, skip_by_norm(request, loss))
        return StepResult(loss, grad_norm, skipped)

    @torch.no_grad()
    def score(self, inputs_BT: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
        return self._run(inputs_BT, targets_BT, scoring=True)

"""The config tree's sections: one pydantic model per `section` of `section.key=value`.

Frozen and strict (extra keys are errors). No torch import here; trainer/config.py assembles them
into the whole tree and loads it.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.model_spec import ModelSpec


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Section):
    """Decoder-only transformer. `gpt`: LayerNorm, GeLU 4h MLP, learned positions.
    `llama`: RMSNorm, SwiGLU, RoPE, grouped-query attention."""

    arch: Literal["gpt", "llama"] = "gpt"
    n_layers: int = Field(4, ge=1)
    d_model: int = Field(256, ge=8)
    n_heads: int = Field(4, ge=1)
    n_kv_heads: Optional[int] = Field(None, ge=1)
    ffn_hidden: Optional[int] = Field(None, ge=1)
    vocab_size: int = Field(256, ge=2)
    seq_len: int = Field(256, ge=2)
    tie_embeddings: bool = False
    bias: bool = False
    qk_norm: bool = Field(False, description="RMS-normalize queries and keys per head (stabilizes attention)")
    norm_eps: float = Field(1e-5, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    init_std: float = Field(0.02, gt=0)
    mup: bool = Field(False, description="maximal update parametrization (Yang et al. 2022): hyperparameters tuned "
                      "at mup_base_width hold at any d_model (hidden init and Adam LR scaled by 1/width_mult, "
                      "logits by 1/width_mult, attention by 1/d_head)")
    mup_base_width: int = Field(128, ge=8, description="the d_model the hyperparameters were tuned at (under mup)")
    init_from: Optional[str] = Field(None, pattern=r"^hf:.+", description="start from a local Hugging Face "
                                     "folder's weights: hf:DIR (its config.json must agree with this section)")

    @property
    def width_mult(self) -> float:
        """d_model over the µP base width: 1.0 without µP, so the standard parametrization is untouched."""
        return self.d_model / self.mup_base_width if self.mup else 1.0

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        if self.arch == "llama" and (self.d_model // self.n_heads) % 2:
            raise ValueError("rotary embeddings need an even head dimension (d_model / n_heads)")
        return self

    @property
    def kv_heads(self) -> int:
        return self.spec().kv_heads

    @property
    def ffn(self) -> int:
        return self.spec().ffn

    def spec(self) -> ModelSpec:
        return ModelSpec.from_config(self)


class DataSource(Section):
    """One source of a mixture: a prepared directory, its share of the windows, its name in metrics."""

    dir: str
    weight: float = Field(1.0, description="relative share of the training windows drawn from this source")
    name: Optional[str] = Field(None, description="the name in metrics (tokens/<name>, val_loss/<name>); "
                                "default: the directory's name")


class DataConfig(Section):
    """A directory written by `scaleplan prepare` (`dir`), or a weighted mixture of several (`sources`:
    each window's source drawn by weight; metrics per source). All sources share one tokenizer."""

    dir: str = "data/stdlib"
    sources: list[DataSource] = Field(default_factory=list, description="a mixture: [{dir, weight, name}, ...]; "
                                      "when given, `dir` is not read")

    @model_validator(mode="after")
    def _weights_and_names(self) -> "DataConfig":
        for number, source in enumerate(self.sources):
            if not source.weight >= 0:   # also refuses NaN
                raise ValueError(f"data.sources[{number}] ({source.dir}): weight {source.weight} is negative")
        if self.sources and not sum(source.weight for source in self.sources) > 0:
            raise ValueError("data.sources: the weights sum to 0; give at least one source a positive weight")
        names = [source.name or source.dir.rstrip("/").rsplit("/", 1)[-1] for source in self.sources]
        if len(set(names)) < len(names):
            raise ValueError(f"data.sources: two sources are named {max(names, key=names.count)!r}; "
                             f"give each a distinct name")
        return self


class TrainConfig(Section):
    """Batch size is given per optimizer step, either in tokens or in sequences (not both);
    gradient accumulation = global batch / (parallel.micro_batch × data-parallel size)."""

    name: str = "default"
    runs_dir: str = "runs"
    steps: int = Field(200, ge=1, description="optimizer steps of the whole run (the schedule spans them)")
    stop_after: Optional[int] = Field(None, ge=1, description="end this invocation after N more steps "
                                      "with a checkpoint, e.g. to fit a job time limit; resume continues")
    global_batch: Optional[int] = Field(None, ge=1, description="sequences per optimizer step")
    global_batch_tokens: Optional[int] = Field(None, ge=1, description="tokens per optimizer step")
    seed: int = 1337
    eval_every: int = Field(50, ge=1)
    eval_batches: int = Field(8, ge=1)
    sample_tokens: int = Field(300, ge=0, description="tokens generated at the end of the run")
    sample_prompt: str = "def "
    sample_temperature: float = Field(0.7, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = Field(False, description="deterministic algorithms only: the same seed and "
                                "layout give bitwise-identical losses")

    @model_validator(mode="after")
    def _one_batch_unit(self) -> "TrainConfig":
        if self.global_batch is not None and self.global_batch_tokens is not None:
            raise ValueError("give train.global_batch (sequences) or train.global_batch_tokens, not both")
        return self


class OptimConfig(Section):
    """AdamW with warmup then a cosine, warmup-stable-decay or constant schedule."""

    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(20, ge=0)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_fraction: float = Field(0.2, gt=0, le=1, description="share of steps WSD spends decaying")
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables clipping")


class PrecisionConfig(Section):
    """bf16 autocast, fp16 autocast with dynamic loss scaling, or plain fp32."""

    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    initial_loss_scale: float = Field(2.0**16, gt=0)


class GuardConfig(Section):
    """Stability guards (trainer/guards.py): an update is skipped when the loss or gradient norm is
    not finite or jumps `spike_sigma` standard deviations above the window of recent accepted steps;
    `rollback_after` skipped steps among the last `rollback_window` roll back to the last good
    checkpoint, past the data that was being read."""

    z_loss: float = Field(1e-4, ge=0, description="coefficient of the z-loss, mean(log Z)²; 0 disables")
    spike_sigma: float = Field(6.0, ge=0, description="skip steps this many deviations above the mean; 0 disables")
    spike_window: int = Field(128, ge=2, description="accepted steps the mean and deviation are taken over")
    spike_min_history: int = Field(32, ge=2, description="accepted steps before spikes are looked for")
    spike_min_loss_jump: float = Field(0.05, ge=0, description="and a spike is at least this far above the "
                                       "mean loss, relatively (a flat curve has a tiny deviation)")
    spike_min_norm_jump: float = Field(1.0, ge=0, description="... and this far above the mean gradient norm "
                                       "(it grows during warmup)")
    level_shift_steps: int = Field(3, ge=0, description="this many finite rises above the limit in a row are "
                                   "a new level, not spikes: the last is applied and the window rescaled to "
                                   "it (so the first level_shift_steps - 1 are skipped); 0 disables")
    rollback_after: int = Field(4, ge=0, description="skipped steps that trigger a rollback; 0 disables")
    rollback_window: int = Field(50, ge=1, description="recent steps in which they are counted")
    max_rollbacks: int = Field(3, ge=0, description="give up after this many rollbacks")
    rollback_lr_factor: float = Field(1.0, gt=0, le=1, description="multiply the learning rate by this "
                                      "at each rollback")
    bad_batch_period: int = Field(4, ge=0, description="a window that repeats a pattern of up to this many "
                                  "tokens is degenerate; 0 disables the filter")
    bad_batch_fraction: float = Field(0.9, gt=0, le=1, description="... over this share of its tokens")


class FaultConfig(Section):
    """Fault injection, to drill the guards (tests, or before a long run): each fires once, at an
    optimizer step, on one rank, in the first launch only (not after torchrun restarts the job)."""

    nan_grad_steps: list[int] = Field(default_factory=list, description="make gradients NaN at these steps")
    spike_steps: list[int] = Field(default_factory=list, description="scale the loss ×spike_scale at these steps")
    spike_scale: float = Field(30.0, gt=1)
    skip_steps: list[int] = Field(default_factory=list, description="skip the update at these steps, as the "
                                  "guards do (a reference for the other faults)")
    grad_scale_from: Optional[int] = Field(None, ge=1, description="from this step on, for good, scale every "
                                           "rank's gradients ×grad_scale: a genuine new level of the gradient norm")
    grad_scale: float = Field(2.0, gt=0)
    kill_step: Optional[int] = Field(None, ge=1, description="SIGKILL this rank after this step")
    kill_in_save_step: Optional[int] = Field(None, ge=1, description="SIGKILL this rank while the checkpoint of this step "
                                             "is being written (after staging, before its manifest)")
    term_step: Optional[int] = Field(None, ge=1, description="send this process SIGTERM after this step")
    rank: int = Field(0, ge=0, description="the rank the faults happen on")


class CheckpointConfig(Section):
    every: int = Field(0, ge=0, description="save every N steps; 0 saves only at the end")
    keep: int = Field(2, ge=1, description="checkpoints kept on disk")
    resume: str = Field("auto", description="'auto' (the latest good one in the run), 'none', or a step_<n> path")
    save_final: bool = True
    verify: bool = Field(True, description="check every file's checksum against the manifest before loading")
    async_save: bool = Field(True, description="write checkpoints in the background: training waits only while "
                             "the state is copied to host memory (which holds one extra copy of it)")


class LogConfig(Section):
    every: int = Field(10, ge=1)
    progress: bool = True
    tensorboard: bool = True
    noise_scale: bool = Field(True, description="measure the gradient noise scale (the critical batch, "
                              "McCandlish et al. 2018) where a step has several micro-batches of local gradients")

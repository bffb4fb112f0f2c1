"""Argument groups shared by the commands, each defined once: the fit, the law, the model shape, the
layout planner's model / hardware / training / plan groups, and --json."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Optional

from planner.hardware import SOFTWARE
from planner.scaling.grid import DEFAULT_SLICES, DEFAULT_STARTS, default_grid, load_grid
from planner.scaling.law import PRESETS
from planner.scaling.objectives import ASYMMETRIC_WEIGHT, HUBER_DELTA, OBJECTIVES, Objective
from planner.scaling.runs import Runs

if TYPE_CHECKING:
    from planner.scaling.fit import FitResult


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fit")
    group.add_argument("--objective", choices=OBJECTIVES, default="huber",
                       help="huber: Hoffmann et al.'s Huber on log loss (default); asymmetric: lower envelope; "
                            "mse-log: squared log error")
    group.add_argument("--delta", type=float, default=HUBER_DELTA, help="Huber delta (default 1e-3)")
    group.add_argument("--weight", type=float, default=ASYMMETRIC_WEIGHT,
                       help="asymmetric: weight of over-predictions (default 10)")
    group.add_argument("--grid-slices", type=int, default=DEFAULT_SLICES, metavar="K",
                       help=f"values per parameter of the initial-value grid, K^5 points (default {DEFAULT_SLICES})")
    group.add_argument("--grid", metavar="GRID.yaml",
                       help="per-parameter ranges: keys log_E/log_A/log_B (or E/A/B), alpha, beta; each a list "
                            "or {start, stop, num}")
    group.add_argument("--starts", type=int, default=DEFAULT_STARTS,
                       help=f"best grid points refined with quasi-Newton (default {DEFAULT_STARTS})")
    group.add_argument("--optimizer", choices=("BFGS", "L-BFGS-B"), default="BFGS",
                       help="refinement method; both use the exact gradient (default BFGS)")


def objective_from_args(args: argparse.Namespace) -> Objective:
    return Objective(kind=args.objective, delta=args.delta, weight=args.weight)


def fit_from_args(args: argparse.Namespace, runs: Runs) -> "FitResult":
    from planner.scaling.fit import fit_law

    grid = load_grid(args.grid, runs, args.grid_slices) if args.grid else default_grid(runs, args.grid_slices)
    return fit_law(runs, objective_from_args(args), grid=grid, n_starts=max(1, args.starts), method=args.optimizer)


def add_law_argument(parser: argparse.ArgumentParser, default: Optional[str] = "chinchilla") -> None:
    parser.add_argument("--law", default=default, metavar="LAW",
                        help=f"a preset ({', '.join(PRESETS)}) or a FIT.json written by `scaleplan fit --json`")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_shape_arguments(parser: argparse.ArgumentParser, arch_default: Optional[str] = "gpt") -> None:
    group = parser.add_argument_group("model shape")
    group.add_argument("--arch", choices=("gpt", "llama"), default=arch_default, help="model family")
    group.add_argument("--vocab-size", type=int, default=None, help="default 50304 (gpt) / 32000 (llama)")
    group.add_argument("--seq-len", type=int, default=None, help="default 2048 (gpt) / 4096 (llama)")
    group.add_argument("--tie-embeddings", action="store_true", help="share input and output embeddings")


def add_layout_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The layout planner's inputs (`scaleplan plan`; `launch/train.py --dry-run` takes their defaults)."""
    from planner.layout.inputs import ACCOUNTINGS, MEMORY_MODELS, PRECISIONS

    model = parser.add_argument_group("model (give --params, the shape flags, or --config)")
    model.add_argument("--config", help="a training config YAML: plan its model, batch and precision")
    model.add_argument("--params", type=float, help="target parameter count, e.g. 7e9 (shaped automatically)")
    model.add_argument("--arch", choices=("gpt", "llama"), default=None, help="gpt or llama (default llama)")
    model.add_argument("--layers", type=int)
    model.add_argument("--hidden", type=int, help="d_model")
    model.add_argument("--heads", type=int)
    model.add_argument("--kv-heads", type=int, help="key/value heads (grouped-query attention)")
    model.add_argument("--ffn-hidden", type=int)
    model.add_argument("--vocab", type=int, help="vocabulary size (default 32000 llama, 50304 gpt)")
    model.add_argument("--seq-len", type=int, help="sequence length (default 4096 llama, 2048 gpt)")
    hw = parser.add_argument_group("hardware")
    hw.add_argument("--gpus", type=int, help="number of GPUs (default 8)")
    hw.add_argument("--gpus-per-node", type=int, default=8)
    hw.add_argument("--gpu", default="h100-sxm", help="GPU id: a100-40gb, a100-80gb, h100-sxm, "
                    "h100-pcie, h200, b200, l40s, a10, v100-32gb, or one from --gpu-catalog")
    hw.add_argument("--gpu-catalog", help="YAML file of extra GPUs ({id: {hbm_gib, peak_bf16_tflops, "
                    "intra_node_gbps, network_gbps, ...}})")
    hw.add_argument("--software", choices=tuple(SOFTWARE), default="current",
                    help="the training stack's sustained GEMM / attention efficiency on the GPU's generation: "
                         "current (PyTorch-native: torchtitan, this trainer), 2023 (early Hopper kernels), "
                         "nemo (NeMo / Megatron-Core with Transformer Engine, TP communication overlapped)")
    run = parser.add_argument_group("training")
    run.add_argument("--global-batch", type=int, help="sequences per optimizer step")
    run.add_argument("--global-batch-tokens", type=float,
                     help="tokens per optimizer step (default 4M when neither is given)")
    run.add_argument("--precision", choices=PRECISIONS, default=None,
                     help="compute dtype (default bf16, or the config's)")
    run.add_argument("--backend", choices=("auto", "ddp", "fsdp", "deepspeed"), default="auto",
                     help="auto: DDP for zero=0, DeepSpeed ZeRO for 1-2 (FSDP2 with tp, pp or cp), FSDP2 for 3")
    run.add_argument("--attention", choices=("flash", "math"), default="flash",
                     help="flash keeps no s×s scores (default); math does")
    plan = parser.add_argument_group("plan")
    plan.add_argument("--layout", help="evaluate one layout: dp=8,tp=8,pp=1,cp=1,zero=1,mb=2,"
                      "recompute=none|selective|full,sp=true|false,lean_sp=true|false,"
                      "schedule=gpipe|1f1b|interleaved|zero_bubble,vpp=2,pp_layers=5:6:6:5 (blocks per stage)")
    plan.add_argument("--memory-model", choices=MEMORY_MODELS, default="rule24",
                      help="which memory model decides what fits (both are always shown)")
    plan.add_argument("--accounting", choices=ACCOUNTINGS, default="native",
                      help="native: as the trainer stores them; deepspeed: model states as DeepSpeed's estimators count them; megatron: activations as Korthikanti et al. 2022 count them")
    plan.add_argument("--top", type=int, default=10, help="layouts shown (0: all that fit)")
    plan.add_argument("--calibration", action="store_true",
                      help="print the cost model's forecast of each published run it is calibrated "
                           "against (published vs predicted step time, error %%) and exit")
    plan.add_argument("--json", action="store_true", help="print JSON instead of tables")
    plan.add_argument("--plots", metavar="DIR", help="write memory plots (PNG) here")
    plan.add_argument("--emit-config", metavar="OUT.yaml",
                      help="write the first-ranked layout as a training config (or, if the trainer does "
                           "not run it, the best one it does, saying so)")
    plan.add_argument("--emit-sbatch", metavar="JOB.sbatch",
                      help="also write an sbatch script for it, nodes and GPUs sized from the plan (the config "
                           "goes beside it as JOB.yaml unless --emit-config names it)")


def layout_plan_defaults() -> argparse.Namespace:
    """The layout planner's arguments as if none were given on the command line."""
    parser = argparse.ArgumentParser()
    add_layout_plan_arguments(parser)
    return parser.parse_args([])

"""From command-line flags or a training config to the layout planner's inputs, and the plan of a
config's own layout (for `launch/train.py --dry-run` and a run's plan.json)."""
from __future__ import annotations

import argparse
import time
from typing import Optional

from launch.arguments import layout_plan_defaults
from parallel.layout import Layout
from planner.errors import UserError
from planner.hardware import get_gpu, with_software
from planner.layout.inputs import PlanInputs
from planner.layout.memory import stage_memory
from planner.layout.report import render, to_json
from planner.layout.search import evaluate_layout, parse_layout, search
from planner.model_spec import ModelSpec
from planner.scaling.shape import DEFAULT_SEQ_LEN, DEFAULT_VOCAB, spec_for_params


def _positive(name: str, value) -> None:
    if value is not None and value <= 0:
        raise UserError(f"{name} must be positive, got {value:g}")


def model_spec_from_args(args: argparse.Namespace, cfg=None):
    """ModelSpec from --config, --params or the shape flags (exactly one way)."""
    shape_flags = {"--layers": args.layers, "--hidden": args.hidden, "--heads": args.heads}
    given_shape = [k for k, v in shape_flags.items() if v is not None]
    for name, value in (("--layers", args.layers), ("--hidden", args.hidden), ("--heads", args.heads),
                        ("--kv-heads", args.kv_heads), ("--ffn-hidden", args.ffn_hidden),
                        ("--vocab", args.vocab), ("--seq-len", args.seq_len), ("--params", args.params)):
        _positive(name, value)
    ways = sum([cfg is not None, args.params is not None, bool(given_shape)])
    if ways > 1:
        raise UserError("give the model one way: --config, --params, or --layers/--hidden/--heads")
    if cfg is not None:
        return cfg.model.spec()
    arch = args.arch or "llama"
    vocab = args.vocab or DEFAULT_VOCAB[arch]
    seq = args.seq_len or DEFAULT_SEQ_LEN[arch]
    if args.params is not None:
        return spec_for_params(args.params, arch, seq, vocab)
    if len(given_shape) < 3:
        raise UserError("describe the model: --params N, or all of --layers, --hidden and --heads "
                        f"(missing {', '.join(k for k in shape_flags if shape_flags[k] is None)})")
    if args.hidden % args.heads:
        raise UserError(f"--hidden {args.hidden} is not divisible by --heads {args.heads}")
    if args.kv_heads and args.heads % args.kv_heads:
        raise UserError(f"--heads {args.heads} is not divisible by --kv-heads {args.kv_heads}")
    return ModelSpec(arch=arch, n_layers=args.layers, d_model=args.hidden, n_heads=args.heads,
                     n_kv_heads=args.kv_heads, ffn_hidden=args.ffn_hidden, vocab_size=vocab, seq_len=seq)


def global_batch_from_args(args: argparse.Namespace, spec, cfg=None) -> int:
    _positive("--global-batch", args.global_batch)
    _positive("--global-batch-tokens", args.global_batch_tokens)
    if args.global_batch is not None and args.global_batch_tokens is not None:
        raise UserError("give --global-batch (sequences) or --global-batch-tokens, not both")
    if args.global_batch is not None:
        return args.global_batch
    if args.global_batch_tokens is not None:
        tokens = int(args.global_batch_tokens)
        if tokens % spec.seq_len:
            raise UserError(f"--global-batch-tokens {tokens} is not a multiple of the sequence length "
                            f"{spec.seq_len}")
        return tokens // spec.seq_len
    if cfg is not None:
        return cfg.global_batch
    return max(1, 4 * 2**20 // spec.seq_len)   # 4M tokens, as Llama 2 trained with


def build_inputs(args: argparse.Namespace, cfg=None, n_gpus: Optional[int] = None):
    spec = model_spec_from_args(args, cfg)
    if n_gpus is None:
        n_gpus = args.gpus if args.gpus is not None else 8
    _positive("--gpus", n_gpus)
    _positive("--gpus-per-node", args.gpus_per_node)
    if n_gpus > 1_000_000:
        raise UserError(f"--gpus {n_gpus} is more than this planner searches (1,000,000)")
    precision = args.precision or (cfg.precision.dtype if cfg is not None else "bf16")
    gpu = with_software(get_gpu(args.gpu, args.gpu_catalog), getattr(args, "software", "current"))
    return PlanInputs(spec=spec, gpu=gpu, n_gpus=n_gpus,
                      global_batch=global_batch_from_args(args, spec, cfg),
                      gpus_per_node=min(args.gpus_per_node, n_gpus), precision=precision,
                      backend=args.backend, attention=args.attention,
                      memory_model=args.memory_model, accounting=args.accounting)


def plan(inputs, layout_text: Optional[str] = None, layout=None):
    """Search, or evaluate one layout; returns (result, seconds)."""
    start = time.perf_counter()
    if layout_text is not None:
        layout = parse_layout(layout_text, inputs.n_gpus)
    result = evaluate_layout(inputs, layout) if layout is not None else search(inputs)
    return result, time.perf_counter() - start


def config_layout(cfg, world_size: int) -> tuple[Layout, str]:
    """(Layout, backend) a training config runs on `world_size` ranks: the trainer's own reading of it,
    by the layout rules both the trainer and the planner ask."""
    from trainer.run_layout import resolve_layout

    return resolve_layout(cfg, world_size)


def config_plan(cfg, world_size: int, gpu_id: Optional[str], gpus_per_node: int, resolved: Resolved = None):
    """(result, seconds) for a training config's own layout on `world_size` ranks; `resolved`: the
    caller's `config_layout(cfg, world_size)`, so that start-up reads the layout once."""
    layout, backend = resolved or config_layout(cfg, world_size)
    args = layout_plan_defaults()
    args.gpu = gpu_id or "h100-sxm"
    args.gpus_per_node = gpus_per_node
    args.backend = backend
    inputs = build_inputs(args, cfg, n_gpus=world_size)
    return plan(inputs, layout=layout)


def print_config_plan(cfg, world_size: int, gpu_id: Optional[str], gpus_per_node: int,
                      resolved: Resolved = None) -> None:
    """The plan of a training config's own layout on `world_size` ranks (launch/train.py --dry-run)."""
    result, elapsed = config_plan(cfg, world_size, gpu_id, gpus_per_node, resolved)
    render(result, top=1, elapsed_s=elapsed)
    if gpu_id is None:
        print("(no --gpu given: planned for h100-sxm)")


def config_plan_json(cfg, world_size: int, gpu_id: Optional[str], gpus_per_node: int = 8,
                     resolved: Resolved = None) -> dict:
    """The same plan as the `--json` schema (one layout), e.g. for a run directory's plan.json, with
    the model-state bytes one rank holds (parameters, gradients, optimizer states), which the run
    measures too (metrics.jsonl's `model_states_gib`)."""
    result = config_plan(cfg, world_size, gpu_id, gpus_per_node, resolved)[0]
    states = stage_memory(result.inputs, result.layouts, 0)["model_state_tensors"][0]
    return {**to_json(result, 1), "model_states_gib": float(states) / 2**30}

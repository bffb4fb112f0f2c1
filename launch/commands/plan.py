"""`scaleplan plan`: which data / tensor / pipeline layouts fit in GPU memory, and how fast each runs.

Searches every dp × tp × pp split of the GPUs with sharding stage, micro-batch, recomputation and
pipeline schedule (or evaluates one `--layout`), shows the `rule24` and `detailed` memory models side
by side, ranks what fits by predicted tokens/s, and can write the chosen layout as a training config.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import typing
from pathlib import Path
from typing import Optional

from planner.plan_inputs import ACCOUNTINGS, MEMORY_MODELS, PRECISIONS

NAME = "plan"
HELP = "plan memory and parallel layout: which dp × tp × pp layouts fit, and how fast they run"

ARCHS = ("gpt", "llama")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model (give --params, the shape flags, or --config)")
    model.add_argument("--config", help="a training config YAML: plan its model, batch and precision")
    model.add_argument("--params", type=float, help="target parameter count, e.g. 7e9 (shaped automatically)")
    model.add_argument("--arch", choices=ARCHS, default=None, help="gpt or llama (default llama)")
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
    run = parser.add_argument_group("training")
    run.add_argument("--global-batch", type=int, help="sequences per optimizer step")
    run.add_argument("--global-batch-tokens", type=float,
                     help="tokens per optimizer step (default 4M when neither is given)")
    run.add_argument("--precision", choices=PRECISIONS, default=None,
                     help="compute dtype (default bf16, or the config's)")
    run.add_argument("--backend", choices=("auto", "ddp", "fsdp", "deepspeed"), default="auto",
                     help="auto: DDP for zero=0, DeepSpeed ZeRO for 1-2, FSDP2 for 3")
    run.add_argument("--attention", choices=("flash", "math"), default="flash",
                     help="flash keeps no s×s scores (default); math does")
    plan = parser.add_argument_group("plan")
    plan.add_argument("--layout", help="evaluate one layout: dp=8,tp=8,pp=1,zero=1,mb=2,"
                      "recompute=none|selective|full,sp=true|false,schedule=gpipe|1f1b|interleaved,vpp=2")
    plan.add_argument("--memory-model", choices=MEMORY_MODELS, default="rule24",
                      help="which memory model decides what fits (both are always shown)")
    plan.add_argument("--accounting", choices=ACCOUNTINGS, default="native",
                      help="count model states as each backend stores them, or as DeepSpeed's estimators do")
    plan.add_argument("--top", type=int, default=10, help="layouts shown (0: all that fit)")
    plan.add_argument("--json", action="store_true", help="print JSON instead of tables")
    plan.add_argument("--plots", metavar="DIR", help="write memory plots (PNG) here")
    plan.add_argument("--emit-config", metavar="OUT.yaml",
                      help="write the best layout the trainer can run as a training config")


def _positive(name: str, value) -> None:
    from planner.errors import UserError

    if value is not None and value <= 0:
        raise UserError(f"{name} must be positive, got {value:g}")


def model_spec_from_args(args: argparse.Namespace, cfg=None):
    """ModelSpec from --config, --params or the shape flags (exactly one way)."""
    from planner.errors import UserError
    from planner.model_shape import spec_for_params
    from planner.model_spec import ModelSpec

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
    from planner.shape import DEFAULT_SEQ_LEN, DEFAULT_VOCAB

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
    from planner.errors import UserError

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
    from planner.errors import UserError
    from planner.hardware import get_gpu
    from planner.plan_inputs import PlanInputs

    spec = model_spec_from_args(args, cfg)
    if n_gpus is None:
        n_gpus = args.gpus if args.gpus is not None else 8
    _positive("--gpus", n_gpus)
    _positive("--gpus-per-node", args.gpus_per_node)
    if n_gpus > 1_000_000:
        raise UserError(f"--gpus {n_gpus} is more than this planner searches (1,000,000)")
    precision = args.precision or (cfg.precision.dtype if cfg is not None else "bf16")
    return PlanInputs(spec=spec, gpu=get_gpu(args.gpu, args.gpu_catalog), n_gpus=n_gpus,
                      global_batch=global_batch_from_args(args, spec, cfg),
                      gpus_per_node=min(args.gpus_per_node, n_gpus), precision=precision,
                      backend=args.backend, attention=args.attention,
                      memory_model=args.memory_model, accounting=args.accounting)


def layout_from_config(cfg, world_size: int):
    """The layout a training config runs on `world_size` ranks (fields the config lacks default)."""
    from parallel.layout import Layout

    par = cfg.parallel
    tp, pp = getattr(par, "tp", 1), getattr(par, "pp", 1)
    zero = getattr(par, "zero_stage", 0)
    dp = max(1, world_size // (tp * pp))
    return Layout(dp_replicate=1 if zero else dp, dp_shard=dp if zero else 1, tp=tp, pp=pp,
                  zero_stage=zero, micro_batch=cfg.train.micro_batch,
                  recompute=getattr(par, "recompute", "none"),
                  pp_schedule=getattr(par, "pp_schedule", "1f1b"),
                  sequence_parallel=getattr(par, "sequence_parallel", False), vpp=getattr(par, "vpp", 1))


def _config_backend(cfg) -> str:
    backend = getattr(cfg.parallel, "backend", "ddp")
    return backend if backend in ("ddp", "fsdp", "deepspeed") else "auto"


def parallel_section(layout, backend: str) -> Optional[dict]:
    """The trainer config's `parallel` section for this layout, or None if its fields cannot say it."""
    from trainer.config import ParallelConfig

    fields = ParallelConfig.model_fields
    allowed_backends = typing.get_args(fields["backend"].annotation) if "backend" in fields else ("ddp",)
    if backend not in allowed_backends:
        return None
    section: dict = {"backend": backend} if "backend" in fields else {}
    wanted = {"tp": layout.tp, "pp": layout.pp, "zero_stage": layout.zero_stage,
              "dp_shard": layout.dp_shard, "dp_replicate": layout.dp_replicate,
              "recompute": layout.recompute, "pp_schedule": layout.pp_schedule,
              "sequence_parallel": layout.sequence_parallel, "vpp": layout.vpp}
    defaults = {"tp": 1, "pp": 1, "zero_stage": 0, "recompute": "none", "pp_schedule": "1f1b",
                "sequence_parallel": False, "vpp": 1}
    for name, value in wanted.items():
        if name in fields:
            section[name] = value
        elif name in defaults and value != defaults[name]:
            return None          # the trainer cannot express this yet
    return section


def emit_config(path: str, result, index: int, base_config: Optional[str]) -> None:
    """Write layout `index` of `result` as a config `load_config` accepts (validated before writing)."""
    import yaml

    from planner.errors import UserError
    from trainer.config import load_config

    spec, layout = result.inputs.spec, result.layouts.layout(index)
    section = parallel_section(layout, result.layouts.backend_name(index))
    if section is None:
        raise UserError("the trainer's config cannot express this layout yet")
    # the base config was validated by load_config already, so it reads as a mapping
    tree = (yaml.safe_load(Path(base_config).read_text()) or {}) if base_config else {}
    model = dict(tree.get("model", {}))
    model.update(arch=spec.arch, n_layers=spec.n_layers, d_model=spec.d_model, n_heads=spec.n_heads,
                 n_kv_heads=spec.n_kv_heads, ffn_hidden=spec.ffn_hidden, vocab_size=spec.vocab_size,
                 seq_len=spec.seq_len, tie_embeddings=spec.tie_embeddings, bias=spec.bias)
    train = {k: v for k, v in dict(tree.get("train", {})).items() if k != "global_batch_tokens"}
    train.update(global_batch=result.inputs.global_batch, micro_batch=layout.micro_batch)
    tree.update(model=model, train=train, precision={**dict(tree.get("precision", {})),
                                                     "dtype": result.inputs.precision},
                parallel={**dict(tree.get("parallel", {})), **section})
    text = "# Written by `scaleplan plan --emit-config`; layout " + _describe(layout) + "\n" + \
        yaml.safe_dump(tree, sort_keys=False)
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch) / "plan.yaml"
        trial.write_text(text)
        load_config(trial)           # raises (one line) if the trainer would not accept it
    out = Path(path)
    if out.parent and not out.parent.exists():
        raise UserError(f"--emit-config: directory {out.parent} does not exist")
    out.write_text(text)


def _describe(layout) -> str:
    from planner.search import describe

    return describe(layout)


def plan(inputs, layout_text: Optional[str] = None, layout=None):
    """Search, or evaluate one layout; returns (result, seconds)."""
    from planner.search import evaluate_layout, parse_layout, search

    start = time.perf_counter()
    if layout_text is not None:
        layout = parse_layout(layout_text, inputs.n_gpus)
    result = evaluate_layout(inputs, layout) if layout is not None else search(inputs)
    return result, time.perf_counter() - start


def config_plan(cfg, world_size: int, gpu_id: Optional[str], gpus_per_node: int):
    """(result, seconds) for a training config's own layout on `world_size` ranks."""
    args = build_parser_defaults()
    args.gpu = gpu_id or "h100-sxm"
    args.gpus_per_node = gpus_per_node
    args.backend = _config_backend(cfg)
    inputs = build_inputs(args, cfg, n_gpus=world_size)
    return plan(inputs, layout=layout_from_config(cfg, world_size))


def print_config_plan(cfg, world_size: int, gpu_id: Optional[str], gpus_per_node: int) -> None:
    """The plan of a training config's own layout on `world_size` ranks (launch/train.py --dry-run)."""
    from planner.plan_report import render

    result, elapsed = config_plan(cfg, world_size, gpu_id, gpus_per_node)
    render(result, top=1, elapsed_s=elapsed)
    if gpu_id is None:
        print("(no --gpu given: planned for h100-sxm)")


def config_plan_json(cfg, world_size: int, gpu_id: Optional[str], gpus_per_node: int = 8) -> dict:
    """The same plan as the `--json` schema (one layout), e.g. for a run directory's plan.json."""
    from planner.plan_report import to_json

    return to_json(config_plan(cfg, world_size, gpu_id, gpus_per_node)[0], 1)


def build_parser_defaults() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([])


def run(args: argparse.Namespace) -> int:
    from planner.errors import UserError
    from planner.plan_report import render, to_json

    cfg = None
    if args.config:
        from trainer.config import load_config

        cfg = load_config(args.config)
        if args.backend == "auto":
            args.backend = _config_backend(cfg)
    inputs = build_inputs(args, cfg)
    layout = None
    if cfg is not None and args.layout is None and args.emit_config is None:
        layout = layout_from_config(cfg, inputs.n_gpus)   # the config's own layout, as --dry-run
    result, elapsed = plan(inputs, args.layout, layout)

    if args.emit_config:
        runnable = [int(i) for i in result.ranked
                    if parallel_section(result.layouts.layout(int(i)), result.layouts.backend_name(int(i)))]
        if not runnable:
            raise UserError("none of the fitting layouts can be written as a training config yet (the "
                            "trainer runs " + ", ".join(_trainer_can_run()) + "); pass --layout with those")
        emit_config(args.emit_config, result, runnable[0], args.config)
    if args.json:
        print(json.dumps(to_json(result, args.top), indent=1))
    else:
        render(result, top=args.top if args.top > 0 else len(result.ranked), elapsed_s=elapsed)
        if args.emit_config:
            print(f"wrote {args.emit_config}: {_describe(result.layouts.layout(runnable[0]))}")
    if args.plots:
        from planner.plan_plots import write_plots

        for path in write_plots(result, args.plots):
            if not args.json:
                print(f"wrote {path}")
    return 0


def _trainer_can_run() -> list[str]:
    from trainer.config import ParallelConfig

    fields = ParallelConfig.model_fields
    backends = typing.get_args(fields["backend"].annotation) if "backend" in fields else ("ddp",)
    return [f"backend {'/'.join(backends)}"] + [name for name in ("tp", "pp", "zero_stage") if name in fields]

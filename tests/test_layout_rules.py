"""One set of layout rules (`parallel/layout.py`): the planner and the trainer refuse the same layouts.

The planner's check is what `scaleplan plan --layout` and a config's dry run go through
(`evaluate_layout`: refused, or evaluated and marked when only this project's trainer does not run
it); the trainer's is `resolve_layout` on the config written from the same layout. Before the rules
were one, they disagreed on e.g. DeepSpeed at ZeRO stage 0, zero_bubble's micro-batches, DeepSpeed
with TP or PP, tied embeddings over a pipeline and TP not dividing the FFN width.
"""
from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest

from parallel.layout import BACKEND_STAGES, BACKENDS, Layout, backend_for, micro_batch_problem, trainer_refusals
from parallel.stage_cut import stage_layer_counts
from planner.errors import UserError
from planner.hardware import CATALOG
from planner.layout.inputs import PlanInputs
from planner.layout.candidates import LayoutArrays
from planner.layout.search import enumerate_layouts, evaluate, evaluate_layout, layout_problems
from trainer.config import Config
from trainer.run_layout import resolve_layout

REPO = Path(__file__).resolve().parents[1]
# llama with grouped-query attention; gpt with tied embeddings, 6 layers (pp=4 does not divide them)
# and an FFN width of 130 (tp=4 does not divide it)
MODELS = {"llama": {"arch": "llama", "n_layers": 4, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 96},
          "gpt": {"arch": "gpt", "n_layers": 6, "d_model": 64, "n_heads": 4, "ffn_hidden": 130, "tie_embeddings": True}}
SCHEDULES = [("1f1b", 1), ("gpipe", 1), ("interleaved", 2), ("zero_bubble", 2), ("zero_bubble", 1), ("1f1b", 2)]


def config_for(model: str, backend: str, layout: Layout, global_batch: int) -> Config:
    """The training config that states `layout` in full (nothing left for the trainer to derive)."""
    return Config.model_validate({
        "model": MODELS[model], "train": {"global_batch": global_batch},
        "parallel": {"backend": backend, "dp_replicate": layout.dp_replicate, "dp_shard": layout.dp_shard,
                     "tp": layout.tp, "pp": layout.pp, "zero_stage": layout.zero_stage,
                     "micro_batch": layout.micro_batch, "pp_schedule": layout.pp_schedule, "vpp": layout.vpp,
                     "sequence_parallel": layout.sequence_parallel}})


def trainer_refuses(config: Config, world: int) -> bool:
    try:
        resolve_layout(config, world)
    except UserError:
        return True
    return False


def planner_refuses(config: Config, backend: str, layout: Layout, world: int, evaluated: bool = False) -> bool:
    """Refused by the planner's layout check, or marked as not run by this project's trainer;
    `evaluated`: through the whole of evaluate_layout (memory and cost too, ~10 ms)."""
    inputs = PlanInputs(config.model.spec(), CATALOG["h100-sxm"], world, config.global_batch,
                        gpus_per_node=8, backend=backend)
    if not evaluated:
        marks = LayoutArrays.from_layouts([layout], backend).trainer_refusals(inputs.spec.tie_embeddings)
        return bool(layout_problems(inputs, layout)) or marks[0] != ""
    try:
        return not bool(evaluate_layout(inputs, layout).runnable[0])
    except UserError:
        return True


def grid(per_verdict: int = 300) -> list[tuple]:
    """(model, backend, layout, global batch, world size): seeded draws over every choice below until
    `per_verdict` layouts the trainer runs and as many it refuses, plus the layouts the planner and
    the trainer used to disagree on."""
    rng = random.Random(0)
    cases, kept = [], {True: 0, False: 0}
    while min(kept.values()) < per_verdict:
        # repeated choices weight the draw towards layouts that run, so that both verdicts come up often
        model, backend, zero = rng.choice(("llama", "llama", "gpt")), rng.choice(("auto", *BACKENDS)), rng.randrange(4)
        (replicate, shard), tp, pp = rng.choice(((1, 1), (2, 1), (1, 2), (2, 2))), rng.choice((1, 1, 2, 4)), \
            rng.choice((1, 1, 2, 4))
        schedule, vpp = rng.choice(SCHEDULES)
        layout = Layout(dp_replicate=replicate, dp_shard=shard, tp=tp, pp=pp, zero_stage=zero,
                        micro_batch=rng.choice((1, 2)), pp_schedule=schedule, vpp=vpp,
                        sequence_parallel=rng.choice((False, False, True)))
        batch, world = rng.choice((6, 8, 16, 16)), rng.choice((layout.world_size,) * 3 + (8,))
        verdict = trainer_refuses(config_for(model, backend, layout, batch), world)
        if kept[verdict] < per_verdict:
            cases.append((model, backend, layout, batch, world))
            kept[verdict] += 1
    return cases + [  # DeepSpeed at stage 0 (DDP's); zero_bubble with 3 micro-batches on 2 pipeline ranks;
        ("llama", "deepspeed", Layout(dp_replicate=2, zero_stage=0), 8, 2),
        ("llama", "auto", Layout(pp=2, micro_batch=2, pp_schedule="zero_bubble", vpp=2), 6, 2),
        # DeepSpeed with TP; tied embeddings over a pipeline; tp=4 against an FFN width of 130
        ("llama", "deepspeed", Layout(dp_shard=2, tp=2, zero_stage=2), 8, 4),
        ("gpt", "ddp", Layout(pp=2), 8, 2),
        ("gpt", "ddp", Layout(tp=4), 8, 4)]


def test_planner_and_trainer_refuse_the_same_layouts():
    cases = grid()
    for k, (model, backend, layout, batch, world) in enumerate(cases):
        config = config_for(model, backend, layout, batch)
        # every 20th (and the last few) also through the whole of evaluate_layout, the `--layout` path
        evaluated = k % 20 == 0 or k >= len(cases) - 5
        trainer, planner = trainer_refuses(config, world), planner_refuses(config, backend, layout, world, evaluated)
        assert planner == trainer, (f"{model}, backend {backend}, {layout}, global batch {batch}, world {world}: "
                                    f"planner {'refuses' if planner else 'accepts'}, trainer "
                                    f"{'refuses' if trainer else 'accepts'}")
    assert len(cases) >= 600


@pytest.mark.parametrize("model,n_gpus,global_batch,backend", [
    ("llama", 8, 16, "auto"), ("llama", 4, 6, "deepspeed"), ("gpt", 8, 12, "auto"), ("gpt", 4, 8, "fsdp"),
    ("llama", 8, 24, "ddp")])
def test_every_candidate_the_search_keeps_is_marked_as_the_trainer_judges_it(model, n_gpus, global_batch, backend):
    """The search prunes what the layout rules refuse and marks what only this trainer does not run:
    every kept candidate runs on the trainer exactly when it is marked runnable."""
    spec = config_for(model, "auto", Layout(), global_batch).model.spec()
    inputs = PlanInputs(spec, CATALOG["h100-sxm"], n_gpus, global_batch, backend=backend)
    layouts, _ = enumerate_layouts(inputs)
    result = evaluate(inputs, layouts)
    assert len(layouts) > 0
    for i in range(len(layouts)):
        layout = layouts.layout(i)
        config = config_for(model, layouts.backend_name(i), layout, global_batch)
        assert trainer_refuses(config, n_gpus) != bool(result.runnable[i]), (layout, result.refused[i])


def test_the_search_prunes_only_what_the_trainer_refuses():
    """Every pipeline layout the trainer accepts (in the search's own space: its schedules, vpp 2 or 4,
    a sharding stage only over several data-parallel ranks) is among the candidates."""
    model, n_gpus, batch = "llama", 8, 16
    spec = config_for(model, "auto", Layout(), batch).model.spec()
    layouts, _ = enumerate_layouts(PlanInputs(spec, CATALOG["h100-sxm"], n_gpus, batch))
    found = {(x.dp, x.tp, x.pp, x.zero_stage, x.micro_batch, x.pp_schedule, x.vpp)
             for x in map(layouts.layout, range(len(layouts)))}
    expected = set()
    for tp, pp, zero, mb, (schedule, vpp) in itertools.product(
            (1, 2), (2, 4), range(4), (1, 2, 4, 8), [("gpipe", 1), ("1f1b", 1), ("interleaved", 2)]):
        dp = n_gpus // (tp * pp)
        if zero and dp == 1:
            continue
        layout = Layout(dp_replicate=1 if zero else dp, dp_shard=dp if zero else 1, tp=tp, pp=pp,
                        zero_stage=zero, micro_batch=mb, pp_schedule=schedule, vpp=vpp)
        if not trainer_refuses(config_for(model, "auto", layout, batch), n_gpus):
            expected.add((dp, tp, pp, zero, mb, schedule, vpp))
    assert expected and expected <= found


def test_one_backend_stage_table_and_one_micro_batch_rule():
    """Grep-able: the backend -> stages table and the pipeline micro-batch rule are written once."""
    sources = {path: path.read_text() for package in ("launch", "trainer", "parallel", "planner")
               for path in (REPO / package).rglob("*.py")}
    tables = [path for path, text in sources.items() if re.search(r'"deepspeed":\s*\(\d', text)]
    rules = [path for path, text in sources.items() if "micro-batches per step, not" in text]
    assert tables == [REPO / "parallel" / "layout.py"] and rules == [REPO / "parallel" / "layout.py"]
    assert BACKEND_STAGES == {"ddp": (0,), "fsdp": (1, 2, 3), "deepspeed": (1, 2, 3), "auto": (0, 1, 2, 3)}
    assert all(zero in BACKEND_STAGES[backend_for("auto", zero)] for zero in range(4))


@pytest.mark.parametrize("pp,schedule,n_micro,refused", [
    (1, "1f1b", 1, False), (2, "1f1b", 1, True), (2, "gpipe", 3, False), (2, "interleaved", 3, True),
    (2, "zero_bubble", 3, True), (2, "zero_bubble", 4, False), (4, "interleaved", 2, True), (4, "1f1b", 6, False)])
def test_micro_batch_rule(pp, schedule, n_micro, refused):
    assert bool(micro_batch_problem(pp, schedule, n_micro)) == refused


def test_mesh_shape_and_micro_batches():
    layout = Layout(dp_replicate=2, dp_shard=4, tp=2, pp=3, micro_batch=2)
    assert layout.mesh_shape == (3, 2, 4, 1, 2) and layout.world_size == 48
    assert Layout(dp_shard=2, cp=2, tp=2).mesh_shape == (1, 1, 2, 2, 2)
    assert layout.micro_batches(32) == 2 and layout.micro_batches(24) is None


@pytest.mark.parametrize("n_layers,stages,cut", [
    (70, 12, (5,) + (6,) * 10 + (5,)),        # BLOOM's 70 layers on 12 stages
    (126, 16, (7,) + (8,) * 14 + (7,)),       # Llama 3 405B: first and last stage one block fewer
    (32, 4, (8, 8, 8, 8)), (8, 4, (2, 2, 2, 2)), (3, 3, (1, 1, 1)), (5, 2, (2, 3)), (7, 1, (7,))])
def test_balanced_stage_cut(n_layers, stages, cut):
    """The embedding and the head weigh a block each; equal cuts where the layers divide."""
    assert stage_layer_counts(n_layers, stages) == cut
    layout = Layout(pp=stages)
    assert layout.stage_layer_counts(n_layers) == cut and not layout.problems(stages, n_layers=n_layers)


@pytest.mark.parametrize("layout,seq_len,problem", [
    (Layout(pp=2, pp_layers=(3, 2)), 64, "sums to 5 blocks, but the model has 4"),
    (Layout(pp=2, pp_layers=(4, 0)), 64, "has an empty stage"),
    (Layout(pp=2, pp_layers=(1, 1, 2)), 64, "gives 3 stages, but pp 2 × vpp 1 = 2"),
    (Layout(pp=8), 64, "more pipeline stages than the 4 layers"),
    (Layout(cp=4), 36, "2 × cp = 8 chunks"),
])
def test_bad_stage_cuts_and_context_chunks(layout, seq_len, problem):
    found = "; ".join(layout.problems(layout.world_size, n_layers=4, seq_len=seq_len))
    assert problem in found, found


def test_zero_1_and_2_with_model_parallelism_run_on_fsdp():
    """DeepSpeed's engine runs data parallelism only, so `auto` gives ZeRO-1/2 with TP, PP or CP to FSDP2."""
    assert backend_for("auto", 1) == backend_for("auto", 2) == "deepspeed"
    assert backend_for("auto", 1, model_parallel=True) == backend_for("auto", 2, model_parallel=True) == "fsdp"
    assert trainer_refusals("deepspeed", 1, 1, cp=2)

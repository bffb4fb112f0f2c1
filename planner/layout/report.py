"""What `scaleplan plan` prints: the best layouts, their memory per GPU, and why the rest fail.

Rendering only; every number comes from memory.py and cost.py.
"""
from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from planner.layout.memory import PARTS, per_stage_breakdown
from planner.model_spec import count_params
from planner.layout.search import SPEED_TOLERANCE, PlanResult, describe

GIB = 2**30
ACCOUNTING_NOTE = {"deepspeed": " (model states: DeepSpeed accounting)",
                   "megatron": " (activations: Korthikanti et al. 2022's formulas)"}
SCHEDULE_NAMES = {"gpipe": "gpipe", "1f1b": "1f1b", "interleaved": "intlv", "zero_bubble": "zb"}
DISAGREE_RATIO = 1.25   # the two memory models "disagree" beyond this ratio, or on feasibility
STORAGE = {
    "ddp": "fp32 weights, gradients and moments, plus 16-bit weight copies under autocast",
    "fsdp": "fp32 shards of weights, gradients and moments, plus gathered compute-dtype blocks",
    "deepspeed": "16-bit weights and gradients, fp32 master weights, gradients and moments per ZeRO stage",
}


def gib(x) -> str:
    return f"{float(x) / GIB:.1f}"


def layout_record(result: PlanResult, i: int) -> dict:
    """One layout as the JSON schema of `--json` (memory in GiB)."""
    x, m, c = result.layouts, result.memory, result.cost
    layout = x.layout(i)
    return {
        "dp": layout.dp, "tp": layout.tp, "pp": layout.pp, "cp": layout.cp, "zero_stage": layout.zero_stage,
        "pp_layers": list(layout.stage_layer_counts(result.inputs.spec.n_layers)), "lean_sp": layout.lean_sp,
        "micro_batch": layout.micro_batch, "recompute": layout.recompute,
        "sequence_parallel": layout.sequence_parallel, "schedule": layout.pp_schedule,
        "vpp": layout.vpp, "backend": x.backend_name(i), "runnable": bool(result.runnable[i]),
        "refused": result.refused[i] or None,
        "memory_gib": {"rule24": float(m["rule24"][i]) / GIB, "detailed": float(m["detailed"][i]) / GIB,
                       "breakdown": {p: float(m["breakdown"][p][i]) / GIB for p in PARTS},
                       "rule24_breakdown": {p: float(v[i]) / GIB for p, v in m["rule24_breakdown"].items()},
                       "capacity": result.inputs.gpu.hbm_bytes / GIB},
        "fits": bool(m["fits"][i]), "fits_rule24": bool(m["fits_rule24"][i]),
        "fits_detailed": bool(m["fits_detailed"][i]),
        "step_time_s": float(c["step_time_s"][i]), "tokens_per_s": float(c["tokens_per_s"][i]),
        "mfu": float(c["mfu"][i]), "bubble_fraction": float(c["bubble_fraction"][i]),
        "comm_fraction": float(c["comm_fraction"][i]),
    }


def to_json(result: PlanResult, top: int) -> dict:
    chosen = result.ranked if top <= 0 else result.ranked[:top]
    return {"layouts": [layout_record(result, int(i)) for i in chosen]}


def explain_disagreement(result: PlanResult, i: int) -> str | None:
    """Where rule24 and detailed differ for layout i, and the parts that make the difference."""
    m, x, inputs = result.memory, result.layouts, result.inputs
    rule, detail = float(m["rule24"][i]), float(m["detailed"][i])
    fits_differ = bool(m["fits_rule24"][i]) != bool(m["fits_detailed"][i])
    if not fits_differ and max(rule, detail) / min(rule, detail) < DISAGREE_RATIO:
        return None
    r, d = m["rule24_breakdown"], m["breakdown"]
    states_rule = float(r["weights"][i] + r["gradients"][i] + r["optimizer"][i])
    states_detail = float(d["weights"][i] + d["gradients"][i] + d["optimizer"][i])
    act_rule = float(r["activations"][i])
    act_detail = float(d["activations"][i] + d["logits"][i])
    other = float(d["buffers"][i] + d["reserve"][i])
    capacity = inputs.gpu.hbm_bytes
    verdict = (f"rule24 {gib(rule)} GiB ({'fits' if rule <= capacity else 'too big'}) vs detailed "
               f"{gib(detail)} GiB ({'fits' if detail <= capacity else 'too big'})")
    reasons = []
    if abs(act_detail - act_rule) >= abs(states_detail - states_rule):
        layout = x.layout(i)
        reasons.append(
            f"activations: rule24 budgets 8 B/param = {gib(act_rule)} GiB whatever the batch, "
            f"Korthikanti's count for mb={layout.micro_batch} × {inputs.spec.seq_len} tokens, "
            f"recompute={layout.recompute}, {cut_text(layout.stage_layer_counts(inputs.spec.n_layers))} layers per stage"
            f"{' with micro-batches in flight (' + layout.pp_schedule + ')' if layout.pp > 1 else ''}"
            f" plus logits is {gib(act_detail)} GiB")
    else:
        zero = int(x.zero[i])
        over = f"dp={int(x.dp[i])}" + (f" × cp={int(x.cp[i])}" if x.cp[i] > 1 else "")
        sharding = f", ZeRO-{zero} sharded over {over}" if zero else ""
        reasons.append(f"model states: rule24 counts 4 + 4 + 8 B/param{sharding} = {gib(states_rule)} GiB, "
                       f"{x.backend_name(i)} in {inputs.precision} stores {gib(states_detail)} GiB "
                       f"({STORAGE[x.backend_name(i)]})")
    if other > 0.05 * detail:
        reasons.append(f"detailed adds {gib(other)} GiB of buffers and reserve (CUDA context, fragmentation)")
    return verdict + ": " + "; ".join(reasons)


def cut_text(counts: tuple[int, ...]) -> str:
    """Blocks per stage, runs compressed: (5, 6, 6, 6, 5) -> '5, 6×3, 5'."""
    runs: list[list[int]] = []
    for count in counts:
        if runs and runs[-1][0] == count:
            runs[-1][1] += 1
        else:
            runs.append([count, 1])
    return ", ".join(f"{count}×{times}" if times > 1 else str(count) for count, times in runs)


def stage_name(stage: int, pp: int) -> str:
    if pp == 1:
        return "only"
    return "first" if stage == 0 else ("last" if stage == pp - 1 else str(stage))


def bottleneck(result: PlanResult, i: int) -> str:
    c = result.cost
    parts = {"compute": c["compute_s"][i], "TP communication": c["tp_comm_s"][i],
             "pipeline bubble": c["bubble_s"][i] + c["p2p_s"][i],
             "exposed data-parallel communication": c["dp_comm_s"][i]}
    step = float(c["step_time_s"][i])
    return ", ".join(f"{name} {100 * float(v) / step:.0f}%" for name, v in parts.items() if v > 0.005 * step)


def render(result: PlanResult, top: int = 10, console: Console | None = None,
           elapsed_s: float | None = None) -> None:
    """Print the plan: header, best layouts, memory breakdown of the best, explanations, rejections."""
    console = console or Console(width=160)
    inputs, spec, m, c, x = result.inputs, result.inputs.spec, result.memory, result.cost, result.layouts
    console.print(
        f"[bold]Model[/] {spec.arch} {count_params(spec) / 1e9:.2f}B params: {spec.n_layers} layers, "
        f"d_model {spec.d_model}, {spec.n_heads} heads ({spec.kv_heads} KV), ffn {spec.ffn}, "
        f"vocab {spec.vocab_size}, seq {spec.seq_len}")
    console.print(
        f"[bold]Hardware[/] {inputs.n_gpus} × {inputs.gpu.name} ({inputs.gpu.hbm_bytes / GIB:.0f} GiB), "
        f"{inputs.gpus_per_node} per node   [bold]Batch[/] {inputs.global_batch} sequences = "
        f"{inputs.tokens_per_step:,} tokens/step   [bold]Precision[/] {inputs.precision}   "
        f"[bold]Feasibility by[/] {inputs.memory_model}"
        + ACCOUNTING_NOTE.get(inputs.accounting, ""))
    timing = f" in {elapsed_s:.2f} s" if elapsed_s is not None else ""
    console.print(f"{result.n_candidates} layouts evaluated{timing}, {len(result.ranked)} fit.")

    table = Table(title="Best layouts (ranked by predicted tokens/s)", show_lines=False)
    for name in ("#", "dp", "cp", "tp", "pp", "zero", "backend", "mb", "recomp", "sp", "schedule",
                 "rule24 GiB", "detailed GiB", "fits r24/det", "step s", "tokens/s", "MFU",
                 "bubble", "comm"):
        table.add_column(name, justify="right")
    for rank, i in enumerate(result.ranked[:top], 1):
        i = int(i)
        layout = x.layout(i)
        sched = "-" if layout.pp == 1 else SCHEDULE_NAMES[layout.pp_schedule] + (
            f"×{layout.vpp}" if layout.vpp > 1 else "")
        table.add_row(
            str(rank), str(layout.dp), str(layout.cp), str(layout.tp), str(layout.pp), str(layout.zero_stage),
            x.backend_name(i) + ("" if result.runnable[i] else "*"), str(layout.micro_batch), layout.recompute,
            ("lean" if layout.lean_sp else "gathered") if layout.sequence_parallel else "-", sched, gib(m["rule24"][i]), gib(m["detailed"][i]),
            ("✓" if m["fits_rule24"][i] else "✗") + "/" + ("✓" if m["fits_detailed"][i] else "✗"),
            f"{c['step_time_s'][i]:.2f}", f"{c['tokens_per_s'][i]:,.0f}", f"{100 * c['mfu'][i]:.1f}%",
            f"{100 * c['bubble_fraction'][i]:.0f}%", f"{100 * c['comm_fraction'][i]:.0f}%")
    console.print(table)
    refused = sorted({result.refused[int(i)] for i in result.ranked[:top]} - {""})
    if refused:
        console.print("* ranked, but this project's trainer does not run it: " + "; ".join(refused))

    parts_table = Table(title="Memory per GPU of the best layouts (detailed, GiB, peak stage)")
    for name in ("#", *PARTS, "total", "peak stage"):
        parts_table.add_column(name, justify="right")
    for rank, i in enumerate(result.ranked[:top], 1):
        i = int(i)
        parts_table.add_row(str(rank), *(gib(m["breakdown"][p][i]) for p in PARTS), gib(m["detailed"][i]),
                            stage_name(int(m["peak_stage"][i]), int(x.pp[i])))
    console.print(parts_table)

    best = int(result.ranked[0])
    stages = per_stage_breakdown(inputs, x, best)
    shown = sorted({0, int(m["peak_stage"][best]), len(stages) - 1})
    cut = x.layout(best).stage_layer_counts(spec.n_layers)
    console.print(f"[bold]#1[/]: {describe(x.layout(best))}, backend {x.backend_name(best)}"
                  + (f"; blocks per stage {cut_text(cut)}" if len(cut) > 1 else ""))
    breakdown = Table(title="Memory per GPU of #1")
    breakdown.add_column("part")
    breakdown.add_column("rule24 GiB", justify="right")
    for s in shown:
        breakdown.add_column(f"detailed GiB, stage {s}" if len(stages) > 1 else "detailed GiB", justify="right")
    rule_parts = m["rule24_breakdown"]
    for part in PARTS:
        rule = gib(rule_parts[part][best]) if part in rule_parts else "-"
        breakdown.add_row(part, rule, *(gib(stages[s][part]) for s in shown))
    breakdown.add_row("[bold]total", gib(m["rule24"][best]),
                      *(gib(sum(stages[s][p] for p in PARTS)) for s in shown))
    breakdown.add_row("capacity", gib(inputs.gpu.hbm_bytes), *(gib(inputs.gpu.hbm_bytes) for _ in shown))
    console.print(breakdown)

    capacity = inputs.gpu.hbm_bytes
    console.print(
        "[bold]Why #1[/]: step time is " + bottleneck(result, best) + f"; MFU {100 * c['mfu'][best]:.1f}%. "
        f"Memory: {gib(capacity - m['rule24'][best])} GiB spare under rule24, "
        f"{gib(capacity - m['detailed'][best])} GiB under detailed (stage {int(m['peak_stage'][best])} peaks).")
    if len(result.ranked) > 1:
        second = int(result.ranked[1])
        gain = float(c["tokens_per_s"][best] / c["tokens_per_s"][second] - 1)
        if gain >= 0:
            console.print(f"  #2 ({describe(x.layout(second))}) is {100 * gain:.1f}% slower: "
                          + bottleneck(result, second) + ".")
        else:
            console.print(
                f"  #2 ({describe(x.layout(second))}) is predicted {-100 * gain:.1f}% faster but needs "
                f"{gib(m['detailed'][second] - m['detailed'][best])} GiB more: within "
                f"{100 * SPEED_TOLERANCE:.0f}% of the fastest, the layout with more memory to spare ranks first.")
        fastest = int(result.ranked[int(np.argmax(c["tokens_per_s"][result.ranked]))])
        if fastest not in (best, second):
            why = (f"needs {gib(m['detailed'][fastest])} GiB (detailed)" if m["fits_detailed"][fastest] else
                   f"fits only by rule24: the detailed model puts it at {gib(m['detailed'][fastest])} GiB, "
                   f"over the {gib(capacity)} GiB")
            console.print(f"  The fastest fitting layout ({describe(x.layout(fastest))}) is "
                          f"{100 * float(c['tokens_per_s'][fastest] / c['tokens_per_s'][best] - 1):.1f}% "
                          f"faster but {why}.")
    disagreements = [(rank, explain_disagreement(result, int(i))) for rank, i in enumerate(result.ranked[:top], 1)]
    disagreements = [(rank, text) for rank, text in disagreements if text]
    if disagreements:
        console.print("[bold]Where rule24 and detailed disagree[/]:")
        for rank, text in disagreements[:3]:
            console.print(f"  #{rank}: {text}")

    shown_selective = any(x.recompute[int(i)] == 1 for i in result.ranked[:top])
    if shown_selective and inputs.attention == "flash":
        console.print("[bold]Note[/]: selective recomputation re-runs the attention scores so that the "
                      "s×s matrices are not stored (Korthikanti et al. 2022); flash attention never stores "
                      "them, so here it costs and saves nothing.")
    oom = result.oom
    if len(oom) or result.rejected:
        console.print("[bold]Rejected[/]:")
        for reason, count in result.rejected.most_common():
            console.print(f"  {count} × {reason}")
        if len(oom):
            i = int(oom[0])
            deciding = "detailed" if inputs.memory_model == "detailed" else "rule24"
            parts = m["breakdown"] if deciding == "detailed" else m["rule24_breakdown"]
            names = list(parts)
            largest_by_layout = np.argmax(np.stack([parts[p][oom] for p in names]), axis=0)
            counts = np.bincount(largest_by_layout, minlength=len(names))
            by_part = ", ".join(f"{names[k]} in {counts[k]}" for k in np.argsort(-counts) if counts[k])
            console.print(
                f"  {len(oom)} × out of memory under {deciding} (largest part: {by_part}); the smallest, "
                f"{describe(x.layout(i))}, needs {gib(m[deciding][i])} GiB of {gib(inputs.gpu.hbm_bytes)}")

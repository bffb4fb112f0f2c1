"""A layout as one line of text and back: `describe` writes the keys `--layout` reads (and the
trainer announces), `parse_layout` reads them. Rules on the values are the Layout's, not these."""
from __future__ import annotations

from parallel.layout import Layout
from planner.errors import UserError
from planner.layout.candidates import RECOMPUTE, SCHEDULES


def describe(layout: Layout) -> str:
    """Compact one-line form, the same keys --layout accepts."""
    text = (f"dp={layout.dp},tp={layout.tp},pp={layout.pp},zero={layout.zero_stage},"
            f"mb={layout.micro_batch},recompute={layout.recompute}")
    if layout.tp > 1:
        text += f",sp={str(layout.sequence_parallel).lower()}"
        text += ",lean_sp=false" if layout.sequence_parallel and not layout.lean_sp else ""
    if layout.pp > 1:
        text += f",schedule={layout.pp_schedule}" + (f",vpp={layout.vpp}" if layout.vpp > 1 else "")
        text += f",pp_layers={':'.join(map(str, layout.pp_layers))}" if layout.pp_layers else ""
    if layout.cp > 1:
        text += f",cp={layout.cp}"
    return text


LAYOUT_KEYS = ("dp", "tp", "pp", "cp", "zero", "mb", "recompute", "sp", "lean_sp", "schedule", "vpp", "pp_layers")


def parse_layout(text: str, n_gpus: int | None = None) -> Layout:
    """`dp=8,tp=8,pp=1,zero=1,mb=2,recompute=selective` -> Layout. Missing dp is inferred from the
    GPU count; sharded stages put the data-parallel ranks in dp_shard. `pp_layers=5:6:...:5` is an
    explicit cut (colons: commas separate the items)."""
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in LAYOUT_KEYS:
            raise UserError(f"--layout item '{item}' is not key=value with key one of {', '.join(LAYOUT_KEYS)}")
        values[key] = value.strip().lower()

    def integer(key: str, default: int) -> int:
        raw = values.get(key)
        if raw is None:
            return default
        if not raw.isdigit() or int(raw) < 1 and key != "zero":
            raise UserError(f"--layout {key}={raw} must be a positive integer")
        return int(raw)

    tp, pp, cp, zero = integer("tp", 1), integer("pp", 1), integer("cp", 1), integer("zero", 0)
    if zero not in (0, 1, 2, 3):
        raise UserError(f"--layout zero={zero} must be 0, 1, 2 or 3")
    model_ranks = tp * pp * cp
    default_dp = n_gpus // model_ranks if n_gpus and n_gpus % model_ranks == 0 else 1
    dp = integer("dp", default_dp)
    recompute = values.get("recompute", "none")
    if recompute not in RECOMPUTE:
        raise UserError(f"--layout recompute={recompute} must be one of {', '.join(RECOMPUTE)}")
    vpp = integer("vpp", 1)
    schedule = values.get("schedule", "interleaved" if vpp > 1 else "1f1b")
    if schedule not in SCHEDULES:
        raise UserError(f"--layout schedule={schedule} must be one of {', '.join(SCHEDULES)}")
    return Layout(dp_replicate=1 if zero else dp, dp_shard=dp if zero else 1, tp=tp, pp=pp, cp=cp,
                  zero_stage=zero, micro_batch=integer("mb", 1), recompute=recompute,
                  pp_schedule=schedule, sequence_parallel=_flag(values, "sp", False),
                  lean_sp=_flag(values, "lean_sp", True), vpp=vpp, pp_layers=_cut(values.get("pp_layers")))


def _flag(values: dict[str, str], key: str, default: bool) -> bool:
    raw = values.get(key)
    if raw is None:
        return default
    if raw not in ("true", "false", "1", "0"):
        raise UserError(f"--layout {key}={raw} must be true or false")
    return raw in ("true", "1")


def _cut(raw: str | None) -> tuple[int, ...] | None:
    """`5:6:6:5` -> (5, 6, 6, 5): blocks per pipeline stage (the rules on it are the Layout's)."""
    if raw is None:
        return None
    parts = raw.split(":")
    if not all(part.strip().isdigit() for part in parts):
        raise UserError(f"--layout pp_layers={raw} must be blocks per stage joined by colons, e.g. 5:6:6:5")
    return tuple(int(part) for part in parts)

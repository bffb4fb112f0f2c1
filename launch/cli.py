"""The `scaleplan` command: one sub-command per module in `launch/commands/`.

Each command module defines NAME, HELP, `add_arguments(parser)` and `run(args) -> int`, so adding a
command is adding one file.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Optional, Sequence

from launch import commands
from launch.errors import OneLineParser, run_guarded


def command_modules() -> list:
    names = sorted(info.name for info in pkgutil.iter_modules(commands.__path__))
    return [importlib.import_module(f"launch.commands.{name}") for name in names]


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="scaleplan", description="Plan and run LLM pre-training.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for module in command_modules():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run, prog=f"scaleplan {module.NAME}")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(args.prog, lambda: args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())

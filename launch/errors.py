"""Turn bad user input into one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn

import yaml
from pydantic import ValidationError

from planner.errors import UserError

USAGE_EXIT = 2


def describe_validation_error(error: ValidationError) -> str:
    """One line per pydantic error: the dotted field path, what was wrong and the value given."""
    parts = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "config"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key '{path}'")
        elif item["type"] == "missing":
            parts.append(f"missing key '{path}'")
        else:
            message = item["msg"].removeprefix("Value error, ")
            given = item.get("input")
            # a whole section as the input (a validator of the section) says nothing the message does not
            parts.append(f"{path}: {message}" if isinstance(given, (dict, list)) else f"{path}={given!r}: {message}")
    return "; ".join(parts)


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(USAGE_EXIT)


def run_guarded(prog: str, action: Callable[[], int]) -> int:
    """Run `action`, reporting user errors as a single line with exit code 2."""
    try:
        return action()
    except UserError as error:
        fail(prog, str(error))
    except ValidationError as error:
        fail(prog, describe_validation_error(error))
    except yaml.YAMLError as error:
        fail(prog, f"not valid YAML: {error}")
    except FileNotFoundError as error:
        fail(prog, f"no such file: {error.filename or error}")
    except (PermissionError, IsADirectoryError, NotADirectoryError) as error:
        fail(prog, f"{error.strerror}: {error.filename}")
    except UnicodeDecodeError as error:   # a reader that did not say which file: still one line
        fail(prog, f"a file is not UTF-8 text (byte {error.start}): save it as UTF-8")
    except BrokenPipeError:  # output piped into `head` and the reader left: not an error of ours
        sys.stderr.close()
        return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see --help)")

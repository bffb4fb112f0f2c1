"""Reading files the user names: text that is not UTF-8 is one line naming the file, not a traceback."""
from __future__ import annotations

from pathlib import Path

from planner.errors import UserError


def read_text(path: Path | str, what: str = "file") -> str:
    """The file's text (UTF-8, a byte-order mark allowed); UserError naming `what` and the path."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory, not a file") from None

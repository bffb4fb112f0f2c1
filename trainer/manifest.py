"""A checkpoint's manifest: every file with its size and CRC-32, written last, checked before loading.

A checkpoint whose manifest is missing, or whose files are missing, shorter, longer or different from
what the manifest says, is not loaded: `checkpoint.resume=auto` falls back to the previous good one.
"""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Iterable, Optional

MANIFEST = "manifest.json"
CHUNK = 1 << 22


def checksum(path: Path) -> str:
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def describe_files(directory: Path, names: Iterable[str]) -> dict[str, dict]:
    """{name: {"bytes", "crc32"}} for the named files in `directory` (each rank its own, in parallel)."""
    return {name: {"bytes": (directory / name).stat().st_size, "crc32": checksum(directory / name)}
            for name in names}


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_manifest(directory: Path, files: dict[str, dict], step: int) -> None:
    path = directory / MANIFEST
    path.write_text(json.dumps({"step": step, "files": files}, indent=1, sort_keys=True) + "\n")
    fsync_file(path)


def manifest_problem(directory: Path, checksums: bool = True) -> Optional[str]:
    """What is wrong with the checkpoint in `directory`, or None if every file is as the manifest says."""
    path = directory / MANIFEST
    if not path.is_file():
        return "no manifest (written last: the save did not finish)"
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "its manifest is not readable"
    for name, expected in sorted(files.items()):
        file = directory / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {expected['bytes']}"
        if checksums and checksum(file) != expected["crc32"]:
            return f"{name} does not match its checksum"
    return None

"""The corpus: source arguments (files, folders, globs) expanded to files in a fixed order, and each
file read as a stream of chunks of raw documents, never whole.

A chunk is what one worker tokenizes at a time. How a file is cut into chunks depends on the file
alone, so the chunks and their order, and hence the output, are the same for any number of workers,
and a re-run can skip straight to the chunk an interrupted run had reached."""
from __future__ import annotations

import glob
import gzip
import io
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from planner.errors import UserError

CHUNK_BYTES = 1 << 19        # raw text per chunk: small enough that a few per worker stay in memory
CHUNK_FILES = 256            # plain text files per chunk (each one document)
PARQUET_ROWS = 512           # Parquet rows per chunk


def file_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, kind in ((".jsonl", "jsonl"), (".jsonl.gz", "jsonl.gz"), (".jsonl.zst", "jsonl.zst"),
                         (".jsonl.zstd", "jsonl.zst"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return kind
    return "text"


@dataclass(frozen=True)
class Source:
    """One command-line argument and the files it names."""

    spec: str
    files: tuple[Path, ...]


def stdlib_sources() -> list[Path]:
    """The running interpreter's standard library (.py files, tests and site-packages left out):
    the built-in default corpus, present on every machine without a download."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts))


def expand_sources(specs: list[str]) -> list[Source]:
    """Each argument as a file, every file under a folder (sorted, hidden ones left out), or the
    files a glob matches (sorted). UserError for an argument that names nothing."""
    sources = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            files = [path]
        elif glob.has_magic(spec):
            files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not files:
                raise UserError(f"no file matches {spec}")
        else:
            raise UserError(f"source not found: {spec}")
        if not files:
            raise UserError(f"no files under {spec}")
        sources.append(Source(spec, tuple(files)))
    return sources


@dataclass
class Chunk:
    """Raw documents for one worker: JSON lines (bytes), texts, or paths of text files."""

    source: int          # index of the source argument
    file: int            # index of the (first) file in the corpus's list of files
    number: int          # the chunk's place within that file
    kind: str            # "lines", "texts" or "paths"
    path: str            # the file, for messages
    first_line: int      # line number of the first line (JSON lines)
    items: list
    documents: int       # documents in the chunk
    disk_bytes: int      # bytes of the files on disk this chunk moves the progress bar by
    first_document: int = 0   # the source's running count before this chunk (set by the pipeline)


def open_lines(path: Path, kind: str) -> tuple[IO[bytes], IO[bytes]]:
    """(a reader of decompressed bytes, the raw file under it, whose position measures progress)."""
    raw = open(path, "rb")
    if kind == "jsonl.gz":
        return gzip.GzipFile(fileobj=raw), raw
    if kind == "jsonl.zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)), raw
    return raw, raw


def read_error(path: Path, kind: str, error: Exception) -> UserError:
    what = {"jsonl.gz": "gzip", "jsonl.zst": "zstd", "parquet": "Parquet"}.get(kind, "readable")
    detail = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
    return UserError(f"{path} is not a valid {what} file: {detail}")


def line_chunks(source: int, index: int, path: Path, kind: str) -> Iterator[Chunk]:
    """JSON lines, CHUNK_BYTES at a time (a blank line is no document)."""
    import zstandard

    reader, raw = open_lines(path, kind)
    lines, size, number, line_no, first, done = [], 0, 0, 0, 1, 0
    try:
        with raw, reader:
            for line in reader:
                line_no += 1
                lines.append(line)
                size += len(line)
                if size >= CHUNK_BYTES:
                    position = raw.tell()
                    yield Chunk(source, index, number, "lines", str(path), first, lines,
                                sum(1 for item in lines if item.strip()), position - done)
                    lines, size, number, first, done = [], 0, number + 1, line_no + 1, position
            if lines:
                yield Chunk(source, index, number, "lines", str(path), first, lines,
                            sum(1 for item in lines if item.strip()), path.stat().st_size - done)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as error:
        raise read_error(path, kind, error) from None


def parquet_chunks(source: int, index: int, path: Path, text_field: str) -> Iterator[Chunk]:
    """The text column, PARQUET_ROWS rows at a time (a null is no document)."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        if text_field not in table.schema_arrow.names:
            raise UserError(f"{path} has no column '{text_field}' (columns: "
                            f"{', '.join(table.schema_arrow.names[:8])}); name it with --text-field")
        rows, number = max(1, table.metadata.num_rows), 0
        size = path.stat().st_size
        for batch in table.iter_batches(batch_size=PARQUET_ROWS, columns=[text_field]):
            texts = [t for t in batch.column(0).to_pylist() if t is not None]
            if any(not isinstance(t, str) for t in texts):
                raise UserError(f"{path}: column '{text_field}' does not hold text")
            yield Chunk(source, index, number, "texts", str(path), 0, texts, len(texts),
                        size * batch.num_rows // rows)
            number += 1
    except (OSError, pyarrow.ArrowException) as error:
        raise read_error(path, "parquet", error) from None


def text_chunks(source: int, first_index: int, paths: list[Path]) -> Iterator[Chunk]:
    """Plain text files, each one document, grouped up to CHUNK_BYTES or CHUNK_FILES."""
    group, size = [], 0
    for offset, path in enumerate(paths):
        group.append(str(path))
        size += path.stat().st_size
        if size >= CHUNK_BYTES or len(group) >= CHUNK_FILES or offset == len(paths) - 1:
            start = first_index + offset + 1 - len(group)
            yield Chunk(source, start, 0, "paths", group[0], 0, group, len(group), size)
            group, size = [], 0


def corpus_chunks(sources: list[Source], text_field: str, start: tuple[int, int] = (0, 0)) -> Iterator[Chunk]:
    """Every chunk of the corpus in order, from chunk `start` = (file index, chunk number) on."""
    index = 0
    for number, source in enumerate(sources):
        files = list(source.files)
        position = 0
        while position < len(files):
            path, kind = files[position], file_format(files[position])
            if kind == "text":   # a run of plain text files is grouped into chunks
                end = position
                while end < len(files) and file_format(files[end]) == "text":
                    end += 1
                chunks = text_chunks(number, index, files[position:end])
                index, position = index + end - position, end
            else:
                chunks = (line_chunks(number, index, path, kind) if kind != "parquet"
                          else parquet_chunks(number, index, path, text_field))
                index, position = index + 1, position + 1
            if index <= start[0]:
                continue   # wholly before the resume point: not even opened
            for chunk in chunks:
                if (chunk.file, chunk.number) >= start:
                    yield chunk

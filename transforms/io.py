"""Input listing, splitting and reading; atomic output writing.

Inputs are local paths or globs, ``gs://`` (any scheme Beam's
``FileSystems`` knows) and ``ftp://``. Large uncompressed text files are
split into byte ranges aligned to line starts so several workers read one
file in parallel; gzip files and FTP files are read whole.

Outputs are written under a staging folder and moved into place only when
the whole job has succeeded (:func:`commit_outputs`), so a reader never sees
a half-written file, and a re-run replaces the previous output.
"""

from __future__ import annotations

import gzip
import io
import os
import pathlib
import posixpath
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.errors import SourceError
from transforms.ftp import list_ftp, read_ftp, redact

__all__ = [
    "Chunk",
    "expand_inputs",
    "plan_chunks",
    "read_chunk",
    "read_bytes",
    "join_path",
    "write_parquet",
    "write_bytes",
    "commit_outputs",
]

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, order=True)
class Chunk:
    """A line-aligned byte range of one input file: lines that start in [start, end)."""

    uri: str
    file_index: int
    start: int
    end: int  # -1: to the end of the file
    whole: bool  # read in one piece (compressed or not seekable)

    @property
    def name(self) -> str:
        return f"{self.file_index:05d}-{self.start:012d}"


def is_ftp(uri: str) -> bool:
    return uri.startswith("ftp://")


def join_path(base: str, *parts: str) -> str:
    if "://" in base:
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def expand_inputs(patterns: Sequence[str] | str) -> list[str]:
    """All files matching the patterns, sorted; an unmatched pattern is an error."""
    if isinstance(patterns, str):
        patterns = [patterns]
    uris: list[str] = []
    for pattern in patterns:
        if is_ftp(pattern):
            found = list_ftp(pattern)
        else:
            if os.path.isdir(pattern):
                pattern = os.path.join(pattern, "*")
            try:
                (result,) = FileSystems.match([pattern])
            except Exception as exc:  # Beam raises BeamIOError with per-pattern causes
                raise SourceError(f"cannot list {pattern!r}: {exc}") from exc
            found = sorted(m.path for m in result.metadata_list if not m.path.endswith("/"))
            found = [f for f in found if not os.path.basename(f).startswith((".", "_"))]
        if not found:
            raise SourceError(f"no input files match {redact(pattern)!r}; check the path or glob")
        uris.extend(found)
    return sorted(dict.fromkeys(uris))


def _is_gzip(uri: str) -> bool:
    if uri.endswith(".gz"):
        return True
    with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read(2) == _GZIP_MAGIC


def plan_chunks(uri: str, file_index: int, *, chunk_bytes: int) -> list[Chunk]:
    """Split one file into line-aligned ranges of about ``chunk_bytes``."""
    if is_ftp(uri):
        return [Chunk(uri, file_index, 0, -1, True)]
    try:
        size = FileSystems.match([uri])[0].metadata_list[0].size_in_bytes
        gz = size >= 2 and _is_gzip(uri)
    except Exception as exc:
        raise SourceError(f"cannot read {uri!r}: {exc}") from exc
    if gz or size <= chunk_bytes:
        return [Chunk(uri, file_index, 0, -1, True)]
    return [
        Chunk(uri, file_index, start, min(start + chunk_bytes, size), False)
        for start in range(0, size, chunk_bytes)
    ]


def read_bytes(uri: str) -> bytes:
    """A whole file, decompressed if it is gzip."""
    if is_ftp(uri):
        data = read_ftp(uri)
    else:
        try:
            with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read()
        except Exception as exc:
            raise SourceError(f"cannot read {uri!r}: {exc}") from exc
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise SourceError(f"{redact(uri)} is not valid gzip: {exc}") from exc
    return data


def read_chunk(chunk: Chunk) -> tuple[bytes, int]:
    """The bytes of the lines that start inside the chunk, and the offset of the first."""
    if chunk.whole:
        return read_bytes(chunk.uri), 0
    with FileSystems.open(chunk.uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        pos = 0
        if chunk.start > 0:
            f.seek(chunk.start - 1)
            pos = chunk.start - 1 + len(f.readline())  # finish the line that crosses start
        if pos >= chunk.end:
            return b"", pos
        f.seek(pos)
        data = f.read(chunk.end - pos)
        if data and not data.endswith(b"\n"):
            data += f.readline()  # the last line crosses end: it is ours
    return data, pos


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def _write_local(uri: str, write: Callable[[str], None]) -> str:
    """``write(path)`` to a temporary file beside ``uri``, then rename it: a reader never sees half a file."""
    os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
    tmp = f"{uri}.tmp-{uuid.uuid4().hex}"
    write(tmp)
    os.replace(tmp, uri)
    return uri


def write_parquet(table: pa.Table, uri: str) -> str:
    """Write one Parquet file (local or any FileSystems scheme); a reader never sees it half written."""
    if "://" not in uri:
        return _write_local(uri, lambda path: pq.write_table(table, path, compression="zstd"))
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    with FileSystems.create(uri) as f:
        f.write(sink.getvalue())
    return uri


def write_bytes(data: bytes, uri: str) -> str:
    """Write one file (local or any FileSystems scheme); a reader never sees it half written."""
    if "://" not in uri:
        return _write_local(uri, lambda path: pathlib.Path(path).write_bytes(data))
    with FileSystems.create(uri) as f:
        f.write(data)
    return uri


def write_text(text: str, uri: str) -> str:
    return write_bytes(text.encode("utf-8"), uri)


def commit_outputs(staging: str, out: str, names: Iterable[str]) -> None:
    """Move each ``staging/<name>`` folder to ``out/<name>``, replacing what was there.

    Locally each folder is swapped with two renames, so a reader sees either
    the old complete folder or the new complete one. On object stores every
    file is complete when it appears (objects are written whole).
    """
    for name in names:
        src, dst = join_path(staging, name), join_path(out, name)
        if "://" not in out:
            if not os.path.isdir(src):
                os.makedirs(src, exist_ok=True)
            old = f"{dst}.old-{uuid.uuid4().hex}"
            if os.path.exists(dst):
                os.replace(dst, old)
            os.replace(src, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            existing = FileSystems.match([join_path(dst, "*")])[0].metadata_list
            if existing:
                FileSystems.delete([m.path for m in existing])
            new = FileSystems.match([join_path(src, "*")])[0].metadata_list
            if new:
                srcs = [m.path for m in new]
                FileSystems.rename(srcs, [join_path(dst, posixpath.basename(s)) for s in srcs])
    if "://" not in staging:
        shutil.rmtree(staging, ignore_errors=True)
    else:
        leftovers = FileSystems.match([join_path(staging, "**")])[0].metadata_list
        if leftovers:
            FileSystems.delete([m.path for m in leftovers])

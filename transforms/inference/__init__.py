"""Model handlers for Beam's RunInference, one module per model family."""

from __future__ import annotations

import hashlib
import os

from transforms.errors import ChecksumMismatch, ModelLoadError

__all__ = ["empty_model_file", "open_model_file", "read_model_bytes", "thread_budget", "usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_budget() -> int:
    """Threads a model runtime in this process may use: ``OMP_NUM_THREADS`` (which
    ``pipelines.options`` sets in each local worker process to cores / workers), else
    :func:`usable_cores`."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return usable_cores()


def open_model_file(path: str):
    """A model file opened for binary reading from any FileSystems location, or ModelLoadError naming it."""
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.open(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot read model file {path!r}: {exc}") from exc


def empty_model_file(path: str) -> ModelLoadError:
    """The error for a model file of 0 bytes (no runtime gives a useful message for one)."""
    return ModelLoadError(f"model file {path!r} is empty (0 bytes): the export or copy that wrote it did not finish")


def read_model_bytes(path: str, *, sha256: str | None = None) -> bytes:
    """A model file's bytes from any FileSystems location (local, gs://), or ModelLoadError naming it.

    An empty file is refused (no runtime gives a useful message for one).
    With ``sha256`` (hex digest, e.g. the registry's record of the file)
    the bytes are verified before anything parses them; a difference
    raises :class:`~transforms.errors.ChecksumMismatch` naming both digests.
    """
    with open_model_file(path) as f:
        try:
            data = f.read()
        except Exception as exc:
            raise ModelLoadError(f"cannot read model file {path!r}: {exc}") from exc
    if not data:
        raise empty_model_file(path)
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            raise ChecksumMismatch(
                f"model file {path!r} has sha256 {actual}, but {sha256} was recorded for it: "
                "the file was changed or damaged after registration; register the model again"
            )
    return data

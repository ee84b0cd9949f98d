"""Model handlers for Beam's RunInference, one module per model family."""

from __future__ import annotations

from transforms.errors import ModelLoadError

__all__ = ["read_model_bytes"]


def read_model_bytes(path: str) -> bytes:
    """A model file's bytes from any FileSystems location (local, gs://), or ModelLoadError naming it."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            return f.read()
    except Exception as exc:
        raise ModelLoadError(f"cannot read model file {path!r}: {exc}") from exc

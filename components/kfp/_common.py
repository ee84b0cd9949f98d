"""Helpers the KFP components share (imported inside component bodies, so they run in the aisle image).

Artifact locations: on Vertex AI an artifact's ``uri`` is ``gs://...`` and
its ``path`` the ``/gcs/...`` FUSE mount of the same object. Code in the
step's own process may use either; a Beam job that runs elsewhere (Dataflow
workers) must get the ``gs://`` URI. Locally both are the same folder.
An input Dataset may also *name* data that lives elsewhere instead of
holding it (``metadata["location"]``: an ingest output already in the
processed bucket), so a pipeline need not copy it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

__all__ = ["location", "output_location", "log_metrics", "flatten_numbers", "write_text", "copy_tree", "check_choice"]

REMOTE = ("gs://", "s3://", "minio://")


def location(artifact) -> str:
    """Where an input artifact's data is: its ``metadata["location"]``, else its URI (remote) or path (local)."""
    named = (artifact.metadata or {}).get("location")
    if named:
        return str(named)
    return artifact.uri if artifact.uri.startswith(REMOTE) else artifact.path


def output_location(artifact) -> str:
    """Where a step writes an output artifact: its ``gs://`` URI remotely (Beam workers can reach it), else its path."""
    if artifact.uri.startswith(REMOTE):
        return artifact.uri.rstrip("/")
    os.makedirs(artifact.path, exist_ok=True)
    return artifact.path


def flatten_numbers(data: Mapping, prefix: str = "") -> dict[str, float]:
    """Every finite number in a nested mapping, keyed ``a.b.c`` (booleans and strings skipped)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_numbers(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def log_metrics(metrics, data: Mapping, *, prefix: str = "") -> dict[str, float]:
    """Log every number of ``data`` on a Metrics artifact; returns what was logged."""
    flat = flatten_numbers(data, prefix)
    for key, value in flat.items():
        metrics.log_metric(key, value)
    return flat


def write_text(path: str, text: str) -> str:
    """Write ``text`` to a local path or any Beam FileSystems URI."""
    from transforms.io import write_text as _write

    _write(text, path)
    return path


def copy_tree(src: str, dst: str) -> list[str]:
    """Copy every file under ``src`` to ``dst`` (local or gs://, either side); returns the destination files."""
    from apache_beam.io.filesystems import FileSystems

    src = src.rstrip("/")
    matches = FileSystems.match([FileSystems.join(src, "**")])[0].metadata_list
    if not matches and FileSystems.exists(src):
        matches = FileSystems.match([src])[0].metadata_list
        src = src.rsplit("/", 1)[0]
    written = []
    for m in sorted(matches, key=lambda m: m.path):
        rel = m.path[len(src) + 1 :]
        target = FileSystems.join(dst, *rel.split("/"))
        if "://" not in target:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        with FileSystems.open(m.path) as fin, FileSystems.create(target) as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
        written.append(target)
    return written


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    from transforms.errors import ConfigError

    if value not in choices:
        raise ConfigError(f"{name}={value!r}: expected one of {', '.join(map(repr, choices))}")
    return value


def dump_json(path: str, payload) -> str:
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")

"""Model resolution for the batch components: a registry alias -> one concrete, checksummed version at launch."""

from __future__ import annotations

import types

__all__ = ["make_registry", "resolve"]


def make_registry(registry: dict | None):
    """The registry of a config ``registry`` section (a dict), or None when empty."""
    if not registry:
        return None
    from components.registry import registry_from_config

    return registry_from_config(types.SimpleNamespace(registry=types.SimpleNamespace(**registry)))


def resolve(uri: str, registry) -> tuple[str | None, dict]:
    """``(path, version_info)`` for ``uri``: ``registry://name@alias`` resolved now, a path as is, "" -> None (packaged default)."""
    from components.registry import resolve_model_uri

    return resolve_model_uri(uri or None, registry)

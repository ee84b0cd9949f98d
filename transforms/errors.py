"""The exception root of aisle and its few subclasses.

Library code raises these; only the CLI turns them into exit codes.
"""

from __future__ import annotations


class AisleError(Exception):
    """Root of every error aisle raises on purpose."""


class ConfigError(AisleError, ValueError):
    """An option, mapping or configuration value is invalid; the message says which and how to fix it."""


class SourceError(AisleError, OSError):
    """An input location cannot be listed or read (after retries, where retrying makes sense)."""


class StagingError(AisleError, RuntimeError):
    """An intermediate file of a running job does not hold what its writer wrote (staging folder changed under the job)."""


class ModelLoadError(AisleError, RuntimeError):
    """A model file cannot be found, verified or loaded; the message names the path and the cause."""


class ChecksumMismatch(ModelLoadError):
    """A model artifact's sha256 differs from the one recorded for it."""


def missing_extra(package: str, extra: str) -> ImportError:
    """An ImportError that names the pip extra which provides ``package``."""
    return ImportError(
        f"{package} is required for this feature: pip install 'aisle[{extra}]'"
    )

"""Settings for the local runner's workers, applied when this module is imported.

The local runner's worker processes import it at start (it is named in
``--beam_plugins``, which Beam's worker imports before it starts its
harness); the launcher applies the same to itself for in-process and
threaded runs (:func:`release_idle_bundle_processors`).

A Beam SDK worker keeps the bundle processor of every stage it has run (the
stage's DoFns, with their models, and its operations) for reuse by the
stage's next bundle, and drops it only after 60 s without one. The local
runner (``FnApiRunner``) runs each fused stage once, as one bundle per
worker, so a kept processor is never reused: for the rest of the job it
only holds memory, and a worker's memory grows stage after stage.

Measured on ``aisle recommend`` at 10x the retail volume with two workers
(62 fused stages), three alternating runs each: the largest worker peaked
at 1,002 / 1,002 / 977 MiB keeping the processors and at 712 / 746 / 722
MiB dropping them after 2 s idle, in 42.8 / 47.9 / 45.0 s and 45.2 /
41.4 / 37.6 s. A stage whose next bundle comes within
:data:`BUNDLE_PROCESSOR_IDLE_S` still reuses its processor. Dataflow's
workers keep Beam's default: a stage there runs many bundles.
"""

from __future__ import annotations

__all__ = ["BUNDLE_PROCESSOR_IDLE_S", "release_idle_bundle_processors"]

# Seconds a worker keeps an idle stage's bundle processor (Beam's default: 60).
BUNDLE_PROCESSOR_IDLE_S = 2


def release_idle_bundle_processors(seconds: float = BUNDLE_PROCESSOR_IDLE_S) -> None:
    """Bundle-processor caches created after this call drop a processor idle for ``seconds``.

    Beam reads the threshold as a module constant of its SDK worker, when a
    cache is created (the period of its clean-up thread) and at each
    clean-up; there is no pipeline option for it.
    """
    from apache_beam.runners.worker import sdk_worker

    sdk_worker.DEFAULT_BUNDLE_PROCESSOR_CACHE_SHUTDOWN_THRESHOLD_S = seconds


release_idle_bundle_processors()

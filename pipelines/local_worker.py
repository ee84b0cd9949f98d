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
41.4 / 37.6 s. Half a second lowers the peak further, as the processor
of the stage before (a model and its score buffers) no longer lives on
into the next stage: five alternating runs each, 505-560 MiB (median
515) against 540-551 MiB (median 549) after 2 s, in 39.3-47.9 s against
40.7-48.6 s; at 1x, 347-396 MiB (median 392) against 404-412 MiB
(median 406), three runs each. A stage whose next bundle comes within
:data:`BUNDLE_PROCESSOR_IDLE_S` still reuses its processor. Dataflow's
workers keep Beam's default: a stage there runs many bundles.

A worker process also ends without Python's own clean-up of its heap once
its harness has shut down cleanly (:func:`exit_without_heap_teardown`):
the runner stops its workers one after the other at the end of a job, and
each spent 0.5-0.8 s freeing its objects one by one first. Recommend at
10x with two workers: stopping both took 1.2 and 1.4 s of 38 s runs, and
0.2 s without that clean-up.

And once a worker process has dropped an idle stage's bundle processor, it
gives the memory that glibc's malloc keeps free back to the system
(``malloc_trim(0)``, :func:`trim_after_dropping_processors`): what a
stage's DoFns and buffers freed stays in the process otherwise, and the
next stage seldom reuses all of it. Recommend at 10x with two workers, two
alternating runs each: the largest worker peaked at 727 / 706 MiB without
it and 670 / 655 MiB with it, in 39.1 / 39.8 and 38.0 / 42.1 s.

Every bundle, in-process or not, also has a state sampler: a thread that
wakes now and then to note which step the bundle is in (Beam's processing
time per step). The end of a bundle joins that thread, so it waits out the
thread's sleep under way, up to Beam's sampling period of 200 ms, with the
core idle. The local runner's samplers, in-process and in worker
processes, wake every :data:`STATE_SAMPLING_PERIOD_MS` instead
(:func:`prompt_state_sampling`). Recommend at 10x on the 2-core Xeon:
in-process, the ends of its 48 bundles waited 2.03 s in all with
Beam's period and 0.08 s with 5 ms; with two workers, 1.44 and 1.15 s
(49 bundles each) against 0.19 and 0.21 s. Three alternating pairs of
runs: in-process 40.8 / 39.8 / 39.7 s against 39.0 / 38.2 / 39.0 s, two
workers 27.1 / 24.7 / 25.8 s against 25.3 / 24.2 / 24.4 s.

Last, Python's cyclic garbage collector runs less in these processes
(:func:`collect_less`): the objects that exist once the modules are
imported (Beam, TensorFlow, the job's code, and in the launcher the job's
graph) are left out of every later collection (``gc.freeze``), and the
youngest generation is collected every :data:`GC_THRESHOLDS` ``[0]``
allocations instead of 700. Those objects never become garbage while the
job runs, yet each full collection walked them all, in every process.
Recommend at 10x on the 2-core Xeon, seconds inside collections
(``gc.callbacks``): in-process 1.96 s with Python's defaults, 0.46 s
after; two workers 3.02 s in all (runner 0.98, fork server 0.32, workers
0.74 and 0.98), 0.50 s after. The launcher restores its own settings when
the job ends (:func:`collecting_less`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import sys
from collections.abc import Iterator

__all__ = [
    "BUNDLE_PROCESSOR_IDLE_S",
    "GC_THRESHOLDS",
    "STATE_SAMPLING_PERIOD_MS",
    "collect_less",
    "collecting_less",
    "exit_without_heap_teardown",
    "glibc",
    "prompt_state_sampling",
    "release_idle_bundle_processors",
    "trim_after_dropping_processors",
]

# The modules a local worker process runs as __main__: Beam's SDK worker, or the fork server it was forked
# from (pipelines/worker_pool.py, which imports this module before it forks).
WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"
FORK_SERVER_MAIN = "pipelines.worker_pool"

# Seconds a worker keeps an idle stage's bundle processor (Beam's default: 60); also the period of
# the worker's clean-up thread, which therefore drops one 0.5-1 s after its bundle.
BUNDLE_PROCESSOR_IDLE_S = 0.5


# Milliseconds between a bundle's state samples (Beam's default: 200): also the longest a bundle's end waits
# for its sampling thread (prompt_state_sampling). A wake-up takes the sampler's lock and adds to a counter.
STATE_SAMPLING_PERIOD_MS = 5

# Python's collection thresholds in the local runner's processes (Python's default: 700, 10, 10): the youngest
# generation is collected after this many allocations net of frees, the older two after 10 of the one below.
GC_THRESHOLDS = (10_000, 10, 10)


def release_idle_bundle_processors(seconds: float = BUNDLE_PROCESSOR_IDLE_S) -> None:
    """Bundle-processor caches created after this call drop a processor idle for ``seconds``.

    Beam reads the threshold as a module constant of its SDK worker, when a
    cache is created (the period of its clean-up thread) and at each
    clean-up; there is no pipeline option for it.
    """
    from apache_beam.runners.worker import sdk_worker

    sdk_worker.DEFAULT_BUNDLE_PROCESSOR_CACHE_SHUTDOWN_THRESHOLD_S = seconds


@functools.cache
def glibc():
    """This process's C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if all(hasattr(libc, name) for name in ("mallopt", "malloc_trim")) else None


def prompt_state_sampling(period_ms: int = STATE_SAMPLING_PERIOD_MS) -> bool:
    """State samplers created after this call sample every ``period_ms`` milliseconds (Beam's default: 200).

    Each bundle has a state sampler: a thread that sleeps between samples
    of the step the bundle is in (the steps' processing times), from a
    hundredth of its period (at least 1 ms), each sleep 1.2 times the one
    before, up to the period. The bundle's end stops the sampler and joins
    its thread, so it waits out the sleep under way, with its core idle: up
    to 200 ms once a bundle has run a second or more. Beam reads the period
    as a default argument of ``StateSampler``; there is no pipeline option
    for it.

    Returns whether it applies: False, and Beam's period kept, where
    ``StateSampler`` no longer takes the period as its only default
    argument.
    """
    import inspect

    from apache_beam.runners.worker import statesampler

    init = statesampler.StateSampler.__init__
    defaulted = [p.name for p in inspect.signature(init).parameters.values() if p.default is not inspect.Parameter.empty]
    if defaulted != ["sampling_period_ms"] or init.__defaults__ is None:  # None: the period became keyword-only
        return False
    init.__defaults__ = (period_ms,)
    return True


def collect_less(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Every object that exists now is left out of later garbage collections (``gc.freeze``), and the
    collector runs at ``thresholds`` (``gc.set_threshold``).

    Frozen objects are never collected: what is frozen should live as long as
    the process (imported modules, a fork server's state, a running job's
    graph). A disabled collector stays disabled.
    """
    gc.freeze()
    gc.set_threshold(*thresholds)


@contextlib.contextmanager
def collecting_less(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> Iterator[None]:
    """:func:`collect_less` for the block; on exit the thresholds are restored, and the objects are unfrozen
    unless some were frozen before it (their freezing cannot be told apart from the block's)."""
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    collect_less(thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if frozen == 0:
            gc.unfreeze()


def _is_worker_process() -> bool:
    main = sys.modules.get("__main__")
    return getattr(getattr(main, "__spec__", None), "name", None) in (WORKER_MAIN, FORK_SERVER_MAIN)


def _exit_now() -> None:
    atexit.unregister(_exit_now)
    atexit._run_exitfuncs()  # everything else registered to run at exit: log flushes, finalizers, temporary folders
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # absent or closed
            stream.flush()
    os._exit(0)


def exit_without_heap_teardown() -> bool:
    """In a local worker process: once its harness has returned normally, the process ends at exit without
    freeing its heap object by object (``os._exit(0)``, after every other exit handler has run).

    The harness returning normally means the runner has closed the control
    channel and the worker has finished, flushed and torn down all its
    bundles; a harness that raises leaves the normal exit, and its status,
    alone. Python's ``multiprocessing`` ends its child processes the same
    way. Returns whether it applies here: only where this process runs
    Beam's SDK worker as ``__main__``, never in a launcher whose threads host
    workers in-process.
    """
    if not _is_worker_process():
        return False
    from apache_beam.runners.worker import sdk_worker

    run = sdk_worker.SdkHarness.run
    if getattr(run, "_exits_fast", False):
        return True

    def run_then_exit_fast(self):
        run(self)
        atexit.register(_exit_now)  # registered last, so it runs first, and runs the others itself

    run_then_exit_fast._exits_fast = True
    sdk_worker.SdkHarness.run = run_then_exit_fast
    return True


def _shutdown_then_trim(shutdown, trim):
    """``shutdown`` (Beam's: drop a stage's cached bundle processors), then ``trim()`` when it dropped any."""

    def shutdown_then_trim(cached_bundle_processors):
        dropped = bool(cached_bundle_processors)
        shutdown(cached_bundle_processors)
        if dropped:
            trim()

    shutdown_then_trim._trims = True
    return shutdown_then_trim


def trim_after_dropping_processors() -> bool:
    """In a local worker process with glibc: each time the worker drops a stage's bundle processors, it
    returns the memory malloc keeps free to the system (``malloc_trim(0)``).

    Beam drops them from its clean-up thread, which wakes every
    :data:`BUNDLE_PROCESSOR_IDLE_S` seconds (:func:`release_idle_bundle_processors`);
    the trim runs there too, beside whatever bundle the worker is running,
    and once more when the harness shuts down. Returns whether it applies
    here: only in a worker process (as :func:`exit_without_heap_teardown`),
    only with glibc.
    """
    libc = glibc()
    if libc is None or not _is_worker_process():
        return False
    from apache_beam.runners.worker import sdk_worker

    cache = sdk_worker.BundleProcessorCache
    shutdown = cache._shutdown_cached_bundle_processors
    if not getattr(shutdown, "_trims", False):
        cache._shutdown_cached_bundle_processors = staticmethod(_shutdown_then_trim(shutdown, lambda: libc.malloc_trim(0)))
    return True


release_idle_bundle_processors()
prompt_state_sampling()
exit_without_heap_teardown()
trim_after_dropping_processors()
if _is_worker_process():
    collect_less()  # Beam's SDK worker is imported; a fork server does it again once it has imported the job

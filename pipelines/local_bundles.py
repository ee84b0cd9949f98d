"""Bundles of bounded size for the local runner: a stage's input is dealt to its workers a few MB at a time.

Beam's ``FnApiRunner`` cuts each stage's input into exactly one part per
worker and sends each worker its whole part as one bundle. A worker then
holds half the stage's data at once (two workers), so its memory grows
with the volume, and a worker that finishes early waits, idle, for the
other. Measured on ``aisle recommend`` at 30x the retail volume (430k
events, 112k products) with two workers: the co-occurrence stage took
each worker to 1,229 / 1,509 MiB, against 450-620 MiB in every other
stage.

:class:`SizedBundleManager` cuts the input into many pieces instead (a
shuffle by key, a buffer by the chunks its writers flushed), and deals
them out as bundles of about :data:`BUNDLE_BYTES` of encoded input, at
least one per worker: each worker takes the next bundle as soon as it is
free. A key is never split (a key's values are one element of a
grouped input), so a bundle holds whole keys. The same run then peaked
at 549 / 570 MiB per worker. The bundles' outputs are the same elements
as one bundle's, and the jobs' outputs are written in an order fixed by
their keys, so they are byte-identical.

Beam encodes a whole shuffle for its workers before the first bundle
starts, while they wait. Here a bundle's pieces are encoded just before it
runs, one bundle ahead of the workers: at 10x with two workers, the time
from a stage's start to its first bundle fell from 1.15-1.23 s to
0.49-0.57 s over the job's 54 stages (three runs each, alternating).

A stage's last bundles are half the size of the others (:func:`plan_bundles`),
so that its workers finish it within about half a bundle of each other.
The transaction grouping of ``aisle recommend`` at 10x with two workers
makes nine bundles of 0.5-0.7 s: the last ran alone while the other
worker had nothing to take. With seven whole bundles and four halves, the
machine's idle time in that stage fell from 0.42-0.83 to 0.29-0.35
core-seconds (four alternating pairs of runs; the jobs took 23.5-24.8 s
against 23.4-24.6 s, within the machine's noise).

A worker takes its next bundle as soon as it has answered one, while
the runner still reads the finished bundle's outputs into the next
stages' buffers (decoding each element of a shuffle): the worker used to
wait for that. Recommend at 10x with two workers, the runner read on
for 1.1 s in all after its 123 bundles' answers; the machine's idle time
while bundles ran, six alternating pairs of runs, was 1.58-1.95
core-seconds (median 1.70) before and 1.24-1.66 (median 1.47) after.
A failed bundle's worker is handed back only once the failure is
recorded, so no bundle is sent to it.

Stateful stages keep Beam's own manager (a key's state must stay on one
worker), and so do runs with one worker; timers go with the first
bundle, as in Beam's.
"""

from __future__ import annotations

import itertools
import queue
import threading
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from apache_beam.metrics import monitoring_infos
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.portability.fn_api_runner import execution, fn_runner, translations

from pipelines.local_schedule import BundleNotStarted, ConcurrentStagesRunner
from pipelines.local_stages import sink_flattens_into_groups

__all__ = ["BUNDLE_BYTES", "MAX_PIECES_PER_WORKER", "LocalFnApiRunner", "SizedBundleManager", "plan_bundles"]

# Encoded input per bundle, about: large enough that a bundle's fixed cost (a request to the worker, its
# DoFns' start and finish) is small beside its work, small enough that a worker's memory does not grow with
# the volume.
BUNDLE_BYTES = 4 << 20
# A shuffle is cut into at most this many pieces per worker (more keys share a piece): at 4 MiB a bundle,
# 1 GiB of shuffle with two workers.
MAX_PIECES_PER_WORKER = 128


def plan_bundles(sizes: Sequence[int], workers: int, target: int = BUNDLE_BYTES) -> list[list[int]]:
    """Pieces of ``sizes`` bytes -> bundles (lists of piece indices) of about ``target`` bytes each, the
    last ones smaller.

    Empty pieces are left out. The input makes ``ceil(total / target)``
    bundles' worth, but at least ``workers`` and at most one per piece.
    Where it holds more than ``target`` bytes and pieces enough (two per
    bundle), the last ``workers`` of them are each cut in two: the workers
    then finish the stage within about half a bundle of each other, where a
    worker that took the last whole bundle alone would leave the others
    idle for most of it (guided self-scheduling). Pieces are dealt
    round-robin, a whole bundle taking two for each one a half bundle
    takes, so bundles get pieces from the whole input. The bundles run in
    the order given.

    >>> plan_bundles([5, 0, 5, 5, 5], workers=2, target=20)
    [[0, 3], [2, 4]]
    >>> plan_bundles([5, 5, 5, 5, 5, 5, 5, 5], workers=2, target=10)
    [[0, 1], [2, 3], [4], [5], [6], [7]]
    """
    if workers < 1 or target < 1:
        raise ValueError(f"workers and target must be >= 1, got {workers} and {target}")
    full = [i for i, size in enumerate(sizes) if size > 0]
    if not full:
        return [[]]
    total = sum(sizes[i] for i in full)
    n = min(len(full), max(workers, -(-total // target)))
    if total <= target or len(full) < 2 * n:
        return [full[j::n] for j in range(n)]
    whole = n - workers  # bundles of full size; then 2 * workers halves
    turn = [b for b in range(whole) for _ in (0, 1)] + list(range(whole, n + workers))
    plan: list[list[int]] = [[] for _ in range(n + workers)]
    for j, piece in enumerate(full):
        plan[turn[j % len(turn)]].append(piece)
    return plan


class _Input:
    """One input of a stage, cut into pieces: the encoded pieces of a list buffer, or a shuffle's keys.

    A list buffer is cut at the chunks its writers flushed (with fewer chunks
    than workers, Beam re-encodes its elements round-robin). A shuffle
    (``GroupingBuffer``) is cut by key, keys dealt round-robin over up to
    ``workers * MAX_PIECES_PER_WORKER`` pieces as Beam's ``partition``
    deals them, and a piece is encoded only when its bundle is about to run
    (:meth:`take`), by Beam's own encoding of a buffer holding just those
    keys. The first bundles then start once their own pieces are encoded,
    not the whole shuffle, and the later ones are encoded while the workers
    work. A piece's size is estimated before it is encoded from its number
    of values, at the bytes per value of the first piece, which is encoded
    at once to measure them.
    """

    def __init__(self, buffer, workers: int):
        self._buffer, self._keys, self._taken = buffer, None, []
        if isinstance(buffer, execution.GroupingBuffer) and not buffer._grouped_output:
            keys = list(buffer._table)
            n = min(len(keys), workers * MAX_PIECES_PER_WORKER)
            self._keys = [keys[i::n] for i in range(n)]
            counts = [sum(len(buffer._table[k]) for k in piece) for piece in self._keys]  # values per piece
            self._encoded, self.sizes = {}, []
            if n:
                self._encoded[0] = self._encode(0)
                first = sum(len(chunk) for chunk in self._encoded[0])
                self.sizes = [first] + [max(1, round(c * first / max(1, counts[0]))) for c in counts[1:]]
        else:
            if isinstance(buffer, execution.ListBuffer):
                chunks = len(buffer._inputs)
                parts = buffer.partition(min(chunks, workers * MAX_PIECES_PER_WORKER) if chunks >= workers else workers)
            else:  # a shuffle read before (Beam's GroupingBuffer.copy is the buffer itself): its parts as encoded
                parts = buffer.partition(workers)
            self._encoded = dict(enumerate(parts))
            self.sizes = [sum(len(chunk) for chunk in part) for part in parts]

    def _encode(self, i: int) -> list[bytes]:
        table = self._buffer._table
        piece = execution.GroupingBuffer(self._buffer._pre_grouped_coder, self._buffer._post_grouped_coder, self._buffer._windowing)
        for key in self._keys[i]:
            piece._table[key] = table.pop(key)  # the shuffle lets go of a key once it is encoded, as Beam's does
        return piece.partition(1)[0]

    def take(self, pieces: Sequence[int]) -> list[bytes]:
        """The encoded data of ``pieces``, encoding those not encoded yet."""
        data = list(itertools.chain.from_iterable(
            self._encoded.pop(i) if i in self._encoded else self._encode(i) for i in pieces if i < len(self.sizes)))
        self._taken.append(data)
        return data

    def finish(self) -> None:
        """Leaves a shuffle read as its bundles read it, should the runner read it again (as a split does)."""
        if self._keys is not None:
            self._buffer._grouped_output = self._taken


class _OneWorker:
    """The stage's bundle context, with one of its worker handlers: the one a bundle runs on."""

    def __init__(self, context, handler):
        self._context = context
        self.worker_handlers = [handler]

    def __getattr__(self, name):
        return getattr(self._context, name)


class _Once:
    """Calls ``fn`` on the first call only, whichever thread makes it."""

    def __init__(self, fn):
        self._fn, self._lock, self._called = fn, threading.Lock(), False

    def __call__(self) -> None:
        with self._lock:
            if self._called:
                return
            self._called = True
        self._fn()


class _ControlReleasing:
    """A worker's control connection that calls ``release`` once the worker has answered a bundle without error."""

    def __init__(self, conn, release: _Once):
        self._conn, self._release = conn, release

    def push(self, request):
        future = self._conn.push(request)
        if request.HasField("process_bundle"):
            answered = future.set  # called by the connection's reader thread with the worker's response

            def set_then_release(response):
                answered(response)
                if not response.error:
                    self._release()

            future.set = set_then_release
            # answered before set_then_release was in place; an answer still being set now is missed here,
            # and the worker goes back when the bundle's thread ends, as it did before
            if future.is_done() and not future.get().error:
                self._release()
        return future

    def __getattr__(self, name):
        return getattr(self._conn, name)


class _HandlerReleasing:
    """A worker handler whose worker is handed back (``release``) as soon as it has finished its bundle, while
    the runner still reads the bundle's outputs."""

    def __init__(self, handler, release: _Once):
        self._handler = handler
        self.control_conn = _ControlReleasing(handler.control_conn, release)

    def __getattr__(self, name):
        return getattr(self._handler, name)


class _Workers:
    """A run's free workers, shared by its stages that run at once (:mod:`pipelines.local_schedule`), so that a
    worker runs one bundle at a time; once a bundle has failed, no other is sent (its worker may be gone)."""

    def __init__(self, handlers):
        self.free: queue.Queue = queue.Queue()
        for handler in handlers:
            self.free.put(handler)
        self.failed = threading.Event()


_WORKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a run's context -> {its workers: _Workers}
_WORKERS_LOCK = threading.Lock()


def _workers_of(context, handlers) -> _Workers:
    with _WORKERS_LOCK:
        pools = _WORKERS.setdefault(context, {})
        key = tuple(id(handler) for handler in handlers)
        if key not in pools:
            pools[key] = _Workers(handlers)
        return pools[key]


class SizedBundleManager(fn_runner.ParallelBundleManager):
    """Runs a stage's input as bundles of about :data:`BUNDLE_BYTES` (:func:`plan_bundles`), each on the next free worker."""

    def process_bundle(self, inputs: Mapping[str, execution.PartitionableBuffer], expected_outputs, fired_timers,
                       expected_output_timers, dry_run: bool = False):
        handlers = list(self.bundle_context_manager.worker_handlers)
        workers = len(handlers)
        parted = {name: _Input(buffer, workers) for name, buffer in inputs.items()}
        n = max((len(part.sizes) for part in parted.values()), default=workers)
        sizes = [sum(part.sizes[i] for part in parted.values() if i < len(part.sizes)) for i in range(n)]
        plan = plan_bundles(sizes, workers)
        pool_of_workers = _workers_of(self.bundle_context_manager.execution_context, handlers)
        lock = threading.Lock()

        def run(ix: int):
            with lock:  # encoded here, while the workers run the bundles before it
                bundle = {name: part.take(plan[ix]) for name, part in parted.items()}
            handler = pool_of_workers.free.get()
            release = _Once(lambda: pool_of_workers.free.put(handler))
            try:
                if pool_of_workers.failed.is_set():
                    raise BundleNotStarted(f"bundle {ix + 1} of {len(plan)} was not started: another bundle failed")
                # the worker takes its next bundle once it has answered this one, while its outputs are still read
                manager = fn_runner.BundleManager(_OneWorker(self.bundle_context_manager, _HandlerReleasing(handler, release)),
                                                  self._progress_frequency, cache_token_generator=self._cache_token_generator)
                # timers go with the first bundle only, as Beam's parallel manager sends them to its first worker
                return manager.process_bundle(bundle, expected_outputs, fired_timers if ix == 0 else {},
                                              expected_output_timers, dry_run)
            except BaseException:
                pool_of_workers.failed.set()
                raise
            finally:
                release()  # a failed bundle's worker only now: no bundle is sent to it once failed is set

        # one thread more than workers: the next bundle is encoded while every worker is busy
        with ThreadPoolExecutor(workers + 1, thread_name_prefix="aisle-bundle") as pool:
            futures = [pool.submit(run, ix) for ix in range(len(plan))]
            try:
                done = [future.result() for future in futures]
            except BaseException:
                for future in futures:  # bundles not started yet would only meet the same failure
                    future.cancel()
                raise
        for part in parted.values():
            part.finish()
        splits = [split for _, bundle_splits in done for split in bundle_splits]
        if len(done) == 1:
            return done[0][0], splits
        # one response for the stage, as Beam's parallel manager makes: the bundles' metrics summed, an error if any
        responses = [response for response, _ in done]
        merged = beam_fn_api_pb2.InstructionResponse(
            process_bundle=beam_fn_api_pb2.ProcessBundleResponse(
                monitoring_infos=monitoring_infos.consolidate(
                    itertools.chain.from_iterable(r.process_bundle.monitoring_infos for r in responses))),
            error=next((r.error for r in responses if r.error), ""))
        return merged, splits


_PLANNING = threading.Lock()  # create_stages swaps a function of Beam's translations module while it plans


class LocalFnApiRunner(ConcurrentStagesRunner):
    """Beam's ``FnApiRunner``, with :class:`SizedBundleManager` for every stage that holds no state, when it has
    more than one worker, and its stages planned with :func:`pipelines.local_stages.sink_flattens_into_groups`
    (:meth:`create_stages`), whatever the number of workers. With more than one worker, each stage starts as soon
    as its inputs are complete (:class:`pipelines.local_schedule.ConcurrentStagesRunner`).

    With one worker there is nothing to balance, and Beam's single bundle is
    cheaper: recommend at 10x in-process took 46.8 / 45.7 s with one bundle
    a stage and 50.6 / 49.7 s with bundles of :data:`BUNDLE_BYTES`
    (alternating), as every bundle has a fixed cost and flushes its partial
    counts and combines.
    """

    def create_stages(self, pipeline_proto):
        """Beam's stages, planned with :func:`pipelines.local_stages.sink_flattens_into_groups` in place of
        ``translations.sink_flattens``: the same phases, in Beam's order, which ``create_stages`` names as it
        calls ``translations.create_and_optimize_stages``."""
        beam_create = translations.create_and_optimize_stages

        def create(proto, phases, **kwargs):
            phases = [sink_flattens_into_groups if phase is translations.sink_flattens else phase for phase in phases]
            return beam_create(proto, phases=phases, **kwargs)

        with _PLANNING:
            translations.create_and_optimize_stages = create
            try:
                return super().create_stages(pipeline_proto)
            finally:
                translations.create_and_optimize_stages = beam_create

    def _get_bundle_manager(self, bundle_context_manager):
        if bundle_context_manager.num_workers == 1 or bundle_context_manager.stage.is_stateful():
            return super()._get_bundle_manager(bundle_context_manager)
        return SizedBundleManager(bundle_context_manager, self._progress_frequency,
                                  cache_token_generator=fn_runner.FnApiRunner.get_cache_token_generator(static=False))

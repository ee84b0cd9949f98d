"""The local runner's bundles of bounded size (pipelines/local_bundles.py)."""

import threading

import apache_beam as beam
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.local_bundles import BUNDLE_BYTES, plan_bundles
from pipelines.options import make_pipeline, pipeline_options

_seen: list[list[int]] = []  # per bundle of the stage after the shuffle: the sizes of the values it got
_lock = threading.Lock()


class _RecordBundles(beam.DoFn):
    def start_bundle(self):
        self._sizes = []
        with _lock:
            _seen.append(self._sizes)

    def process(self, kv):
        key, values = kv
        values = list(values)
        if key == "fail":
            raise ValueError("bad key in bundle")
        self._sizes.append(sum(len(v) for v in values))
        yield key, len(values)


_collected: list = []


def _collect(rows):
    _collected.extend(rows)


def test_a_large_shuffle_runs_as_bundles_of_bounded_size_with_every_key_once():
    keys = [f"k{i:04d}" for i in range(400)]
    _seen.clear()
    _collected.clear()
    with make_pipeline(pipeline_options([], workers=2, worker_mode="threads")) as p:
        (
            p
            | beam.Create([(k, i) for k in keys for i in range(2)])
            | "Value" >> beam.Map(lambda kv: (kv[0], b"x" * 20_000))
            | beam.GroupByKey()
            | beam.ParDo(_RecordBundles())
            | beam.combiners.ToList()
            | beam.Map(_collect)
        )
    # 400 keys x 40 kB: 16 MB of shuffle, so four bundles or more, where Beam's own manager makes two
    bundles = [sizes for sizes in _seen if sizes]
    assert len(bundles) >= 4
    assert max(sum(sizes) for sizes in bundles) <= 2 * BUNDLE_BYTES
    assert sorted(_collected) == [(k, 2) for k in keys]  # every key once, with all its values
    assert sum(len(sizes) for sizes in bundles) == len(keys)


def test_a_small_shuffle_keeps_one_bundle_per_worker():
    _seen.clear()
    _collected.clear()
    with make_pipeline(pipeline_options([], workers=2, worker_mode="threads")) as p:
        (
            p
            | beam.Create([(f"k{i}", b"v") for i in range(50)])
            | beam.GroupByKey()
            | beam.ParDo(_RecordBundles())
            | beam.combiners.ToList()
            | beam.Map(_collect)
        )
    assert len([sizes for sizes in _seen if sizes]) <= 2
    assert len(_collected) == 50


def test_a_failing_bundle_fails_the_job_with_its_error():
    with pytest.raises(Exception, match="bad key in bundle"):
        with make_pipeline(pipeline_options([], workers=2, worker_mode="threads")) as p:
            (
                p
                | beam.Create([(f"k{i:03d}", i) for i in range(300)] + [("fail", 0)])
                | beam.Map(lambda kv: (kv[0], b"x" * 30_000))
                | beam.GroupByKey()
                | beam.ParDo(_RecordBundles())
            )


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=60), st.integers(1, 4), st.integers(1, 20_000))
def test_plan_deals_every_nonempty_piece_to_one_bundle(sizes, workers, target):
    plan = plan_bundles(sizes, workers, target)
    dealt = sorted(i for group in plan for i in group)
    assert dealt == [i for i, s in enumerate(sizes) if s > 0]
    full = len(dealt)
    if full:
        total = sum(sizes)
        n = min(full, max(workers, -(-total // target)))
        assert all(group for group in plan)
        if total <= target or full < 2 * n:
            assert len(plan) == n
            assert max(len(g) for g in plan) - min(len(g) for g in plan) <= 1  # round-robin: about as many pieces each
        else:  # the last `workers` bundles' worth cut in two: whole bundles first, then 2 * workers halves
            whole, halves = plan[: n - workers], plan[n - workers :]
            assert len(halves) == 2 * workers
            assert max(len(g) for g in halves) - min(len(g) for g in halves) <= 1
            assert all(len(w) >= len(h) for w in whole for h in halves)
            assert all(2 * min(len(h) for h in halves) - 2 <= len(w) <= 2 * max(len(h) for h in halves) + 2 for w in whole)
    else:
        assert plan == [[]]


def test_plan_ends_a_stage_with_half_bundles():
    """Ten bundles' worth over two workers: eight whole bundles, then four of half the size, so that neither
    worker takes a last whole bundle alone."""
    sizes = [1000] * 200  # 200 kB over bundles of 20 kB
    plan = plan_bundles(sizes, workers=2, target=20_000)
    assert [sum(sizes[i] for i in group) for group in plan] == [20_000] * 8 + [10_000] * 4
    assert plan_bundles([1000] * 20, workers=2, target=20_000) == [list(range(0, 20, 2)), list(range(1, 20, 2))]  # one bundle's worth: as many as workers


def test_plan_refuses_nonsense():
    with pytest.raises(ValueError):
        plan_bundles([1], workers=0)
    with pytest.raises(ValueError):
        plan_bundles([1], workers=1, target=0)


def _shuffle(values_per_key: dict[str, list[bytes]]):
    """A runner-side shuffle buffer holding ``values_per_key``, appended as a worker's output would be."""
    from apache_beam import coders
    from apache_beam.runners.portability.fn_api_runner import execution
    from apache_beam.transforms import core, window

    pre = coders.WindowedValueCoder(coders.TupleCoder([coders.StrUtf8Coder(), coders.BytesCoder()]))
    post = coders.WindowedValueCoder(coders.TupleCoder([coders.StrUtf8Coder(), coders.IterableCoder(coders.BytesCoder())]))
    buffer = execution.GroupingBuffer(pre, post, core.Windowing(window.GlobalWindows()))
    impl = pre.get_impl()
    buffer.append(b"".join(impl.encode_nested(window.GlobalWindows.windowed_value((k, v)))
                           for k, vs in values_per_key.items() for v in vs))
    return buffer, post.get_impl()


def _decoded(chunks, impl) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for chunk in chunks:
        for wv in impl.decode_all(chunk):
            key, values = wv.value
            assert key not in out, f"key {key} in two pieces"
            out[key] = list(values)
    return out


def test_a_shuffle_is_encoded_piece_by_piece_as_its_bundles_are_taken():
    from pipelines.local_bundles import MAX_PIECES_PER_WORKER, _Input

    data = {f"k{i:04d}": [bytes([i % 251]) * (100 + i), b"v" * 10] for i in range(1000)}
    buffer, post = _shuffle(data)
    shuffle = _Input(buffer, workers=2)
    assert len(shuffle.sizes) == 2 * MAX_PIECES_PER_WORKER
    # only the first piece is encoded up front: the rest of the keys stay in the shuffle until taken
    assert len(buffer._table) == 1000 - len(range(0, 1000, 2 * MAX_PIECES_PER_WORKER))
    # sizes estimated from the first piece's bytes per value: the keys grow by a byte each, dealt round-robin
    halves = [shuffle.take(range(0, 128)), shuffle.take(range(128, 256))]
    true = [sum(len(c) for c in half) for half in halves]
    estimated = [sum(shuffle.sizes[:128]), sum(shuffle.sizes[128:])]
    for t, e in zip(true, estimated):
        assert 0.6 * t <= e <= 1.4 * t
    assert not buffer._table
    assert _decoded(halves[0] + halves[1], post) == data  # every key once, with all its values
    shuffle.finish()  # read again (a split, a second consumer), the shuffle gives the same data
    assert _decoded(list(buffer), post) == data
    again = _Input(buffer, workers=2)
    assert _decoded(again.take(range(len(again.sizes))), post) == data


def test_an_empty_shuffle_has_no_pieces():
    from pipelines.local_bundles import _Input

    buffer, _ = _shuffle({})
    shuffle = _Input(buffer, workers=2)
    assert shuffle.sizes == [] and shuffle.take([]) == []


class _Conn:
    """A control connection whose answers the test gives, as a worker's reader thread would."""

    def __init__(self, answered: bool = False):
        self.answered = answered

    def push(self, request):
        from apache_beam.portability.api import beam_fn_api_pb2
        from apache_beam.runners.portability.fn_api_runner.worker_handlers import ControlFuture

        response = beam_fn_api_pb2.InstructionResponse(instruction_id=request.instruction_id) if self.answered else None
        return ControlFuture(request.instruction_id, response)


class _Handler:
    def __init__(self, conn):
        self.control_conn, self.data_conn = conn, object()


def _bundle_request(name="bundle_1"):
    from apache_beam.portability.api import beam_fn_api_pb2

    return beam_fn_api_pb2.InstructionRequest(instruction_id=name, process_bundle=beam_fn_api_pb2.ProcessBundleRequest())


def test_a_worker_is_handed_back_once_when_it_answers_its_bundle():
    """The worker goes back to the pool when its answer arrives (the runner may still be reading the bundle's
    outputs), once only, and not for an answer with an error or for other requests."""
    from apache_beam.portability.api import beam_fn_api_pb2

    from pipelines.local_bundles import _HandlerReleasing, _Once

    released: list[str] = []
    handler = _Handler(_Conn())
    wrapped = _HandlerReleasing(handler, _Once(lambda: released.append("w")))
    assert wrapped.data_conn is handler.data_conn
    other = wrapped.control_conn.push(beam_fn_api_pb2.InstructionRequest(
        instruction_id="f1", finalize_bundle=beam_fn_api_pb2.FinalizeBundleRequest(instruction_id="bundle_0")))
    other.set(beam_fn_api_pb2.InstructionResponse(instruction_id="f1"))
    assert released == []
    future = wrapped.control_conn.push(_bundle_request())
    assert released == []
    future.set(beam_fn_api_pb2.InstructionResponse(instruction_id="bundle_1"))
    assert released == ["w"] and future.get().instruction_id == "bundle_1"
    wrapped.control_conn.push(_bundle_request("bundle_2")).set(beam_fn_api_pb2.InstructionResponse(instruction_id="bundle_2"))
    assert released == ["w"]  # once

    failed: list[str] = []
    wrapped = _HandlerReleasing(_Handler(_Conn()), _Once(lambda: failed.append("w")))
    wrapped.control_conn.push(_bundle_request()).set(beam_fn_api_pb2.InstructionResponse(instruction_id="bundle_1", error="boom"))
    assert failed == []  # the bundle's thread hands it back once the failure is recorded


def test_a_worker_that_answered_before_the_hook_was_set_is_handed_back_too():
    from pipelines.local_bundles import _HandlerReleasing, _Once

    released: list[str] = []
    _HandlerReleasing(_Handler(_Conn(answered=True)), _Once(lambda: released.append("w"))).control_conn.push(_bundle_request())
    assert released == ["w"]

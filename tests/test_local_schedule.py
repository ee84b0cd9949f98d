"""The local runner's stage scheduling: with several workers, stages whose inputs are complete run at once (pipelines/local_schedule.py)."""

import functools
import json
import os
import time

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import fn_runner

from pipelines import local_bundles, local_schedule
from pipelines.options import make_pipeline, pipeline_options

SLEEP = 0.6


def _record(element, folder: str, tag: str):
    """Sleeps, counts, and leaves a file with when this element's step ran (a worker process may run it)."""
    start = time.time()
    time.sleep(SLEEP)
    Metrics.counter("schedule_test", "slept").inc()
    with open(os.path.join(folder, f"{tag}-{element}.json"), "w") as f:
        json.dump([start, time.time()], f)
    return element


def _intervals(folder, tag: str) -> list[tuple[float, float]]:
    return [tuple(json.load(open(os.path.join(folder, name)))) for name in sorted(os.listdir(folder)) if name.startswith(tag + "-")]


def _overlap(a, b) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)


def _two_branches(p, folder: str, tag_a="a", tag_b="b"):
    # one element each, behind a shuffle: each branch is a stage of one bundle, which keeps one worker busy
    for tag in (tag_a, tag_b):
        (p | f"Create{tag}" >> beam.Create([1]) | f"Shuffle{tag}" >> beam.Reshuffle()
         | f"Sleep{tag}" >> beam.Map(_record, folder=folder, tag=tag))


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_independent_stages_run_at_once_with_two_workers(mode, tmp_path):
    with make_pipeline(pipeline_options([], workers=2, worker_mode=mode)) as p:
        _two_branches(p, str(tmp_path))
    result = p.result
    a, b = _intervals(tmp_path, "a"), _intervals(tmp_path, "b")
    assert len(a) == 1 and len(b) == 1
    assert _overlap(a, b), (a, b)
    counters = result.metrics().query(MetricsFilter().with_name("slept"))["counters"]
    assert sum(c.committed for c in counters) == 2  # both stages' metrics reach the job's result


def test_with_one_worker_stages_run_one_after_the_other(tmp_path):
    with make_pipeline(pipeline_options([], workers=1)) as p:
        _two_branches(p, str(tmp_path))
    assert not _overlap(_intervals(tmp_path, "a"), _intervals(tmp_path, "b"))


def test_beams_own_loop_runs_them_one_after_the_other(tmp_path, monkeypatch):
    # the same job on the same runner with Beam's stage loop: what the concurrent loop replaces
    monkeypatch.setattr(local_schedule.ConcurrentStagesRunner, "run_stages", fn_runner.FnApiRunner.run_stages)
    monkeypatch.setattr(local_schedule.ConcurrentStagesRunner, "_run_bundle", fn_runner.FnApiRunner._run_bundle)
    with make_pipeline(pipeline_options([], workers=2, worker_mode="threads")) as p:
        _two_branches(p, str(tmp_path))
    assert not _overlap(_intervals(tmp_path, "a"), _intervals(tmp_path, "b"))


def _sleepers(p, folder: str, n: int = 3):
    return [
        p | f"Create{i}" >> beam.Create([i]) | f"Shuffle{i}" >> beam.Reshuffle()
        | f"Sleep{i}" >> beam.Map(_record, folder=folder, tag=f"w{i}")
        for i in range(n)
    ]


def test_writers_of_one_shuffle_run_at_once_and_every_value_is_grouped(tmp_path):
    folder, out = tmp_path / "times", tmp_path / "rows.json"
    folder.mkdir()
    with make_pipeline(pipeline_options([], workers=2, worker_mode="threads")) as p:
        keyed = [pc | f"Key{i}" >> beam.Map(lambda v: ("k", v)) for i, pc in enumerate(_sleepers(p, str(folder)))]
        # the Flatten is written straight into the GroupByKey's shuffle: three stages write one buffer
        (keyed | beam.Flatten() | beam.GroupByKey() | beam.MapTuple(lambda k, vs: sorted(vs))
         | beam.Map(lambda rows, path: open(path, "w").write(json.dumps(rows)), path=str(out)))
    assert json.loads(out.read_text()) == [0, 1, 2]
    writers = [_intervals(folder, f"w{i}") for i in range(3)]
    assert all(len(w) == 1 for w in writers)
    assert any(_overlap(writers[i], writers[j]) for i in range(3) for j in range(i + 1, 3))


def test_writers_of_one_list_buffer_never_run_at_once_and_each_reader_gets_every_element(tmp_path):
    folder = tmp_path / "times"
    folder.mkdir()
    with make_pipeline(pipeline_options([], workers=2, worker_mode="threads")) as p:
        both = _sleepers(p, str(folder)) | beam.Flatten()  # read by two steps: Beam materializes it
        both | "Count" >> beam.combiners.Count.Globally() | "WriteCount" >> beam.Map(
            lambda n, path: open(path, "w").write(json.dumps(n)), path=str(tmp_path / "count.json"))
        both | "List" >> beam.combiners.ToList() | "WriteList" >> beam.Map(
            lambda rows, path: open(path, "w").write(json.dumps(sorted(rows))), path=str(tmp_path / "list.json"))
    assert json.loads((tmp_path / "count.json").read_text()) == 3
    assert json.loads((tmp_path / "list.json").read_text()) == [0, 1, 2]
    writers = [_intervals(folder, f"w{i}") for i in range(3)]
    assert not any(_overlap(writers[i], writers[j]) for i in range(3) for j in range(i + 1, 3))


def _fail(element):
    raise ValueError(f"bad element {element}")


def test_a_failing_stage_fails_the_job_with_its_error_while_another_runs(tmp_path):
    with pytest.raises(Exception, match="bad element 7"):
        with make_pipeline(pipeline_options([], workers=2, worker_mode="threads")) as p:
            p | "Bad" >> beam.Create([7]) | "ShuffleBad" >> beam.Reshuffle() | "Fail" >> beam.Map(_fail)
            p | "Good" >> beam.Create([1]) | "ShuffleGood" >> beam.Reshuffle() | "Sleep" >> beam.Map(_record, folder=str(tmp_path), tag="g")


def test_side_inputs_are_complete_before_their_readers_run(tmp_path):
    out = tmp_path / "rows.json"
    with make_pipeline(pipeline_options([], workers=2, worker_mode="threads")) as p:
        slow = (p | "Side" >> beam.Create(range(5)) | "ShuffleSide" >> beam.Reshuffle()
                | "SlowSide" >> beam.Map(lambda i: time.sleep(0.2) or i))
        (p | "Main" >> beam.Create(["x"]) | "ShuffleMain" >> beam.Reshuffle()
         | "Read" >> beam.Map(lambda x, side: (x, sorted(side)), side=beam.pvalue.AsList(slow))
         | beam.Map(lambda row, path: open(path, "w").write(json.dumps(row)), path=str(out)))
    assert json.loads(out.read_text()) == ["x", [0, 1, 2, 3, 4]]


def _mark(element: str, folder: str):
    time.sleep(0.02)
    open(os.path.join(folder, element[:8]), "w").close()


def test_after_a_failure_the_job_sends_no_more_bundles_and_raises_the_failure(tmp_path, monkeypatch):
    # bundles of about 1 kB: the good stage runs as a hundred bundles or so, beside the failing one
    monkeypatch.setattr(local_bundles, "plan_bundles", functools.partial(local_bundles.plan_bundles, target=1024))
    with pytest.raises(Exception, match="bad element 7") as raised:
        with make_pipeline(pipeline_options([], workers=2, worker_mode="threads")) as p:
            # fails once the good stage is well under way
            p | "Bad" >> beam.Create([7]) | "ShuffleBad" >> beam.Reshuffle() | "Fail" >> beam.Map(lambda e: time.sleep(1) or _fail(e))
            (p | "Good" >> beam.Create([f"{i:08d}" + "x" * 600 for i in range(200)]) | "ShuffleGood" >> beam.Reshuffle()
             | "Mark" >> beam.Map(_mark, folder=str(tmp_path)))
    assert not isinstance(raised.value, local_schedule.BundleNotStarted)
    assert 0 < len(os.listdir(tmp_path)) < 200  # it ran beside the failure, and its later bundles were not sent

"""The local runner's stage planning: a Flatten that only a GroupByKey reads is written into its shuffle (pipelines/local_stages.py)."""

import json

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import fn_runner, translations

from pipelines.local_bundles import LocalFnApiRunner
from pipelines.options import make_pipeline, pipeline_options

def _stage_names(runner, pipeline: beam.Pipeline) -> list[str]:
    _, stages = runner.create_stages(pipeline.to_runner_api())
    return [stage.name for stage in stages]


def _join(p, n: int = 60):
    orders = p | "Orders" >> beam.Create([(f"k{i % 7}", i) for i in range(n)])
    views = p | "Views" >> beam.Create([(f"k{i % 5}", f"v{i}") for i in range(n // 2)])  # another element type
    returns = p | "Returns" >> beam.Create([("k3", None)])
    return (
        {"orders": orders, "views": views, "returns": returns}
        | "Join" >> beam.CoGroupByKey()
        | "Sorted" >> beam.MapTuple(lambda k, g: (k, sorted(g["orders"]), sorted(g["views"]), list(g["returns"])))
    )


def _expected(n: int = 60):
    keys = sorted({f"k{i % 7}" for i in range(n)} | {f"k{i % 5}" for i in range(n // 2)} | {"k3"})
    return [
        (k, sorted(i for i in range(n) if f"k{i % 7}" == k), sorted(f"v{i}" for i in range(n // 2) if f"k{i % 5}" == k), [None] if k == "k3" else [])
        for k in keys
    ]


def test_a_join_has_no_stage_of_its_own_for_its_flatten():
    p = beam.Pipeline()
    _join(p)
    beam_stages, aisle_stages = _stage_names(fn_runner.FnApiRunner(), p), _stage_names(LocalFnApiRunner(), p)
    assert any("Join/CoGroupByKeyImpl/Flatten/Read" in name for name in beam_stages)  # Beam's plan has one
    assert not any("Flatten/Read" in name for name in aisle_stages)
    assert len(aisle_stages) < len(beam_stages)
    assert not any("Transcode/0/Transcode" in name for name in aisle_stages)  # each input re-encoded once at most
    assert translations.create_and_optimize_stages.__name__ == "create_and_optimize_stages"  # Beam's own, back in place


def _write_json(rows, path):
    with open(path, "w") as f:
        json.dump(sorted(rows), f)


@pytest.mark.parametrize("workers, mode", [(1, "threads"), (2, "threads"), (2, "processes")])
def test_a_join_groups_every_input_by_key(workers, mode, tmp_path):
    out = tmp_path / "rows.json"
    with make_pipeline(pipeline_options([], workers=workers, worker_mode=mode)) as p:
        _join(p) | beam.combiners.ToList() | beam.Map(_write_json, path=str(out))  # a worker process writes it
    assert json.loads(out.read_text()) == json.loads(json.dumps(_expected()))  # tuples read back as lists


def test_a_flatten_read_by_more_than_a_groupbykey_keeps_its_stage():
    p = beam.Pipeline()
    a = p | "A" >> beam.Create([("x", 1)])
    b = p | "B" >> beam.Create([("y", 2)])
    both = (a, b) | "Both" >> beam.Flatten()
    both | "Group" >> beam.GroupByKey()
    both | "Count" >> beam.combiners.Count.Globally()
    assert any("Both/Read" in name for name in _stage_names(LocalFnApiRunner(), p))


def test_flattens_before_and_after_other_steps_give_every_element_once(tmp_path):
    out = tmp_path / "rows.json"
    with make_pipeline(pipeline_options([], workers=2, worker_mode="threads")) as p:
        a = p | "A" >> beam.Create(range(100)) | "KeyA" >> beam.Map(lambda i: (i % 10, i))
        b = p | "B" >> beam.Create(range(100, 150)) | "KeyB" >> beam.Map(lambda i: (i % 10, i))
        side = p | "Side" >> beam.Create([1000])
        # one input reads a side input, so its stage must follow the side input's
        c = p | "C" >> beam.Create([5]) | "KeyC" >> beam.Map(lambda i, s: (i, s), s=beam.pvalue.AsSingleton(side))
        grouped = (a, b, c) | "Flat" >> beam.Flatten() | "Group" >> beam.GroupByKey()
        # a second flatten, read by a Map and not by a shuffle, keeps Beam's plan
        sums = grouped | "Sum" >> beam.MapTuple(lambda k, vs: (k, sum(vs)))
        extra = p | "Extra" >> beam.Create([(99, 0)])
        (sums, extra) | "Flat2" >> beam.Flatten() | beam.combiners.ToList() | beam.Map(_write_json, path=str(out))
    expected = {k: sum(i for i in range(150) if i % 10 == k) for k in range(10)}
    expected[5] += 1000
    assert json.loads(out.read_text()) == sorted([[k, v] for k, v in expected.items()] + [[99, 0]])


def test_the_benchmark_runs_both_plans_to_the_same_result(tmp_path):
    from benchmarks.local_runner import main

    out = tmp_path / "r.json"
    assert main(["--rows", "3000", "--workers", "1", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["same_result_every_run"] is True
    figures = report["workers"]["1"]
    assert figures["beam"]["job_secs_median"] > 0 and figures["aisle"]["job_secs_median"] > 0
    assert figures["speedup_aisle_vs_beam"] == round(figures["beam"]["job_secs_median"] / figures["aisle"]["job_secs_median"], 2)

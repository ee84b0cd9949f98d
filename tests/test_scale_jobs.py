"""enrich and recommend on two local worker processes write the same bytes as on one; the sharded writer."""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import pathlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import SAMPLES
from transforms.errors import ConfigError
from transforms.shards import FixedBatches, TaggedFixedBatches, WriteSortedShards, _row_json, shard_index, sorted_rows

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def digest(folder: pathlib.Path) -> dict[str, str]:
    """sha256 of every output file (Parquet and JSON lines), staging and summaries left out."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.suffix in (".parquet", ".jsonl") and not any(part.startswith(("_", "model")) for part in p.relative_to(folder).parts)
    }


def assert_sorted_shards(folder, n_shards: int, rows: list[dict]) -> None:
    """``folder``'s Parquet shards are ``-of-<n_shards>``, each sorted by key and holding only its shard's keys,
    and together they hold every row's key once."""
    files = sorted(glob.glob(str(folder / "*.parquet")))
    assert files and all(f.endswith(f"-of-{n_shards:05d}.parquet") for f in files)
    seen = []
    for f in files:
        keys = pq.read_table(f).column("key").to_pylist()
        assert keys == sorted(keys)
        assert {shard_index([k], n_shards) for k in keys} == {int(pathlib.Path(f).name.split("-")[1])}
        seen += keys
    assert sorted(seen) == [r["key"] for r in rows]


def test_sorted_shards_split_by_count_and_sort_each_shard(tmp_path, local_runner):
    schema = pa.schema([pa.field("key", pa.string()), pa.field("n", pa.int64())])
    rows = [{"key": f"k{i:02d}", "n": i} for i in range(10)]
    with TestPipeline(runner=local_runner) as p:
        _ = p | beam.Create(rows[::-1]) | WriteSortedShards(str(tmp_path / "out"), schema, ("key",), rows_per_shard=3)
    assert_sorted_shards(tmp_path / "out", 4, rows)  # ceil(10 / 3) shards (empty ones get no file)


def test_sorted_shards_sized_by_a_count_made_upstream(tmp_path, local_runner):
    """``n_rows`` from elsewhere sets the number of shards; the rows and their order stay those of the counted write."""
    from transforms.shards import WriteSortedShards

    schema = pa.schema([pa.field("key", pa.string()), pa.field("n", pa.int64())])
    rows = [{"key": f"k{i:02d}", "n": i} for i in range(10)]
    with TestPipeline(runner=local_runner) as p:
        keys = p | "Keys" >> beam.Create([r["key"] for r in rows])
        estimate = keys | beam.combiners.Count.Globally() | beam.Map(lambda n: 2 * n)  # 20: 7 shards of 3
        _ = p | "Rows" >> beam.Create(rows[::-1]) | WriteSortedShards(str(tmp_path / "out"), schema, ("key",), rows_per_shard=3,
                                                                      n_rows=estimate)
    assert_sorted_shards(tmp_path / "out", 7, rows)


def test_tagged_batches_are_each_inputs_fixed_batches_from_one_shuffle(local_runner):
    """Every tag is cut into the batches FixedBatches would cut it into alone; one GroupByKey groups them all."""
    big = [(f"item{i:03d}", i) for i in range(37)]
    small = [(f"cold{i}", f"title {i}") for i in range(5)]
    sizes = {"big": 8, "small": 2}

    def same_batches(pairs):
        pairs = list(pairs)
        mismatched = [batch for batch, (got, alone) in pairs if (len(got), len(alone)) != (1, 1)]
        items = sorted(key for (tag, batch), _ in pairs for key, _ in batch)
        if mismatched or items != sorted(k for k, _ in big + small):
            raise BeamAssertException(f"batches differ: {mismatched}, items {items}")
        if any(len(batch) > sizes[tag] for (tag, batch), _ in pairs):
            raise BeamAssertException("a batch over its size")

    with TestPipeline(runner=local_runner) as p:
        inputs = {"big": p | "Big" >> beam.Create(big[::-1]), "small": p | "Small" >> beam.Create(small)}
        got = inputs | "Tagged" >> TaggedFixedBatches(sizes)
        alone = [inputs[tag] | f"Alone{tag}" >> FixedBatches(size) | f"Tag{tag}" >> beam.Map(lambda b, t=tag: (t, b))
                 for tag, size in sizes.items()]
        both = {
            "got": got | "KeyGot" >> beam.Map(lambda tb: (tb, None)),
            "alone": alone | "FlattenAlone" >> beam.Flatten() | "KeyAlone" >> beam.Map(lambda tb: (tb, None)),
        }
        joined = both | beam.CoGroupByKey() | beam.Map(lambda kv: (kv[0], (list(kv[1]["got"]), list(kv[1]["alone"]))))
        assert_that(joined, same_batches)
    graph = {t.unique_name for t in p.to_runner_api().components.transforms.values()}
    assert [name for name in graph if name.startswith("Tagged/") and name.endswith("GroupBatches")] == ["Tagged/GroupBatches"]
    with pytest.raises(ConfigError, match="batch sizes"):
        TaggedFixedBatches({"big": 0})


@given(st.lists(st.fixed_dictionaries({
    "a": st.one_of(st.none(), st.sampled_from(["x", "y", "z"])),
    "b": st.one_of(st.none(), st.integers(-2, 2)),
    "v": st.text(max_size=3),
}), max_size=30))
def test_sorted_rows_orders_like_keys_then_whole_row(rows):
    # the reference: every row's keys, then the row as JSON (None sorts last)
    reference = sorted(rows, key=lambda r: (tuple((r[k] is None, r[k]) for k in ("a", "b")), _row_json(r)))
    assert sorted_rows(rows, ("a", "b")) == reference
    assert sorted_rows(rows[::-1], ("a", "b")) == reference  # input order never shows


def test_sorted_shards_check_their_keys():
    from transforms.errors import ConfigError

    schema = pa.schema([pa.field("key", pa.string())])
    with pytest.raises(ConfigError, match="not columns"):
        WriteSortedShards("out", schema, ("id",))
    with pytest.raises(ConfigError, match="rows_per_shard"):
        WriteSortedShards("out", schema, ("key",), rows_per_shard=0)


def test_sorted_shards_refuse_a_layout_with_other_keys():
    from transforms.recommend import RECOMMENDATION_SCHEMA, RecommendationLayout

    with pytest.raises(ConfigError, match="layout sorts by"):
        WriteSortedShards("out", RECOMMENDATION_SCHEMA, ("model_type",), layout=RecommendationLayout("similar-items"))


_ids = st.text(alphabet=st.sampled_from('ab"\\/\x1f\n\u00e9\u4e2d\U0001f600'), min_size=1, max_size=4)
_score = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(-2, 2, width=32).map(np.float32),
    st.integers(-3, 3),
)
_recommendations = st.lists(
    st.tuples(_ids, st.lists(st.tuples(_ids, _score), max_size=4).map(tuple), st.one_of(st.none(), st.just(""), _ids)),
    unique_by=lambda r: r[0],
    max_size=12,
)


@given(_recommendations)
def test_recommendation_json_lines_are_those_of_json_dumps(recs):
    from transforms.recommend import Recommendation, retail_prediction, retail_prediction_json

    for rec in recs:
        expected = json.dumps(retail_prediction(Recommendation(*rec), "similar-items"), sort_keys=True)
        assert retail_prediction_json(rec, "similar-items") == expected
        assert retail_prediction_json(Recommendation(*rec), "similar-items") == expected


@given(_recommendations)
def test_recommendation_layout_builds_the_table_of_the_dict_rows(recs):
    from transforms.recommend import RECOMMENDATION_SCHEMA, Recommendation, RecommendationLayout, recommendation_row
    from transforms.shards import sorted_elements

    layout = RecommendationLayout("frequently-bought-together")
    ordered = sorted_elements(recs[::-1], layout)
    assert [e[0] for e in ordered] == sorted(e[0] for e in recs)
    rows = [recommendation_row(Recommendation(*e), "frequently-bought-together") for e in ordered]
    assert [layout.row(e) for e in ordered] == rows
    expected = pa.Table.from_pylist(rows, schema=RECOMMENDATION_SCHEMA)
    got = layout.table(ordered, RECOMMENDATION_SCHEMA)
    assert got.schema == expected.schema
    assert got.to_pylist() == expected.to_pylist() or _same_with_nan(got.to_pylist(), expected.to_pylist())


def _same_with_nan(a, b) -> bool:
    """Row lists equal where a NaN score equals a NaN score (``==`` says it never does)."""
    return json.dumps(a, default=str) == json.dumps(b, default=str)


def test_recommendation_layout_writes_the_files_of_dict_rows(tmp_path, local_runner):
    """The same recommendations written as tuples with the layout and as dict rows: the same Parquet and JSON lines."""
    from transforms.recommend import RECOMMENDATION_SCHEMA, Recommendation, RecommendationLayout, recommendation_row, retail_prediction

    recs = [Recommendation(f"k{i:02d}", tuple((f"i{j}", 1.0 / (j + 1)) for j in range(i % 4)), "popularity" if i % 3 else None) for i in range(11)]
    layout = RecommendationLayout("recommended-for-you")
    with TestPipeline(runner=local_runner) as p:
        _ = (p | "Tuples" >> beam.Create([tuple(r) for r in recs[::-1]])
             | "WriteTuples" >> WriteSortedShards(str(tmp_path / "tuples"), RECOMMENDATION_SCHEMA, ("key",), rows_per_shard=4,
                                                  jsonl=layout.jsonl, layout=layout))
        _ = (p | "Rows" >> beam.Create([recommendation_row(r, "recommended-for-you") for r in recs])
             | "WriteRows" >> WriteSortedShards(
                 str(tmp_path / "rows"), RECOMMENDATION_SCHEMA, ("key",), rows_per_shard=4,
                 jsonl=lambda row: json.dumps(retail_prediction(Recommendation(row["key"], tuple((r["id"], r["score"]) for r in row["results"]),
                                                                               row["fallback"]), "recommended-for-you"), sort_keys=True)))
    tuples, rows = digest(tmp_path / "tuples"), digest(tmp_path / "rows")
    assert len(tuples) == 2 * 3  # ceil(11 / 4) shards, a Parquet file and a JSON lines file each
    assert tuples == rows
    assert_sorted_shards(tmp_path / "tuples", 3, [{"key": r.key} for r in recs])


# --------------------------------------------------------------------------- enrich


@pytest.fixture(scope="module")
def enrich_catalog(tmp_path_factory):
    """Two products with sample images (absolute paths), 30 without; a tiny random NER model as ONNX."""
    from components.ner_export import export_onnx
    from tests.ner_support import build_tiny_base

    root = tmp_path_factory.mktemp("enrich_scale")
    lines = [json.loads(line) for line in (SAMPLES / "catalog_images.jsonl").read_text().splitlines()[:2]]
    for rec in lines:
        for img in rec["images"]:
            img["uri"] = str(SAMPLES / img["uri"])
    words = ["red", "mug", "tea", "made", "in", "spain", "glass", "jar", "candle", "heart"]
    lines += [{"id": f"p{i:03d}", "title": " ".join(words[j % len(words)] for j in range(i, i + 4))} for i in range(30)]
    catalog = root / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in lines))
    base = build_tiny_base(root / "base", extra_words=words)
    export_onnx(base, str(root / "onnx"))
    return catalog, str(root / "onnx")


def test_enrich_two_worker_processes_write_what_one_does(enrich_catalog, tmp_path):
    from pipelines.enrich import run_enrich

    catalog, ner = enrich_catalog
    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        summary = run_enrich(str(catalog), str(out), threads=1, workers=workers, ner_model=ner, ner_options={"intra_op_threads": 1})
        assert summary["conservation"]["ok"]
        outs[workers] = digest(out)
    assert outs[1] == outs[2]
    assert {k.split("/")[0] for k in outs[1]} >= {"ocr_lines", "ocr_text", "catalog_enriched"}
    enriched = pq.read_table(tmp_path / "w2" / "catalog_enriched").num_rows
    assert enriched == 32


# --------------------------------------------------------------------------- recommend


@pytest.fixture(scope="module")
def retail_events(tmp_path_factory):
    """The bundled retail sample through ``aisle ingest``, and an untrained model of its items (the job's cost does not depend on training)."""
    pytest.importorskip("tensorflow")
    from components.recommend_data import read_event_baskets
    from components.recommend_model import TrainConfig, TrainedModel, build_model, export_model
    from pipelines.ingest import run_ingest
    from transforms.recommend_vocab import ItemVocab

    root = tmp_path_factory.mktemp("recommend_scale")
    run_ingest([str(SAMPLES / "retail" / "online_retail_sample.csv")], str(root / "ingest"), format="online-retail", workers=1, now=NOW)
    baskets = [b.items for b in read_event_baskets(str(root / "ingest" / "events"))]
    vocab = ItemVocab.build(baskets)
    cfg = TrainConfig(dim=8, max_query_items=8, epochs=1)
    export_model(TrainedModel(build_model(len(vocab), dim=cfg.dim, max_query_items=cfg.max_query_items), vocab, cfg), str(root / "model"))
    return root


def test_recommend_two_worker_processes_write_what_one_does(retail_events, tmp_path):
    from pipelines.recommend import OUTPUTS, run

    root = retail_events
    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        summary = run(events=str(root / "ingest" / "events"), catalog=str(root / "ingest" / "products"), out_dir=str(out),
                      model_dir=str(root / "model"), workers=workers, k=5, echo=lambda *_: None)
        assert all(summary["outputs"][name]["rows"] > 0 for name in OUTPUTS)
        assert not list(out.glob("_staging-*")), "the staging folder is removed after the commit"
        outs[workers] = digest(out)
    assert outs[1] == outs[2]
    assert {k.split("/")[0] for k in outs[1]} == {*OUTPUTS, "dead_letter"}
    assert any(k.endswith(".jsonl") for k in outs[1])


# --------------------------------------------------------------------------- local runner options


def _worker_env(_):
    import gc
    import os

    from apache_beam.runners.worker import sdk_worker, statesampler

    yield (
        os.getpid(),
        os.environ.get("OPENBLAS_NUM_THREADS"),
        os.environ.get("TF_NUM_INTRAOP_THREADS"),
        os.environ.get("MALLOC_ARENA_MAX"),
        sdk_worker.DEFAULT_BUNDLE_PROCESSOR_CACHE_SHUTDOWN_THRESHOLD_S,
        getattr(sdk_worker.SdkHarness.run, "_exits_fast", False),
        getattr(sdk_worker.BundleProcessorCache._shutdown_cached_bundle_processors, "_trims", False),
        statesampler.get_current_tracker().sampling_period_ms,  # the sampler of the bundle running this
        ",".join(map(str, gc.get_threshold())),
        gc.get_freeze_count() > 10_000,  # at least Beam's SDK worker, imported before the freeze
    )


def test_worker_processes_share_the_cores(tmp_path, monkeypatch):
    """Two worker processes each size their BLAS and TensorFlow pools to half the cores, keep malloc to two
    arenas, drop an idle stage's bundle processor after BUNDLE_PROCESSOR_IDLE_S (Beam's default: 60 s),
    sample a bundle's steps every STATE_SAMPLING_PERIOD_MS (Beam's default: 200 ms) and collect garbage at
    GC_THRESHOLDS with their imports frozen; the launcher's environment is restored."""
    import os

    from pipelines.local_worker import BUNDLE_PROCESSOR_IDLE_S, GC_THRESHOLDS, STATE_SAMPLING_PERIOD_MS
    from pipelines.options import THREAD_ENV, make_pipeline, pipeline_options

    for name in (*THREAD_ENV, "MALLOC_ARENA_MAX"):
        monkeypatch.delenv(name, raising=False)
    cores = len(os.sched_getaffinity(0))
    out = tmp_path / "env.json"
    with make_pipeline(pipeline_options([], workers=2)) as p:
        _ = (
            p
            | beam.Create(range(64))
            | beam.Reshuffle()
            | beam.FlatMap(_worker_env)
            | beam.combiners.ToList()
            | beam.Map(lambda rows: out.write_text(json.dumps(sorted(set(rows)))))
        )
    seen = json.loads(out.read_text())
    assert {tuple(row[1:]) for row in seen} == {
        (str(max(1, cores // 2)), str(max(1, cores // 2)), "2", BUNDLE_PROCESSOR_IDLE_S, True, True, STATE_SAMPLING_PERIOD_MS,
         ",".join(map(str, GC_THRESHOLDS)), True)}
    assert BUNDLE_PROCESSOR_IDLE_S != 60 and STATE_SAMPLING_PERIOD_MS != 200 and GC_THRESHOLDS[0] != 700
    assert all(pid != os.getpid() for pid, *_ in seen)
    assert not any(name in os.environ for name in (*THREAD_ENV, "MALLOC_ARENA_MAX"))


def _sampling_period(_):
    from apache_beam.runners.worker import statesampler

    yield statesampler.get_current_tracker().sampling_period_ms


def _in_process_rows(tmp_path, fn) -> list:
    """What ``fn`` yields for eight elements in an in-process job, as JSON gives it back."""
    from pipelines.options import make_pipeline, pipeline_options

    out = tmp_path / "rows.json"
    with make_pipeline(pipeline_options([], workers=1)) as p:
        _ = (
            p
            | beam.Create(range(8))
            | beam.FlatMap(fn)
            | beam.combiners.ToList()
            | beam.Map(lambda rows: out.write_text(json.dumps(rows)))
        )
    return json.loads(out.read_text())


def test_in_process_bundles_sample_promptly_too(tmp_path):
    """The in-process worker's bundles also sample every STATE_SAMPLING_PERIOD_MS, so a bundle's end waits at
    most that long for its sampling thread."""
    from pipelines.local_worker import STATE_SAMPLING_PERIOD_MS

    assert set(_in_process_rows(tmp_path, _sampling_period)) == {STATE_SAMPLING_PERIOD_MS}


def _collector(_):
    import gc

    yield list(gc.get_threshold()), gc.get_freeze_count()


def test_in_process_runs_collect_less_then_restore_the_collector(tmp_path):
    """An in-process job collects garbage at GC_THRESHOLDS with what existed when it started frozen; when it
    ends, the launcher's thresholds are back and nothing it froze stays frozen."""
    import gc

    from pipelines.local_worker import GC_THRESHOLDS

    before = gc.get_threshold(), gc.get_freeze_count()
    assert before[1] == 0 and before[0] != GC_THRESHOLDS
    seen = _in_process_rows(tmp_path, _collector)
    assert {tuple(t) for t, _ in seen} == {GC_THRESHOLDS}
    assert min(frozen for _, frozen in seen) > 10_000  # Beam and the job's graph
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_collecting_less_leaves_an_earlier_freeze_frozen():
    """Objects frozen before the block stay frozen after it: the block cannot tell them from its own."""
    import gc

    from pipelines.local_worker import collecting_less

    threshold = gc.get_threshold()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with collecting_less((5_000, 5, 5)):
            assert gc.get_threshold() == (5_000, 5, 5)
            assert gc.get_freeze_count() >= frozen
        assert gc.get_threshold() == threshold
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()


def test_state_sampling_keeps_beams_period_where_its_signature_changed(monkeypatch):
    """Where Beam's StateSampler no longer takes the period as its only default argument, nothing is changed."""
    from apache_beam.runners.worker import statesampler

    from pipelines.local_worker import prompt_state_sampling

    class Changed:
        def __init__(self, prefix, counter_factory, sampling_period_ms=200, sampling_period_ratio=1.2):
            pass

    monkeypatch.setattr(statesampler, "StateSampler", Changed)
    assert prompt_state_sampling(5) is False
    assert Changed.__init__.__defaults__ == (200, 1.2)


def _register_exit_marker(folder):
    import atexit
    import os

    def mark(path=os.path.join(folder, f"exit-{os.getpid()}")):
        with open(path, "w") as f:
            f.write("ran")

    atexit.register(mark)
    yield os.getpid()


def test_worker_processes_end_fast_but_run_their_exit_handlers(tmp_path):
    """A worker process skips Python's heap teardown at exit, but what its DoFns registered to run at exit
    still runs, in every worker, and the job succeeds (a worker that exits non-zero fails it)."""
    from apache_beam.runners.worker import sdk_worker

    from pipelines.local_worker import exit_without_heap_teardown
    from pipelines.options import make_pipeline, pipeline_options

    folder = str(tmp_path)
    pids = tmp_path / "pids.json"
    with make_pipeline(pipeline_options([], workers=2)) as p:
        _ = (
            p
            | beam.Create(range(64))
            | beam.Reshuffle()
            | beam.FlatMap(lambda _: _register_exit_marker(folder))
            | beam.combiners.ToList()
            | beam.Map(lambda rows: pids.write_text(json.dumps(sorted(set(rows)))))
        )
    seen = json.loads(pids.read_text())
    assert len(seen) == 2
    assert sorted(p.name for p in tmp_path.glob("exit-*")) == sorted(f"exit-{pid}" for pid in seen)
    assert all((tmp_path / f"exit-{pid}").read_text() == "ran" for pid in seen)
    # the launcher, whose threads may host workers, is left alone
    assert exit_without_heap_teardown() is False
    assert not getattr(sdk_worker.SdkHarness.run, "_exits_fast", False)


def test_dropping_a_stages_processors_then_trims_malloc():
    """The worker's trim runs after Beam has shut the dropped processors down, and only when it dropped some."""
    from apache_beam.runners.worker import sdk_worker

    from pipelines.local_worker import _shutdown_then_trim, glibc, trim_after_dropping_processors

    events = []

    class Processor:
        def shutdown(self):
            events.append("shutdown")

    wrapped = _shutdown_then_trim(sdk_worker.BundleProcessorCache._shutdown_cached_bundle_processors, lambda: events.append("trim"))
    cached = [Processor(), Processor()]
    wrapped(cached)
    assert events == ["shutdown", "shutdown", "trim"] and cached == []
    wrapped([])
    assert events == ["shutdown", "shutdown", "trim"]  # nothing dropped, nothing to trim
    assert glibc() is not None and glibc().malloc_trim(0) in (0, 1)  # glibc here
    # the launcher, whose threads may host workers, keeps Beam's own
    assert trim_after_dropping_processors() is False
    assert not getattr(sdk_worker.BundleProcessorCache._shutdown_cached_bundle_processors, "_trims", False)


def test_malloc_arena_cap_leaves_a_users_setting_alone(monkeypatch):
    from pipelines.options import _limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert _limit_malloc_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert _limit_malloc_arenas() is True  # glibc here: mallopt accepts M_ARENA_MAX


def test_explicit_running_mode_flags_win_over_workers():
    from apache_beam.options.pipeline_options import DirectOptions

    from pipelines.options import pipeline_options

    direct = pipeline_options(["--direct_running_mode=multi_processing", "--direct_num_workers=1"], workers=1).view_as(DirectOptions)
    assert (direct.direct_running_mode, direct.direct_num_workers) == ("multi_processing", 1)
    direct = pipeline_options([], workers=1).view_as(DirectOptions)
    assert (direct.direct_running_mode, direct.direct_num_workers) == ("in_memory", 1)

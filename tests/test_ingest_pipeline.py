"""The ingestion job end to end on the local runner."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import pathlib
import shutil

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.ingest import run_ingest
from tests.conftest import SAMPLES, TESTDATA
from transforms.errors import ConfigError, SourceError
from transforms.ingest import IngestConfig, IngestFiles
from transforms.records import PRODUCT_SCHEMA, USER_EVENT_SCHEMA, Product, UserEvent, from_arrow

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
SAMPLE = SAMPLES / "retail" / "online_retail_sample.csv"
DATA = TESTDATA / "ingest"


def read_output(out: pathlib.Path, name: str) -> pa.Table:
    files = sorted((out / name).glob("*.parquet"))
    assert files, f"no files in {out / name}"
    return pa.concat_tables([pq.read_table(f) for f in files])


def digest(folder: pathlib.Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.parquet"))}


def conserved(summary: dict) -> bool:
    return summary["read"] == sum(summary["outputs"].values()) + summary["dead_letter"] + summary["duplicates"]


def test_online_retail_sample(tmp_path):
    out = tmp_path / "out"
    summary = run_ingest([str(SAMPLE)], str(out), format="online-retail", now=NOW, partitions=3, chunk_mb=0.05)
    assert summary["read"] == 4000 and conserved(summary)
    stages = summary["conservation"]["stages"]  # every hand-off between stages balances
    assert stages["staged_rows"] == stages["unstaged_rows"] == summary["read"] - summary["dead_letter"]
    assert stages["staged_slices"] == stages["unstaged_slices"] > 3
    assert summary["conservation"]["lost_at"] == [] and summary["conservation"]["ok"]
    assert json.loads((out / "summary.json").read_text())["outputs"] == summary["outputs"]
    events = read_output(out, "events")
    assert events.schema.equals(USER_EVENT_SCHEMA)
    assert events.num_rows == summary["records"]["events"]
    # one event per purchase invoice, and each invoice exactly once across shards
    ids = events["purchaseTransaction"].combine_chunks().field("id").to_pylist()
    assert len(ids) == len(set(ids))
    products = from_arrow(read_output(out, "products"), Product)
    assert len(products) == summary["records"]["products"]
    assert all(p.title for p in products)
    dead = read_output(out, "dead_letter")
    assert dead.num_rows == summary["dead_letter"]
    assert set(dead["reason"].to_pylist()) <= set(summary["reasons"])
    assert not list(out.glob("_staging*")), "staging must be cleaned up"


def test_rerun_is_identical_and_chunking_does_not_matter(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    s1 = run_ingest([str(SAMPLE)], str(a), format="online-retail", now=NOW, partitions=2, chunk_mb=0.03)
    first = digest(a)
    s2 = run_ingest([str(SAMPLE)], str(a), format="online-retail", now=NOW, partitions=2, chunk_mb=0.03)
    assert digest(a) == first  # a re-run replaces the output with identical bytes
    s3 = run_ingest([str(SAMPLE)], str(b), format="online-retail", now=NOW, partitions=2, chunk_mb=8)
    for name in ("events", "cancellations", "products"):
        assert read_output(a, name).equals(read_output(b, name)), name
    assert s1["outputs"] == s2["outputs"] == s3["outputs"]


def test_gzip_and_glob_inputs(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    data = SAMPLE.read_bytes()
    (src / "part1.csv.gz").write_bytes(gzip.compress(data))
    shutil.copy(DATA / "bad_and_good.csv", src / "part2.csv")
    summary = run_ingest([str(src / "*")], str(tmp_path / "out"), format="online-retail", now=NOW)
    assert summary["read"] == 4000 + 18 and conserved(summary)
    assert summary["reasons"]["MALFORMED_ROW"] == 2


def test_bad_rows_are_dead_letters_with_reasons(tmp_path):
    out = tmp_path / "out"
    summary = run_ingest([str(DATA / "bad_and_good.csv")], str(out), format="online-retail", now=NOW)
    assert summary["read"] == 18 and summary["dead_letter"] == 11 and summary["duplicates"] == 1
    assert summary["outputs"] == {"cancellations": 1, "events": 5}
    assert summary["records"] == {"cancellations": 1, "events": 3, "products": 3}
    assert summary["flags"]["non_product"] == 1
    dead = read_output(out, "dead_letter").to_pylist()
    assert all(d["source_file"].endswith("bad_and_good.csv") and d["raw"] and d["detail"] for d in dead)


def test_retail_json_products_latest_wins(tmp_path):
    out = tmp_path / "out"
    summary = run_ingest([str(DATA / "catalog.jsonl")], str(out), format="retail-json", kind="products", currency="EUR", now=NOW, retail_json=True)
    assert summary["read"] == 10 and conserved(summary)
    assert summary["outputs"] == {"products": 2} and summary["duplicates"] == 1 and summary["dead_letter"] == 7
    assert summary["reasons"] == {
        "BAD_AVAILABILITY": 1, "BAD_CURRENCY": 1, "MALFORMED_JSON": 1, "MISSING_FIELD": 1,
        "MISSING_ID": 1, "NEGATIVE_PRICE": 1, "TOO_MANY_VALUES": 1,
    }
    products = {p.id: p for p in from_arrow(read_output(out, "products"), Product)}
    assert products["sku-1"].title == "Oat drink 1 litre" and products["sku-1"].priceInfo.price == 2.75
    assert products["sku-2"].priceInfo.currencyCode == "EUR"
    assert products["sku-2"].attributes["imputed_fields"].text == ("priceInfo.currencyCode", "availability")
    # the Retail API import file carries the same products in its JSON shape
    lines = [json.loads(l) for f in sorted((out / "products_retail_json").glob("*.jsonl")) for l in f.read_text().splitlines()]
    assert sorted(l["id"] for l in lines) == ["sku-1", "sku-2"]
    assert {l["id"]: l["priceInfo"] for l in lines}["sku-1"] == {"price": 2.75, "currencyCode": "EUR"}


def test_retail_json_events_dedupe_and_unjoined(tmp_path):
    catalog = tmp_path / "catalog"
    run_ingest([str(DATA / "catalog.jsonl")], str(catalog), format="retail-json", kind="products", currency="EUR", now=NOW)
    out = tmp_path / "out"
    summary = run_ingest([str(DATA / "events.jsonl")], str(out), format="retail-json", kind="events", now=NOW, catalog=str(catalog))
    assert summary["read"] == 11 and conserved(summary)
    assert summary["outputs"] == {"events": 4} and summary["duplicates"] == 1
    assert summary["reasons"] == {
        "BAD_QUANTITY": 1, "BAD_TIMESTAMP": 1, "MISSING_ID": 1, "MISSING_TRANSACTION": 1,
        "TIMESTAMP_OUT_OF_RANGE": 1, "UNKNOWN_EVENT_TYPE": 1,
    }
    assert summary["unjoined_events"] == 1  # the purchase that names sku-9
    events = from_arrow(read_output(out, "events"), UserEvent)
    search = [e for e in events if e.eventType == "search"][0]
    assert search.eventTime == dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.timezone.utc)  # +02:00 normalized to UTC


def test_csv_with_mapping(tmp_path):
    out = tmp_path / "out"
    summary = run_ingest(
        [str(DATA / "products.csv")], str(out), format="csv", kind="products", now=NOW, currency="SEK",
        mapping="id=sku,title=name,priceInfo.price=price,categories=category,images=image",
    )
    assert summary["read"] == 5 and conserved(summary)
    assert summary["outputs"] == {"products": 2} and summary["reasons"] == {"MALFORMED_ROW": 1, "MISSING_FIELD": 1}
    products = {p.id: p for p in from_arrow(read_output(out, "products"), Product)}
    assert products["A1"].title == "Tea, green (new)" and products["A1"].categories == ("Drinks", "Tea")
    assert products["A1"].images[0].uri == "img/a1.jpg" and products["A1"].priceInfo.currencyCode == "SEK"


def test_parquet_with_mapping(tmp_path):
    src = tmp_path / "events.parquet"
    pq.write_table(pa.table({
        "user": ["u1", "u2", ""], "ts": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"],
        "item": ["p1", "p2", "p3"], "type": ["detail-page-view", "detail-page-view", "detail-page-view"],
    }), src)
    summary = run_ingest([str(src)], str(tmp_path / "out"), format="parquet", kind="events", now=NOW,
                         mapping="visitorId=user,eventTime=ts,productDetails.product.id=item,eventType=type")
    assert summary["outputs"] == {"events": 2} and summary["reasons"] == {"MISSING_ID": 1}


def test_empty_file_and_bad_options(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    summary = run_ingest([str(empty)], str(tmp_path / "out"), format="online-retail", now=NOW)
    assert summary["read"] == 0 and conserved(summary)
    assert read_output(tmp_path / "out", "events").num_rows == 0
    with pytest.raises(SourceError, match="no input files match"):
        run_ingest([str(tmp_path / "nope-*.csv")], str(tmp_path / "o2"), format="online-retail")
    with pytest.raises(ConfigError, match="ISO 4217"):
        IngestConfig(format="online-retail", out="x", currency="POUNDS")
    with pytest.raises(ConfigError, match="needs a column mapping"):
        IngestConfig(format="csv", out="x")


def test_ingest_transform_with_test_pipeline(tmp_path, local_runner):
    cfg = IngestConfig(format="online-retail", out=str(tmp_path / "out"), partitions=2, now=NOW, run_id="t")
    with TestPipeline(runner=local_runner) as p:
        counts = (p | IngestFiles([str(DATA / "bad_and_good.csv")], cfg))["counts"]
        assert_that(
            counts | beam.Map(lambda c: (c["read"], c["dead_letter"], c["duplicates"], c["outputs"])),
            equal_to([(18, 11, 1, {"events": 5, "cancellations": 1})]),
        )


def test_bigquery_sink_graph_has_explicit_schemas(tmp_path):
    """The BigQuery branch is built (not run: no cloud account here)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.ingest import BIGQUERY_TABLES, build_ingest
    from transforms.records import bigquery_rows, bigquery_schema

    cfg = IngestConfig(format="online-retail", out=str(tmp_path), now=NOW, emit_tables=True)
    p = beam.Pipeline(options=PipelineOptions(["--project", "demo-project", "--temp_location", "gs://demo-bucket/tmp"]))
    build_ingest(p, [str(SAMPLE)], cfg, bigquery_dataset="demo-project:aisle_dev")
    labels = {t.full_label for t in p.transforms_stack[0].parts for t in [t]}
    for name in ("products", "events", "cancellations", "dead_letter"):
        assert f"WriteToBigQuery_{name}" in labels
    writes = {}

    def visit(node):
        if type(node.transform).__name__ == "WriteToBigQuery":
            writes[node.transform.table_reference.tableId if node.transform.table_reference else str(node.transform._table)] = node.transform.schema
        for part in node.parts:
            visit(part)

    visit(p.transforms_stack[0])
    assert set(writes) == {"products", "user_events", "cancellations", "dead_letters"}
    assert writes["user_events"] == bigquery_schema(UserEvent)
    fields = {f["name"]: f for f in writes["products"]["fields"]}
    assert fields["attributes"]["mode"] == "REPEATED" and [f["name"] for f in fields["attributes"]["fields"]] == ["key", "value"]
    # rows the sink would load match that schema's shape
    from transforms import online_retail as ort

    parsed = ort.parse_chunk(SAMPLE.read_bytes(), source_file="s", base_offset=0, now=NOW, first_chunk=True)
    row = next(iter(bigquery_rows(ort.build_events(parsed.lines, currency="GBP")["events"])))
    assert row["attributes"] == [{"key": "country", "value": {"text": ["United Kingdom"], "numbers": []}}]
    assert row["eventTime"].endswith("Z")
    assert set(BIGQUERY_TABLES) == {"products", "events", "cancellations", "dead_letter"}


def test_corrupt_gzip_is_one_dead_letter_not_a_failed_job(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = gzip.compress(SAMPLE.read_bytes())
    (src / "a.csv.gz").write_bytes(good)
    (src / "b.csv.gz").write_bytes(good[: len(good) // 2])  # truncated in transit
    summary = run_ingest([str(src)], str(tmp_path / "out"), format="online-retail", now=NOW)
    assert conserved(summary) and summary["read"] == 4000 + 1
    assert summary["reasons"]["UNREADABLE_FILE"] == 1
    dead = [d for d in read_output(tmp_path / "out", "dead_letter").to_pylist() if d["reason"] == "UNREADABLE_FILE"]
    assert dead[0]["source_file"].endswith("b.csv.gz") and "gzip" in dead[0]["detail"]


def test_local_run_never_tries_prism(tmp_path, caplog):
    """Beam's DirectRunner would try to download the Prism runner; aisle's local runs never do."""
    import logging

    caplog.set_level(logging.INFO)
    summary = run_ingest([str(DATA / "bad_and_good.csv")], str(tmp_path / "out"), format="online-retail", now=NOW, beam_args=["--runner", "DirectRunner"])
    assert summary["runner"] == "FnApiRunner"
    assert not [r for r in caplog.records if "prism" in r.getMessage().lower()]


def test_huge_json_record_is_refused_unparsed():
    from transforms.retail_json import iter_jsonl

    big = b'{"id": "x", "title": "' + b"a" * 2_000_000 + b'"}'
    ((offset, raw, obj),) = list(iter_jsonl(b"\n" + big + b"\n", 100))
    assert offset == 101 and obj.reason == "RECORD_TOO_LARGE" and len(raw) <= 200


def test_a_staged_slice_that_changed_under_the_job_is_an_error_naming_it(tmp_path):
    from transforms.errors import StagingError
    from transforms.ingest import _read_staged

    path = tmp_path / "_shuffle" / "00001" / "00000-000000000000.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"invoice": ["1", "2", "3"]}), path)
    assert _read_staged([(str(path), 3)]).num_rows == 3
    with pytest.raises(StagingError, match=r"00000-000000000000\.parquet holds 3 rows; its writer wrote 4"):
        _read_staged([(str(path), 4)])


def test_summary_names_the_stage_that_lost_rows():
    from pipelines.summary import ingest_summary

    def summary(stages, outputs):
        counts = {"read": 100, "dead_letter": 10, "duplicates": 5, "outputs": {"events": outputs}, "stages": stages}
        return ingest_summary(counts, job="ingest", inputs=[], out="x", timings={})["conservation"]

    balanced = {"staged_rows": 90, "staged_slices": 7, "unstaged_rows": 90, "unstaged_slices": 7}
    assert summary(balanced, 85) == {"ok": True, "read": 100, "accounted": 100, "stages": balanced, "lost_at": []}
    lost_slice = {**balanced, "unstaged_rows": 80, "unstaged_slices": 6}
    cons = summary(lost_slice, 75)
    assert not cons["ok"] and cons["lost_at"] == [
        "staging -> build (slices): 7 in, 6 out",
        "staging -> build (rows): 90 in, 80 out",
    ]
    cons = summary(balanced, 84)  # the build step's counts came up short
    assert not cons["ok"] and cons["lost_at"] == ["build -> outputs + duplicates (rows): 90 in, 89 out"]


def test_auto_worker_mode_runs_processes_from_the_size_threshold_on(tmp_path, monkeypatch):
    import pipelines.ingest as ingest

    auto = {"format": "online-retail", "now": NOW, "partitions": 2, "workers": 2, "worker_mode": "auto"}
    small = run_ingest([str(SAMPLE)], str(tmp_path / "threads"), **auto)
    assert small["worker_mode"] == "threads"  # the sample is far under PROCESS_BYTES
    monkeypatch.setattr(ingest, "PROCESS_BYTES", SAMPLE.stat().st_size)
    big = run_ingest([str(SAMPLE)], str(tmp_path / "processes"), **auto)
    assert big["worker_mode"] == "processes"
    one = run_ingest([str(SAMPLE)], str(tmp_path / "one"), format="online-retail", now=NOW, partitions=2, workers=1)
    assert one["worker_mode"] is None  # in-process: no workers to run
    default = run_ingest([str(SAMPLE)], str(tmp_path / "default"), format="online-retail", now=NOW, partitions=2, workers=2)
    assert default["worker_mode"] == "processes"  # auto is the default (its threshold is patched down here)
    # the same records whichever way the workers ran
    for name in ("events", "products"):
        rows = [sorted(json.dumps(r, sort_keys=True, default=str) for r in pq.read_table(tmp_path / run / name).to_pylist())
                for run in ("threads", "processes")]
        assert rows[0] and rows[0] == rows[1]
    assert small["records"] == big["records"] == one["records"]

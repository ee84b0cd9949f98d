"""The catalog reader that both halves of ``aisle enrich`` share: every record a Product or a DeadLetter."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import transforms.catalog as catalog
from transforms.catalog import read_catalog_file
from transforms.records import DeadLetter, Product
from transforms.validation import REASONS


def _summary(records):
    return [r.id if isinstance(r, Product) else (r.reason, r.source_offset) for r in records]


LINES = [
    b'{"id": "p1", "title": "Tea", "images": [{"uri": "a.png"}]}\n',
    b"\n",
    b'{"id": "p2", "title": "Caf\xe9"}\n',  # Latin-1
    b'{"id": "p3", "title": \n',  # cut off
    b'["p4"]\n',  # JSON, not an object
    b'{"title": "no id"}\n',
    b'{"id": "p5", "title": "Ok", "images": "x.png"}\n',  # images must be a list
    b'{"id": "p6", "title": "Last, no newline"}',
]


def test_json_lines_every_record_a_product_or_a_dead_letter_at_its_byte_offset(tmp_path):
    path = tmp_path / "catalog.jsonl"
    path.write_bytes(b"".join(LINES))
    offsets = [sum(len(x) for x in LINES[:i]) for i in range(len(LINES))]
    records = list(read_catalog_file(str(path)))
    assert _summary(records) == [
        "p1",
        ("ENCODING_ERROR", offsets[2]),
        ("MALFORMED_JSON", offsets[3]),
        ("MALFORMED_JSON", offsets[4]),
        ("MISSING_ID", offsets[5]),
        ("BAD_TYPE", offsets[6]),
        "p6",
    ]
    for dead in (r for r in records if isinstance(r, DeadLetter)):
        assert dead.reason in REASONS and str(path) in dead.detail and dead.source_file == str(path)
        assert dead.source_format == "catalog-jsonl"
    assert records[0].images[0].uri == "a.png"
    latin = records[1]
    assert "Caf\ufffd" in latin.raw  # the raw line is kept, undecodable bytes replaced


def test_gzip_and_an_over_long_line(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "MAX_LINE_BYTES", 64)
    path = tmp_path / "catalog.jsonl.gz"
    long_line = json.dumps({"id": "long", "title": "x" * 500}).encode() + b"\n"
    with gzip.open(path, "wb") as f:
        f.write(LINES[0] + long_line + LINES[7])
    expected = ["p1", ("RECORD_TOO_LARGE", len(LINES[0])), "p6"]
    # gzip files are read whole lines at a time (Beam's CompressedFile), plain files in bounded reads: same records
    assert _summary(read_catalog_file(str(path))) == expected
    plain = tmp_path / "catalog.jsonl"
    plain.write_bytes(LINES[0] + long_line + LINES[7])
    assert _summary(read_catalog_file(str(plain))) == expected


def test_parquet_rows_without_id_and_unreadable_files(tmp_path):
    table = pa.table({"id": ["a", None, " ", "d"], "title": ["A", "B", "C", "D"],
                      "images": [[{"uri": "a.png"}], None, [], [{"uri": "d.png"}]]})
    pq.write_table(table, tmp_path / "p.parquet")
    records = list(read_catalog_file(str(tmp_path / "p.parquet"), columns=("id", "images")))
    assert _summary(records) == [("MISSING_ID", 1), ("MISSING_ID", 2), "a", "d"]
    assert records[2].title == "A" and records[3].images[0].uri == "d.png"

    (tmp_path / "empty.parquet").write_bytes(b"")
    data = (tmp_path / "p.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    pq.write_table(pa.table({"sku": ["x"]}), tmp_path / "foreign.parquet")
    for name in ("empty", "cut", "foreign"):
        (dead,) = read_catalog_file(str(tmp_path / f"{name}.parquet"))
        assert dead.reason == "UNREADABLE_FILE" and dead.detail, name


def test_enrich_and_ner_halves_read_the_same_products(tmp_path):
    from pipelines.enrich import catalog_entries
    from transforms.ner_enrich import read_products

    path = tmp_path / "catalog.jsonl"
    path.write_bytes(b"".join(LINES))
    entries = list(catalog_entries(str(path), str(tmp_path)))
    assert [type(e).__name__ for e in entries] == ["ImageRef"] + ["DeadLetter"] * 5
    assert entries[0].uri == str(tmp_path / "a.png")
    assert [p.id for p in read_products(str(path))] == ["p1", "p6"]


@pytest.mark.parametrize("raw", [b"", b"\n\n  \n"])
def test_empty_catalogs_have_no_records(tmp_path, raw):
    path = tmp_path / "catalog.jsonl"
    path.write_bytes(raw)
    assert list(read_catalog_file(str(path))) == []

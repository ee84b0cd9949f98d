"""Every job over the bad-input corpus (tests/badinput): no crash, every record accounted for, clear reasons.

Per input file: the job's summary conserves records (read = written +
dead letters + duplicates), the dead letters carry exactly the expected
reason codes, and every reason code has a sentence a person understands.
The expected outcomes below are also the corpus counts quoted in
tests/badinput/README.md (``python -m tests.test_bad_input`` prints them).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import pathlib
import shutil
import struct
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT
from transforms.validation import REASONS

CORPUS = ROOT / "tests" / "badinput"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
CSV_MAPPING = "id=sku,title=name,priceInfo.price=price,categories=category,images=image"
PARQUET_MAPPING = "id=sku,title=name,priceInfo.price=price"

ONLINE_RETAIL = {"format": "online-retail"}
PRODUCTS_JSON = {"format": "retail-json", "kind": "products"}
EVENTS_JSON = {"format": "retail-json", "kind": "events"}
CSV = {"format": "csv", "kind": "products", "mapping": CSV_MAPPING}
PARQUET = {"format": "parquet", "kind": "products", "mapping": PARQUET_MAPPING}

# file -> (ingest options, records read, records written, duplicates, dead letters by reason)
INGEST = {
    "ingest/online_retail/rows.csv": (ONLINE_RETAIL, 27, 3, 1, {
        "MALFORMED_ROW": 4, "MISSING_ID": 2, "ID_TOO_LONG": 1, "FIELD_TOO_LONG": 1, "BAD_QUANTITY": 2, "BAD_PRICE": 1,
        "BAD_TIMESTAMP": 2, "TIMESTAMP_OUT_OF_RANGE": 2, "BAD_CUSTOMER_ID": 1, "ZERO_QUANTITY": 1, "NEGATIVE_QUANTITY": 1,
        "POSITIVE_CANCELLATION": 1, "QUANTITY_OUT_OF_RANGE": 1, "NEGATIVE_PRICE": 1, "ZERO_PRICE": 1, "ENCODING_ERROR": 1,
    }),
    "ingest/online_retail/crlf_bom.csv": (ONLINE_RETAIL, 2, 1, 0, {"MALFORMED_ROW": 1}),
    "ingest/online_retail/header_only.csv": (ONLINE_RETAIL, 0, 0, 0, {}),
    "ingest/online_retail/empty.csv": (ONLINE_RETAIL, 0, 0, 0, {}),
    "ingest/retail_json/products.jsonl": (PRODUCTS_JSON, 23, 3, 1, {
        "MALFORMED_JSON": 3, "MISSING_ID": 2, "MISSING_FIELD": 1, "ID_TOO_LONG": 1, "FIELD_TOO_LONG": 2, "BAD_TYPE": 3,
        "BAD_PRICE": 1, "NEGATIVE_PRICE": 1, "BAD_CURRENCY": 1, "BAD_AVAILABILITY": 1, "TOO_MANY_VALUES": 1,
        "BAD_ATTRIBUTE": 1, "ENCODING_ERROR": 1,
    }),
    "ingest/retail_json/events.jsonl": (EVENTS_JSON, 24, 3, 1, {
        "MALFORMED_JSON": 2, "MISSING_ID": 2, "TIMESTAMP_OUT_OF_RANGE": 2, "BAD_TIMESTAMP": 2, "UNKNOWN_EVENT_TYPE": 2,
        "MISSING_PRODUCT_DETAILS": 1, "BAD_QUANTITY": 2, "ZERO_QUANTITY": 1, "NEGATIVE_QUANTITY": 1,
        "QUANTITY_OUT_OF_RANGE": 1, "MISSING_TRANSACTION": 1, "BAD_CURRENCY": 1, "BAD_TYPE": 1, "ID_TOO_LONG": 1,
    }),
    "ingest/retail_json/surrogates.jsonl": (PRODUCTS_JSON, 3, 2, 0, {"ENCODING_ERROR": 1}),
    "ingest/retail_json/truncated.jsonl.gz": (PRODUCTS_JSON, 1, 0, 0, {"UNREADABLE_FILE": 1}),
    "ingest/retail_json/blank_lines.jsonl": (EVENTS_JSON, 0, 0, 0, {}),
    "ingest/retail_json/empty.jsonl": (EVENTS_JSON, 0, 0, 0, {}),
    "ingest/csv/products.csv": (CSV, 12, 2, 1, {
        "MALFORMED_ROW": 3, "MISSING_ID": 1, "MISSING_FIELD": 1, "BAD_PRICE": 1, "NEGATIVE_PRICE": 1, "FIELD_TOO_LONG": 1,
        "ENCODING_ERROR": 1,
    }),
    "ingest/csv/header_only.csv": (CSV, 0, 0, 0, {}),
    "ingest/parquet/wrong_types.parquet": (PARQUET, 5, 1, 0, {"MISSING_ID": 1, "MISSING_FIELD": 1, "BAD_PRICE": 1, "NEGATIVE_PRICE": 1}),
    "ingest/parquet/missing_column.parquet": (PARQUET, 1, 0, 0, {"MAPPING_ERROR": 1}),
    "ingest/parquet/truncated.parquet": (PARQUET, 1, 0, 0, {"UNREADABLE_FILE": 1}),
    "ingest/parquet/empty.parquet": (PARQUET, 1, 0, 0, {"UNREADABLE_FILE": 1}),
}
# enrich: image (relative to the catalog) -> dead-letter reason, or None for an image that is read
ENRICH_IMAGES = {
    "images/ok.png": None,
    "images/thin.png": None,  # 1 x 3000 pixels: detected whole, not as 2,999 upscaled tiles
    "images/corrupt.jpg": "IMAGE_DECODE_ERROR",
    "images/truncated.png": "IMAGE_DECODE_ERROR",
    "images/truncated.jpg": "IMAGE_DECODE_ERROR",
    "images/zero.png": "IMAGE_DECODE_ERROR",
    "images/text.jpg": "IMAGE_DECODE_ERROR",
    "images/does-not-exist.png": "IMAGE_NOT_FOUND",
    "generated/bomb.png": "IMAGE_TOO_LARGE",
    "generated/big.bmp": "IMAGE_TOO_LARGE",
}
ENRICH_PRODUCTS = 13
ENRICH_NER_DEAD = {"NER_EMPTY_TEXT": 1}  # the sliver's image has no text: its empty OCR text is dead-lettered
ENRICH_MAX_IMAGE_BYTES = 300_000

# recommend: visitor -> fallback of its recommended-for-you row; None: a model-scored row; "absent": no row
RECOMMEND_VISITORS = {
    "v-unknown": "popularity", "v-mixed": None, "v-noqty": None, "v-notx": None, "v-split": None, "v-space": None,
    "v-dup": None, "v-empty": "absent", "v-post": "absent", "v-zero": "absent", "v-neg": "absent", "v-refund": "absent",
    "v-view": "absent",
}
RECOMMEND_COLD_PRODUCTS = {"99999", "99998", "77777", "88888", "88889"}


def _dead_letters(out: pathlib.Path, name: str) -> pa.Table:
    files = sorted((out / name).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def _ingest_params():
    for rel in INGEST:
        yield pytest.param(rel, id=rel.removeprefix("ingest/"))


@pytest.mark.parametrize("rel", list(_ingest_params()))
def test_ingest_bad_file(rel, tmp_path):
    from pipelines.ingest import run_ingest

    options, read, written, duplicates, reasons = INGEST[rel]
    src = CORPUS / rel
    out = tmp_path / "out"
    summary = run_ingest([str(src)], str(out), now=NOW, currency="EUR", partitions=2, **options)
    assert summary["read"] == read
    assert sum(summary["outputs"].values()) == written
    assert summary["duplicates"] == duplicates
    assert summary["read"] == sum(summary["outputs"].values()) + summary["dead_letter"] + summary["duplicates"]
    assert summary["conservation"]["ok"]
    assert summary["reasons"] == reasons
    dead = _dead_letters(out, "dead_letter")
    assert dead.num_rows == sum(reasons.values())
    assert dict(collections.Counter(dead["reason"].to_pylist())) == reasons
    for row in dead.to_pylist():
        assert row["reason"] in REASONS, row
        assert row["detail"].strip() and row["source_file"].endswith(src.name), row


def test_ingest_record_over_the_size_limit(tmp_path):
    """A single 2 MB line is refused unparsed (RECORD_TOO_LARGE); its neighbours are kept."""
    from pipelines.ingest import run_ingest

    src = tmp_path / "huge.jsonl"
    src.write_text(json.dumps({"id": "ok-1", "title": "fine"}) + "\n"
                   + json.dumps({"id": "huge", "title": "t", "description": "d" * (2 << 20)}) + "\n"
                   + json.dumps({"id": "ok-2", "title": "fine"}) + "\n")
    summary = run_ingest([str(src)], str(tmp_path / "out"), now=NOW, **PRODUCTS_JSON)
    assert (summary["read"], summary["outputs"], summary["reasons"]) == (3, {"products": 2}, {"RECORD_TOO_LARGE": 1})
    dead = _dead_letters(tmp_path / "out", "dead_letter").to_pylist()
    assert len(dead[0]["raw"]) <= 1000 and "limit" in dead[0]["detail"]


def test_parquet_reader_turns_bad_files_into_reasons():
    """The reader the Parquet ingest needs (transforms/ingest.py): a clear SourceError or per-row MAPPING_ERROR."""
    from transforms.errors import SourceError
    from transforms.retail_json import ColumnMapping, iter_parquet
    from transforms.validation import Invalid

    mapping = ColumnMapping.parse(PARQUET_MAPPING)
    for name in ("truncated.parquet", "empty.parquet"):
        with pytest.raises(SourceError, match=rf"{name} is not a readable Parquet file"):
            list(iter_parquet((CORPUS / "ingest/parquet" / name).read_bytes(), mapping, uri=name))
    rows = list(iter_parquet((CORPUS / "ingest/parquet/missing_column.parquet").read_bytes(), mapping))
    assert len(rows) == 1 and isinstance(rows[0][2], Invalid) and rows[0][2].reason == "MAPPING_ERROR"
    assert "'name'" in str(rows[0][2])
    rows = list(iter_parquet((CORPUS / "ingest/parquet/wrong_types.parquet").read_bytes(), mapping))
    assert [r[2].get("id") for r in rows] == [1, 2, 3, None, 5]


# ---------------------------------------------------------------------------
# enrich
# ---------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in a few dozen bytes (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def ner_base(tmp_path_factory):
    """The tiny test NER model (random weights: the test is about inputs, not accuracy)."""
    import torch

    from tests.ner_support import build_tiny_base

    torch.manual_seed(0)
    return build_tiny_base(tmp_path_factory.mktemp("ner") / "base")


@pytest.fixture(scope="module")
def enrich_catalog(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("enrich") / "catalog"
    shutil.copytree(CORPUS / "enrich", root)
    (root / "generated").mkdir()
    (root / "generated" / "bomb.png").write_bytes(png_header(50_000, 50_000))  # 2.5 gigapixels in 74 bytes
    Image.new("RGB", (400, 400), "white").save(root / "generated" / "big.bmp")  # 480 kB, over the byte limit
    return root


@pytest.fixture(scope="module")
def enriched(enrich_catalog, ner_base, tmp_path_factory):
    from pipelines.enrich import run_enrich

    out = tmp_path_factory.mktemp("enrich_out")
    summary = run_enrich(str(enrich_catalog / "catalog.jsonl"), str(out), threads=1, batch_size=4,
                         max_image_bytes=ENRICH_MAX_IMAGE_BYTES, ner_model=ner_base)
    return out, summary


def test_enrich_every_image_accounted_for(enriched, enrich_catalog):
    from transforms.inference.ocr import REASONS as OCR_REASONS

    out, summary = enriched
    expected = collections.Counter(r for r in ENRICH_IMAGES.values() if r)
    assert summary["read"] == len(ENRICH_IMAGES)
    assert summary["outputs"] == {"ocr_images": sum(r is None for r in ENRICH_IMAGES.values())}
    assert summary["read"] == summary["outputs"]["ocr_images"] + summary["dead_letter"]
    assert summary["conservation"]["ok"]
    assert summary["reasons"] == dict(expected)
    dead = _dead_letters(out, "dead_letter_ocr").to_pylist()
    by_image = {pathlib.Path(r["source_file"]).relative_to(enrich_catalog).as_posix(): r for r in dead}
    assert {k: r["reason"] for k, r in by_image.items()} == {k: v for k, v in ENRICH_IMAGES.items() if v}
    for row in dead:
        assert row["reason"] in OCR_REASONS and row["detail"].strip()
    assert "empty (0 bytes)" in by_image["images/zero.png"]["detail"]
    assert "decompression bomb" in by_image["generated/bomb.png"]["detail"]
    assert str(ENRICH_MAX_IMAGE_BYTES) in by_image["generated/big.bmp"]["detail"]


def test_enrich_ner_takes_every_product_and_long_text_whole(enriched, enrich_catalog):
    out, summary = enriched
    products = {json.loads(line)["id"]: json.loads(line) for line in (enrich_catalog / "catalog.jsonl").read_text().splitlines()}
    assert len(products) == ENRICH_PRODUCTS
    enriched_ids = [r["id"] for r in pq.read_table(out / "catalog_enriched").to_pylist()]
    assert sorted(enriched_ids) == sorted(products)  # every product once, with or without attributes
    # nothing over max_chars (long texts are windowed); the one NER dead letter is the sliver's image, which has no
    # text: an image without text gives an empty OCR text, which transforms/ner_enrich.py dead-letters
    from transforms.inference.ner import REASONS as NER_REASONS

    dead = pq.read_table(out / "dead_letter_ner").to_pylist()
    assert [(d["source_file"], d["source_format"], d["reason"]) for d in dead] == [("product:sliver", "ner:ocr", "NER_EMPTY_TEXT")]
    assert dict(collections.Counter(d["reason"] for d in dead)) == ENRICH_NER_DEAD
    assert all(d["reason"] in NER_REASONS and d["detail"] for d in dead)
    entities = pq.read_table(out / "entities").to_pylist()
    assert entities
    for e in entities:  # offsets point into the text the entity came from
        if e["source"] in ("title", "description"):
            text = products[e["product_id"]][e["source"]].strip()
            assert text[e["start"]:e["end"]] == e["text"], e


ENRICH_CATALOG_DEAD = {"ENCODING_ERROR": 1, "MISSING_ID": 1}


def test_enrich_catalog_line_that_is_not_utf8(enrich_catalog, tmp_path):
    (dead,) = _enrich_bad_catalog(enrich_catalog / "catalog_not_utf8.jsonl", tmp_path)
    assert dead["reason"] == "ENCODING_ERROR" and dead["source_offset"] == 0


def test_enrich_catalog_product_without_id(enrich_catalog, tmp_path):
    (dead,) = _enrich_bad_catalog(enrich_catalog / "catalog_missing_id.jsonl", tmp_path)
    assert dead["reason"] == "MISSING_ID"



def _enrich_bad_catalog(catalog: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Either a clear AisleError naming the file, or a completed run that dead-letters the line."""
    from pipelines.enrich import run_enrich
    from transforms.errors import AisleError

    try:
        summary = run_enrich(str(catalog), str(tmp_path / "out"), threads=1)
    except AisleError as exc:
        assert catalog.name in str(exc)
        return
    assert summary["dead_letter"] >= 1 and summary["conservation"]["ok"]
    dead = _dead_letters(tmp_path / "out", "dead_letter_catalog").to_pylist()
    assert [d["source_file"] for d in dead] == [str(catalog)] and all(d["reason"] in REASONS and d["detail"] for d in dead)
    return dead


# ---------------------------------------------------------------------------
# recommend
# ---------------------------------------------------------------------------


def _read_rows(folder: pathlib.Path) -> list[dict]:
    return [r for f in sorted(folder.glob("part*.parquet")) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def recommended(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from components.recommend_model import TrainConfig, export_model, train_item_model
    from pipelines.recommend import run
    from tests.recommend_toy import toy_baskets, toy_times
    from transforms.records import PRODUCT_SCHEMA, USER_EVENT_SCHEMA, ProductDetail, ProductRef, PurchaseTransaction, UserEvent, to_arrow
    from transforms.recommend_vocab import ItemVocab

    root = tmp_path_factory.mktemp("recommend")
    baskets = toy_baskets(80)
    good = [
        UserEvent(eventType="purchase-complete", visitorId=v, eventTime=t,
                  productDetails=tuple(ProductDetail(ProductRef(i), 1) for i in items),
                  purchaseTransaction=PurchaseTransaction(10.0, "GBP", f"t{n}"))
        for n, ((v, items), t) in enumerate(zip(baskets, toy_times(len(baskets))))
    ]
    bad = []
    for line in (CORPUS / "recommend" / "events.jsonl").read_text().splitlines():
        row = json.loads(line)
        row.pop("_case")
        row["eventTime"] = dt.datetime.fromisoformat(row["eventTime"])
        bad.append(row)
    (root / "events").mkdir()
    pq.write_table(pa.concat_tables([to_arrow(good, UserEvent), pa.Table.from_pylist(bad, schema=USER_EVENT_SCHEMA)]),
                   root / "events" / "part-0.parquet")
    catalog = [json.loads(line) for line in (CORPUS / "recommend" / "catalog.jsonl").read_text().splitlines()]
    (root / "products").mkdir()
    pq.write_table(pa.Table.from_pylist(catalog, schema=PRODUCT_SCHEMA), root / "products" / "part-0.parquet")
    vocab = ItemVocab.build([items for _, items in baskets])
    trained = train_item_model([items for _, items in baskets], vocab, TrainConfig(dim=8, epochs=3, batch_size=64, max_query_items=8))
    export_model(trained, str(root / "model"))
    out = root / "out"
    summary = run(events=str(root / "events"), catalog=str(root / "products"), out_dir=str(out), model_dir=str(root / "model"),
                  k=3, echo=lambda *_: None)
    return out, summary, good, bad, catalog


def test_recommend_bad_events_do_not_crash_and_fall_back(recommended):
    out, summary, good, bad, catalog = recommended
    assert summary["dead_letters"] == 0
    visitors = {r["key"]: r for r in _read_rows(out / "recommended_for_you")}
    for visitor, fallback in RECOMMEND_VISITORS.items():
        if fallback == "absent":
            assert visitor not in visitors, visitor
        else:
            assert visitors[visitor]["fallback"] == fallback, visitor
            assert len(visitors[visitor]["results"]) == 3
    assert set(visitors) == {e.visitorId for e in good} | {v for v, f in RECOMMEND_VISITORS.items() if f != "absent"}
    known = {i for e in good for i in (d.product.id for d in e.productDetails)}
    for name in ("similar_items", "frequently_bought_together"):
        rows = _read_rows(out / name)
        keys = [r["key"] for r in rows]
        assert len(keys) == len(set(keys)), name  # one row per product
        assert set(keys) == known | RECOMMEND_COLD_PRODUCTS, name  # the empty catalog id is not a product
        by_key = {r["key"]: r for r in rows}
        for cold in RECOMMEND_COLD_PRODUCTS:
            row = by_key[cold]
            assert row["results"] and cold not in [x["id"] for x in row["results"]], row
            if name == "frequently_bought_together" and cold == "99998":  # bought once, with 10001: co-occurrence
                assert row["fallback"] is None and "10001" in [x["id"] for x in row["results"]], row
            else:
                assert row["fallback"] == "popularity", row


# v-view; v-refund; v-empty; v-post (postage and bank charges only), v-zero, v-neg
RECOMMEND_DROPPED = {"NOT_A_PURCHASE": 1, "REFUND": 1, "EMPTY_BASKET": 1, "NO_PURCHASED_PRODUCT": 3}


def test_recommend_summary_accounts_for_every_event(recommended):
    """Every event read is used in a basket or dropped for a named reason; the corpus says which."""
    from transforms.recommend import DROP_REASONS

    out, summary, good, bad, _ = recommended
    assert summary["read"] == len(good) + len(bad)
    dropped = summary["dropped"]
    assert set(dropped) <= set(DROP_REASONS)
    assert summary["read"] == summary["used"] + sum(dropped.values()) and summary["conservation"]["ok"]
    assert dropped == RECOMMEND_DROPPED
    assert summary["used"] == len(good) + len(bad) - sum(RECOMMEND_DROPPED.values())
    assert json.loads((out / "summary.json").read_text())["dropped"] == dropped


# ---------------------------------------------------------------------------
# reasons and counts
# ---------------------------------------------------------------------------


def all_reasons() -> dict[str, str]:
    """Every dead-letter reason code of every job, with its description."""
    from transforms.inference.ner import REASONS as NER
    from transforms.inference.ocr import REASONS as OCR
    from transforms.inference.recommend import REASONS as RECOMMEND

    merged = {**REASONS, **OCR, **NER, **RECOMMEND}
    assert len(merged) == len(REASONS) + len(OCR) + len(NER) + len(RECOMMEND), "a reason code is defined twice"
    return merged


def test_every_reason_code_has_a_description():
    reasons = all_reasons()
    for code, text in reasons.items():
        assert code.isupper() and " " not in code, code
        assert len(text.split()) >= 4, (code, text)  # a sentence, not a word
    used = {r for *_, rs in INGEST.values() for r in rs} | {r for r in ENRICH_IMAGES.values() if r}
    assert used <= set(reasons)
    # reason codes written anywhere in the jobs' code are described
    import re

    sources = ["transforms/online_retail.py", "transforms/retail_json.py", "transforms/validation.py", "transforms/ingest.py",
               "pipelines/enrich.py", "transforms/ner_enrich.py", "transforms/inference/ocr.py", "pipelines/recommend.py"]
    codes = set()
    for path in sources:
        text = (ROOT / path).read_text()
        codes |= set(re.findall(r"Invalid\(\s*\"([A-Z_]+)\"", text))
        codes |= set(re.findall(r"ImageError\(\s*\"([A-Z_]+)\"", text))
        codes |= set(re.findall(r"\"reason\": \"([A-Z_]+)\"", text))
        codes |= set(re.findall(r"_dead\(ref, \"([A-Z_]+)\"", text))
        codes |= set(re.findall(r"reason\s*=\s*\"([A-Z_]+)\"", text))
        codes |= set(re.findall(r"\(\"([A-Z_]+)\", pc\.", text))
    assert codes and codes <= set(reasons), sorted(codes - set(reasons))


def corpus_counts() -> dict:
    """Files, records and dead letters by reason per job, as the tests above assert them."""
    ingest_reasons: collections.Counter = collections.Counter()
    for *_, reasons in INGEST.values():
        ingest_reasons.update(reasons)
    enrich_reasons = collections.Counter(r for r in ENRICH_IMAGES.values() if r)
    committed = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md")
    return {
        "committed_files": len(committed),
        "ingest": {
            "files": len(INGEST),
            "read": sum(v[1] for v in INGEST.values()),
            "written": sum(v[2] for v in INGEST.values()),
            "duplicates": sum(v[3] for v in INGEST.values()),
            "dead_letters": sum(ingest_reasons.values()),
            "reasons": dict(sorted(ingest_reasons.items())),
        },
        "enrich": {
            "products": ENRICH_PRODUCTS,
            "images": len(ENRICH_IMAGES),
            "images_read": sum(r is None for r in ENRICH_IMAGES.values()),
            "dead_letters": sum(enrich_reasons.values()),
            "reasons": dict(sorted(enrich_reasons.items())),
            "ner_dead_letters": dict(ENRICH_NER_DEAD),
            "catalog_dead_letters": dict(sorted(ENRICH_CATALOG_DEAD.items())),
        },
        "recommend": {
            "bad_events": len((CORPUS / "recommend" / "events.jsonl").read_text().splitlines()),
            "catalog_rows": len((CORPUS / "recommend" / "catalog.jsonl").read_text().splitlines()),
            "visitors_scored": sum(f is None for f in RECOMMEND_VISITORS.values()),
            "visitors_fallback": sum(f == "popularity" for f in RECOMMEND_VISITORS.values()),
            "visitors_without_purchases": sum(f == "absent" for f in RECOMMEND_VISITORS.values()),
            "events_dropped": dict(sorted(RECOMMEND_DROPPED.items())),
            "cold_products": len(RECOMMEND_COLD_PRODUCTS),
        },
    }


def test_readme_lists_every_file_and_the_counts():
    readme = (CORPUS / "README.md").read_text()
    for path in CORPUS.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert f"`{path.relative_to(CORPUS).as_posix()}`" in readme, path
    counts = corpus_counts()
    print(json.dumps(counts, indent=2))
    block = readme.split("```json", 1)[1].split("```", 1)[0]
    assert json.loads(block) == counts, "update the counts in tests/badinput/README.md (python -m tests.test_bad_input)"


if __name__ == "__main__":
    print(json.dumps(corpus_counts(), indent=2))

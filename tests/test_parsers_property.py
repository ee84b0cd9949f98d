"""Property-based tests of every parser: no input crashes it, and every record is accounted for."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import example, given
from hypothesis import strategies as st

from transforms import online_retail as ort
from transforms.retail_json import ColumnMapping, dedupe_records, iter_csv, iter_jsonl, parse_records
from transforms.validation import REASONS

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
FIELD = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["536365", "C536379", "85123A", "POST", "6", "-3", "0", "2.55", "-1.0", "1e3", "2010-12-01 08:26:00",
                     "12/1/2010 8:26", "2999-01-01 00:00:00", "17850.0", "", '"', '""', ",", "United Kingdom"]),
)
ROW = st.lists(FIELD, min_size=0, max_size=10).map(lambda fs: ",".join(fs))
GOOD = st.builds(
    lambda inv, code, qty, price, cust: f"{inv},{code},THING,{qty},2011-01-0{1 + qty % 9} 10:00:00,{price},{cust},United Kingdom",
    st.sampled_from(["1001", "1002", "C1003"]), st.sampled_from(["85123A", "22423", "POST"]),
    st.integers(-5, 50), st.sampled_from(["0.85", "2.55", "0", "-1"]), st.sampled_from(["", "17850.0", "x"]),
)
LINE_ENDINGS = st.sampled_from(["\n", "\r\n"])


@given(st.lists(st.one_of(ROW, GOOD), max_size=40), LINE_ENDINGS, st.binary(max_size=20), st.booleans())
@example(rows=[",,,,,,,\r0"], eol="\n", junk=b"", header=False)  # a bare carriage return once crashed the CSV reader
@example(rows=[",,,,,,,0\",\""], eol="\n", junk=b"", header=False)  # so did a quote inside an unquoted field
def test_online_retail_never_crashes_and_conserves(rows, eol, junk, header):
    text = eol.join((["InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"] if header else []) + rows)
    data = text.encode("utf-8") + junk
    parsed = ort.parse_chunk(data, source_file="f", base_offset=0, now=NOW, first_chunk=True)
    built = ort.build_events(parsed.lines, currency="GBP")
    accounted = parsed.dead.num_rows + built["duplicates"] + sum(built["rows"].values())
    assert accounted == parsed.read
    assert set(parsed.dead["reason"].to_pylist()) <= set(REASONS)
    assert all(parsed.dead["detail"].to_pylist())
    # derived events hold exactly the kept lines
    quantities = sum(abs(q) for q in parsed.lines["quantity"].to_pylist())
    detail_qty = sum(d["quantity"] for t in (built["events"], built["cancellations"]) for e in t.to_pylist() for d in e["productDetails"])
    assert detail_qty == quantities - sum(abs(q) for q in _dropped_quantities(parsed.lines, built["lines"]))


def _dropped_quantities(before, after):
    kept = after["source_offset"].to_pylist()
    return [q for q, o in zip(before["quantity"].to_pylist(), before["source_offset"].to_pylist()) if o not in set(kept)]


JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=10,
)
EVENTISH = st.fixed_dictionaries(
    {},
    optional={
        "eventType": st.sampled_from(["detail-page-view", "add-to-cart", "purchase-complete", "search", "nope", 3]),
        "visitorId": st.one_of(st.text(max_size=4), st.integers(), st.just("x" * 200)),
        "eventTime": st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01", "yesterday", 1.7e9, None, "1900-01-01T00:00:00Z"]),
        "productDetails": st.lists(st.fixed_dictionaries({}, optional={"product": st.one_of(JSON_VALUE, st.fixed_dictionaries({"id": st.text(max_size=4)})), "quantity": JSON_VALUE}), max_size=3),
        "purchaseTransaction": st.one_of(JSON_VALUE, st.fixed_dictionaries({"revenue": JSON_VALUE, "currencyCode": st.sampled_from(["EUR", "XXX", "eur", None])})),
        "attributes": JSON_VALUE,
    },
)
PRODUCTISH = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=4), st.integers(), st.none()),
        "title": st.one_of(st.text(max_size=6), st.none(), st.integers()),
        "priceInfo": st.one_of(JSON_VALUE, st.fixed_dictionaries({"price": JSON_VALUE, "currencyCode": st.sampled_from(["EUR", "GBX", None])})),
        "brands": st.one_of(JSON_VALUE, st.lists(st.text(max_size=3), max_size=35)),
        "images": JSON_VALUE, "attributes": JSON_VALUE, "availability": st.sampled_from(["IN_STOCK", "maybe", None]),
        "categories": JSON_VALUE,
    },
)


@given(st.lists(st.one_of(EVENTISH, PRODUCTISH, JSON_VALUE), max_size=25), st.sampled_from(["products", "events"]), st.binary(max_size=10))
def test_retail_json_never_crashes_and_conserves(objs, kind, junk):
    data = "\n".join(json.dumps(o) for o in objs).encode() + b"\n" + junk
    parsed = parse_records(iter_jsonl(data, 0), kind=kind, source_file="f", source_format="retail-json", now=NOW, default_currency="EUR")
    kept, dups = dedupe_records(parsed.records, kind=kind)
    assert parsed.read == kept.num_rows + dups + parsed.dead.num_rows
    assert set(parsed.dead["reason"].to_pylist()) <= set(REASONS)


@given(st.lists(ROW, max_size=20), LINE_ENDINGS)
def test_mapped_csv_never_crashes_and_conserves(rows, eol):
    data = eol.join(["sku,name,price"] + rows).encode()
    mapping = ColumnMapping.parse("id=sku,title=name,priceInfo.price=price")
    parsed = parse_records(iter_csv(data, 0, None, mapping), kind="products", source_file="f", source_format="csv", now=NOW, default_currency="EUR")
    kept, dups = dedupe_records(parsed.records, kind="products")
    assert parsed.read == kept.num_rows + dups + parsed.dead.num_rows

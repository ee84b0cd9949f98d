"""The vectorized UCI Online Retail parser and builders, checked by hand."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from tests.conftest import SAMPLES, TESTDATA
from transforms import online_retail as ort
from transforms.records import Product, from_arrow

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
BAD_AND_GOOD = TESTDATA / "ingest" / "bad_and_good.csv"


def parse(data: bytes, first_chunk=True, base_offset=0):
    return ort.parse_chunk(data, source_file="f.csv", base_offset=base_offset, now=NOW, first_chunk=first_chunk)


def test_every_bad_row_gets_its_reason_and_offset():
    data = BAD_AND_GOOD.read_bytes()
    parsed = parse(data)
    assert parsed.read == 18  # the header and the blank line are not records
    assert parsed.lines.num_rows == 7
    dead = parsed.dead.to_pylist()
    by_raw = {d["raw"].split(",")[0] + ":" + d["raw"].split(",")[1]: d["reason"] for d in dead}
    assert by_raw == {
        "536368:22139": "ZERO_PRICE",
        "536369:22140": "MALFORMED_ROW",
        '536370:22141': "MALFORMED_ROW",
        "536371:22142": "BAD_TIMESTAMP",
        "536372:22143": "TIMESTAMP_OUT_OF_RANGE",
        "536373:22144": "NEGATIVE_PRICE",
        "536374:22145": "NEGATIVE_QUANTITY",
        "536375:22146": "BAD_QUANTITY",
        ":22147": "MISSING_ID",
        "536376:22148": "ENCODING_ERROR",
        "536377:22149": "BAD_CUSTOMER_ID",
    }
    for d in dead:  # the offset points at the start of the raw line in the file
        assert data[d["source_offset"] :].startswith(d["raw"].encode("utf-8", "replace")[:6]) or d["reason"] == "ENCODING_ERROR"
        assert d["detail"]
    assert sum(parsed.reasons.values()) == len(dead)


def test_chunks_split_anywhere_see_every_line_once():
    data = BAD_AND_GOOD.read_bytes()
    whole = parse(data)
    for cut in range(1, len(data) - 1, 37):
        # emulate two chunks: the line crossing `cut` belongs to the first
        nl = data.index(b"\n", cut - 1) + 1 if b"\n" in data[cut - 1 :] else len(data)
        a, b = parse(data[:nl]), parse(data[nl:], first_chunk=False, base_offset=nl)
        assert a.read + b.read == whole.read
        assert a.lines.num_rows + b.lines.num_rows == whole.lines.num_rows
        offsets = sorted(a.dead["source_offset"].to_pylist() + b.dead["source_offset"].to_pylist())
        assert offsets == sorted(whole.dead["source_offset"].to_pylist())


def test_events_dedupe_guests_and_cancellations():
    parsed = parse(BAD_AND_GOOD.read_bytes())
    built = ort.build_events(parsed.lines, currency="GBP")
    assert built["duplicates"] == 1
    assert built["rows"] == {"events": 5, "cancellations": 1}
    events = {e["purchaseTransaction"]["id"]: e for e in built["events"].to_pylist()}
    assert set(events) == {"536365", "536366", "536378"}
    e = events["536365"]
    assert e["visitorId"] == "17850" and e["userInfo"] == {"userId": "17850"}
    assert [(d["product"]["id"], d["quantity"]) for d in e["productDetails"]] == [("85123A", 6), ("71053", 6)]
    assert e["purchaseTransaction"]["revenue"] == pytest.approx(6 * 2.55 + 6 * 3.39)
    guest = events["536366"]
    assert guest["visitorId"] == "guest-536366" and guest["userInfo"] is None
    assert dict(guest["attributes"])["country"]["text"] == ["France"]
    (c,) = built["cancellations"].to_pylist()
    assert c["eventType"] == "cancellation"
    assert c["productDetails"] == [{"product": {"id": "71053"}, "quantity": 1}]
    assert c["purchaseTransaction"]["revenue"] == pytest.approx(-3.39)


def test_products_title_price_and_flags():
    parsed = parse(BAD_AND_GOOD.read_bytes())
    built = ort.build_events(parsed.lines, currency="GBP")
    products = {p.id: p for p in from_arrow(ort.build_products(ort.product_partials(built["lines"]), currency="GBP"), Product)}
    assert set(products) == {"85123A", "71053", "POST"}
    heart = products["85123A"]
    assert heart.title == "WHITE HANGING HEART"  # tie 1-1 after dedupe: the smaller text wins
    assert heart.priceInfo.price == 2.95 and heart.priceInfo.currencyCode == "GBP"  # the latest purchase
    assert heart.attributes["first_seen"].text == ("2010-12-01T08:26:00Z",)
    assert heart.attributes["last_seen"].text == ("2010-12-02T10:00:00Z",)
    lantern = products["71053"]
    assert lantern.title == "WHITE METAL LANTERN" and lantern.priceInfo.price == 3.50
    assert "non_product" in products["POST"].attributes and "non_product" not in heart.attributes


def test_missing_description_is_imputed_and_flagged():
    lines = parse(
        b"1,999X,,2,2011-01-01 10:00:00,1.5,,UK\n"
    ).lines
    (p,) = from_arrow(ort.build_products(ort.product_partials(lines), currency="GBP"), Product)
    assert p.title == "999X" and p.attributes["imputed_fields"].text == ("title",)


@pytest.mark.parametrize("code, product", [("85123A", True), ("22423", True), ("POST", False), ("BANK CHARGES", False), ("gift_0001_20", False), ("M", False)])
def test_product_codes(code, product):
    assert ort.is_product_code(code) is product


def test_real_sample_conserves_counts():
    parsed = parse((SAMPLES / "retail" / "online_retail_sample.csv").read_bytes())
    built = ort.build_events(parsed.lines, currency="GBP")
    assert parsed.read == 4000
    assert parsed.dead.num_rows + built["duplicates"] + sum(built["rows"].values()) == parsed.read
    assert built["events"].num_rows > 100 and built["cancellations"].num_rows > 5
    # every event's revenue is the sum of its lines and positive
    assert min(built["events"]["purchaseTransaction"].combine_chunks().field("revenue").to_pylist()) > 0


def test_partitions_are_stable_and_complete():
    parsed = parse((SAMPLES / "retail" / "online_retail_sample.csv").read_bytes())
    parts = ort.partition_ids(parsed.lines, "invoice", 3)
    again = ort.partition_ids(parsed.lines, "invoice", 3)
    assert [(k, t.num_rows) for k, t in parts] == [(k, t.num_rows) for k, t in again]
    assert sum(t.num_rows for _, t in parts) == parsed.lines.num_rows
    seen = {}
    for k, t in parts:  # an invoice lives in exactly one partition
        for inv in set(t["invoice"].to_pylist()):
            assert seen.setdefault(inv, k) == k


@pytest.mark.parametrize(
    "header",
    [
        b"\xef\xbb\xbfInvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country",  # with a BOM
        b"Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country",  # the "Online Retail II" names
        b'"InvoiceNo","StockCode","Description","Quantity","InvoiceDate","UnitPrice","CustomerID","Country"',
    ],
)
def test_header_spellings_and_excel_dates(header):
    parsed = parse(header + b"\r\n536365,85123A,HEART,6,12/1/2010 8:26,2.55,17850.0,United Kingdom\r\n")
    assert parsed.read == 1 and parsed.lines.num_rows == 1
    assert parsed.lines["time"].to_pylist()[0] == dt.datetime(2010, 12, 1, 8, 26, tzinfo=dt.timezone.utc)


def test_compact_parts_pickle_only_their_rows():
    """Partials travel through a shuffle pickled: a slice must not drag the whole table along."""
    import pickle

    lines = parse((SAMPLES / "retail" / "online_retail_sample.csv").read_bytes()).lines
    parts = ort.partition_ids(lines, "invoice", 8)
    whole = len(pickle.dumps(lines))
    for _, part in parts:
        share = part.num_rows / lines.num_rows
        assert len(pickle.dumps(ort.compact(part))) < whole * share * 1.5 + 20_000
        assert ort.compact(part).equals(part)


def test_overlong_fields_are_refused_not_truncated():
    row = b"1,85123A," + b"X" * 1001 + b",1,2011-01-01 10:00:00,1.0,,UK\n"
    parsed = parse(row)
    assert parsed.lines.num_rows == 0 and parsed.dead["reason"].to_pylist() == ["FIELD_TOO_LONG"]


def test_a_carriage_return_inside_a_line_is_a_malformed_row_not_a_crash():
    """pyarrow's CSV reader ends a row at a bare CR; the line splitter must reject such a line first."""
    import datetime as dt

    from transforms.online_retail import parse_chunk

    good = b"536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom"
    data = good + b"\r\n" + b"536366,22423,RE\rGENCY,1,2010-12-01 08:28:00,12.75,17850,United Kingdom\n" + b",,,,,,,\r0"
    parsed = parse_chunk(data, source_file="f.csv", base_offset=0, now=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), first_chunk=True)
    assert parsed.read == 3 and parsed.lines.num_rows == 1
    assert parsed.dead["reason"].to_pylist() == ["MALFORMED_ROW", "MALFORMED_ROW"]
    assert all("carriage return" in d for d in parsed.dead["detail"].to_pylist())
    assert parsed.dead["source_offset"].to_pylist() == [len(good) + 2, data.index(b",,,")]


def test_quotes_are_read_as_the_csv_reader_reads_them():
    """A quote opens a field only at its start (``12" TRAY`` is text); a quoted field left open is a dead letter,
    never glued to the next line."""
    import datetime as dt

    from transforms.online_retail import parse_chunk

    good = b"536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom"
    inch = b'536366,22423,REGENCY 12" TRAY,1,2010-12-01 08:28:00,12.75,17850,United Kingdom'
    quoted = b'536368,22424,"RECORD FRAME 7"" SINGLE, SIZE",1,2010-12-01 08:28:00,12.75,17850,United Kingdom'
    data = b"\n".join([good, b',,,,,,,0","', inch, quoted, b'536369,1,"OPEN,1,2010-12-01 08:28:00,1,1,UK', good.replace(b"536365", b"536367")])
    parsed = parse_chunk(data, source_file="f.csv", base_offset=0, now=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), first_chunk=True)
    assert parsed.read == 6 and parsed.lines.num_rows == 4
    assert parsed.lines["description"].to_pylist()[1:3] == ['REGENCY 12" TRAY', 'RECORD FRAME 7" SINGLE, SIZE']
    assert parsed.dead["reason"].to_pylist() == ["MALFORMED_ROW", "MALFORMED_ROW"]
    # `0"` is text, then `"` opens a field that the line never closes
    assert parsed.dead["detail"].to_pylist() == ["expected 8 comma-separated columns with balanced quotes (a quoted field left open)"] * 2
    assert parsed.dead["source_offset"].to_pylist() == [len(good) + 1, data.index(b"536369")]
    assert parsed.lines["source_offset"].to_pylist()[-1] == data.rindex(b"536367")  # read on its own


def test_a_line_the_csv_reader_splits_otherwise_is_recorded_and_left_out():
    """The reader's own check behind the quick count: a row of another width is skipped and named, not a crash."""
    from transforms.online_retail import _read_csv

    good = "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom"
    wrong: dict[int, int] = {}
    table = _read_csv(f"{good}\n\n1,2,3\n{good}\n".encode(), wrong)
    assert table.num_rows == 2 and wrong == {1: 3}  # the blank line does not count

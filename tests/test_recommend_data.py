"""Basket readers (UCI CSV, ingest Parquet), the product-code rule, the vocabulary and the time split."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest

from components.recommend_data import read_baskets, read_catalog, read_event_baskets, read_online_retail_csv, split_by_time
from tests.conftest import TESTDATA, shared_data
from transforms.errors import ConfigError, SourceError
from transforms.records import Product, ProductDetail, ProductRef, PurchaseTransaction, UserEvent, to_arrow
from transforms.recommend_vocab import ItemVocab, encode_queries, is_product_code

TINY = TESTDATA / "recommend" / "online_retail_tiny.csv"


@pytest.mark.parametrize(
    "code, expected",
    [
        ("85123A", True),
        ("22423", True),
        (" 21730 ", True),
        ("POST", False),
        ("DOT", False),
        ("M", False),
        ("m", False),
        ("C2", False),
        ("BANK CHARGES", False),
        ("AMAZONFEE", False),
        ("CRUK", False),
        ("PADS", False),
        ("S", False),
        ("B", False),
        ("D", False),
        ("gift_0001_20", False),
        ("DCGS0003", False),
        ("", False),
        (None, False),
    ],
)
def test_is_product_code(code, expected):
    assert is_product_code(code) is expected


def test_csv_reader_applies_exclusions():
    baskets = read_online_retail_csv(str(TINY))
    assert [(b.id, b.visitor, b.items) for b in baskets] == [
        ("100001", "12001", ("10001", "10002")),
        ("100002", None, ("10001", "10003A")),
        ("100004", "12002", ("10002", "10003A")),
    ]
    assert baskets[0].time == dt.datetime(2011, 1, 3, 9, 0, tzinfo=dt.timezone.utc)


def test_csv_reader_rejects_other_layouts(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="lacks the UCI Online Retail column"):
        read_online_retail_csv(str(bad))


def test_event_reader_matches_csv_reader(tmp_path):
    """The same purchases as UserEvents give the same baskets as the CSV."""
    csv_baskets = read_online_retail_csv(str(TINY))
    events = [
        UserEvent(
            eventType="purchase-complete",
            visitorId=b.visitor or f"guest-{b.id}",
            eventTime=b.time,
            productDetails=tuple(ProductDetail(ProductRef(i), 2) for i in b.items)
            + (ProductDetail(ProductRef("POST"), 1), ProductDetail(ProductRef("10009"), 0)),
            purchaseTransaction=PurchaseTransaction(revenue=10.0, currencyCode="GBP", id=b.id),
        )
        for b in csv_baskets
    ]
    events.append(UserEvent(eventType="detail-page-view", visitorId="x", eventTime=csv_baskets[0].time))
    events.append(
        UserEvent(
            eventType="purchase-complete",
            visitorId="refund",
            eventTime=csv_baskets[0].time,
            productDetails=(ProductDetail(ProductRef("10001"), 1),),
            purchaseTransaction=PurchaseTransaction(revenue=-3.0, currencyCode="GBP", id="r1"),
        )
    )
    (tmp_path / "events").mkdir()
    pq.write_table(to_arrow(events[:2], UserEvent), tmp_path / "events" / "part-0.parquet")
    pq.write_table(to_arrow(events[2:], UserEvent), tmp_path / "events" / "part-1.parquet")
    from_events = read_event_baskets(str(tmp_path / "events"))
    assert [(b.id, b.items, b.time) for b in from_events] == [(b.id, b.items, b.time) for b in csv_baskets]
    assert read_baskets(str(tmp_path / "events" / "part-0.parquet"))[0].items == ("10001", "10002")


def test_catalog_reader_and_missing_folder(tmp_path):
    pq.write_table(to_arrow([Product(id="10001", title="RED MUG")], Product), tmp_path / "p.parquet")
    assert read_catalog(str(tmp_path / "p.parquet")) == {"10001": "RED MUG"}
    with pytest.raises(SourceError, match="no Parquet files"):
        read_event_baskets(str(tmp_path / "nowhere"))


def test_time_split_never_leaks():
    baskets = read_online_retail_csv(str(TINY))
    before, after = split_by_time(baskets, "2011-02-01")
    assert [b.id for b in before] == ["100001", "100002"]
    assert [b.id for b in after] == ["100004"]
    assert max(b.time for b in before) < min(b.time for b in after)
    with pytest.raises(ConfigError, match="not ISO 8601"):
        split_by_time(baskets, "Feb 2011")


def test_vocab_round_trip_and_query_encoding():
    vocab = ItemVocab.build([["b", "a"], ["a", "c"], ["z"]])
    assert vocab.ids == ("a", "b", "c")  # "z" was only ever bought alone
    assert ItemVocab.from_json(vocab.to_json()) == vocab
    ids, w = encode_queries([[0, 2], [], [1, 0, 2]], 2)
    assert ids.tolist() == [[1, 3], [0, 0], [1, 3]]  # longest query keeps its last items
    assert w.tolist() == [[0.5, 0.5], [0.0, 0.0], [0.5, 0.5]]


def test_real_file_reader_counts():
    path = shared_data("retail/online_retail_2010-12_2011-09.csv")
    baskets = read_online_retail_csv(str(path))
    assert len(baskets) > 10_000
    assert all(is_product_code(i) for b in baskets[:500] for i in b.items)
    assert not any(b.id.startswith("C") for b in baskets)

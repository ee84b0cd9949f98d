"""Records: one definition, four representations that must agree."""

from __future__ import annotations

import datetime as dt
import json
import pathlib

import pytest

from transforms.records import (
    CustomAttribute,
    DeadLetter,
    Image,
    PriceInfo,
    Product,
    ProductDetail,
    ProductRef,
    PurchaseTransaction,
    UserEvent,
    UserInfo,
    bigquery_schema,
    from_arrow,
    to_arrow,
    to_retail_json,
    to_row,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "terraform" / "modules" / "bigquery" / "schemas"

PRODUCT = Product(
    id="85123A",
    title="WHITE HANGING HEART T-LIGHT HOLDER",
    categories=("Home > Candles",),
    priceInfo=PriceInfo(price=2.55, currencyCode="GBP"),
    images=(Image(uri="gs://bucket/85123A.jpg", width=640),),
    attributes={"country_of_origin": CustomAttribute(text=("GB",)), "net_weight_g": CustomAttribute(numbers=(250.0,))},
)
EVENT = UserEvent(
    eventType="purchase-complete",
    visitorId="17850",
    eventTime=dt.datetime(2010, 12, 1, 8, 26, tzinfo=dt.timezone.utc),
    userInfo=UserInfo(userId="17850"),
    productDetails=(ProductDetail(ProductRef("85123A"), 6),),
    purchaseTransaction=PurchaseTransaction(revenue=15.3, currencyCode="GBP", id="536365"),
)


@pytest.mark.parametrize("record", [PRODUCT, EVENT])
def test_arrow_round_trip(record):
    assert from_arrow(to_arrow([record], type(record)), type(record)) == [record]


def test_from_arrow_reads_every_field_kind():
    import pyarrow as pa

    from transforms.records import PRODUCT_SCHEMA

    naive = dt.datetime(2026, 1, 2, 3, 4, 5)
    rows = [
        # a naive timestamp is read as UTC; a missing optional record and empty containers stay as they are
        {**to_row(PRODUCT), "publishTime": naive, "priceInfo": None, "categories": [], "attributes": None},
        # attributes as Arrow gives a map: (key, value) pairs
        to_row(PRODUCT),
    ]
    first, second = from_arrow(pa.Table.from_pylist(rows, schema=PRODUCT_SCHEMA), Product)
    assert first.publishTime == naive.replace(tzinfo=dt.timezone.utc)
    assert first.priceInfo is None and first.attributes is None and first.categories == ()
    assert first.images == PRODUCT.images and isinstance(first.images[0], Image)
    assert second == PRODUCT
    assert second.attributes["net_weight_g"] == CustomAttribute(numbers=(250.0,))


@pytest.mark.parametrize("record", [PRODUCT, EVENT, PRODUCT._replace(publishTime=dt.datetime(2026, 1, 2, 3, 4, 5, 6), attributes=None)])
def test_a_row_builds_the_table_to_arrow_builds(record):
    import pyarrow as pa

    table = to_arrow([record], type(record))
    assert pa.Table.from_pylist([to_row(record)], schema=table.schema).equals(table)


def test_retail_json_shape():
    assert to_retail_json(EVENT) == {
        "eventType": "purchase-complete",
        "visitorId": "17850",
        "eventTime": "2010-12-01T08:26:00Z",
        "userInfo": {"userId": "17850"},
        "productDetails": [{"product": {"id": "85123A"}, "quantity": 6}],
        "purchaseTransaction": {"revenue": 15.3, "currencyCode": "GBP", "id": "536365"},
    }
    product = to_retail_json(PRODUCT)
    assert product["attributes"] == {"country_of_origin": {"text": ["GB"]}, "net_weight_g": {"numbers": [250.0]}}
    assert product["images"] == [{"uri": "gs://bucket/85123A.jpg", "width": 640}]


@pytest.mark.parametrize("cls, name", [(Product, "products"), (UserEvent, "user_events"), (DeadLetter, "dead_letters")])
def test_terraform_bigquery_tables_match_the_records(cls, name):
    """The tables Terraform creates have exactly the schema the BigQuery sink writes."""
    path = SCHEMAS / f"{name}.json"
    on_disk = json.loads(path.read_text())
    fields = on_disk["fields"] if isinstance(on_disk, dict) else on_disk
    assert fields == bigquery_schema(cls)["fields"], f"{path} differs from transforms.records.{cls.__name__}"

"""Baskets for the recommender, read from a UCI Online Retail CSV or from ingest output.

A :class:`Basket` is one purchase: its id (the invoice or transaction id),
the visitor who made it (``None`` for a guest checkout), its time and the
distinct product ids it holds, in the order they first appear.

Two readers give the same baskets for the same purchases:

* :func:`read_online_retail_csv`: the UCI Online Retail layout
  (``InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country``);
* :func:`read_event_baskets`: ``purchase-complete`` UserEvents in Parquet
  (``USER_EVENT_SCHEMA``), as ``aisle ingest`` writes them under ``<out>/events``.

Both drop cancellations (invoice numbers starting with ``C``), lines with a
non-positive quantity or price, and stock codes that are not products
(:func:`transforms.recommend_vocab.is_product_code`). They read with pyarrow;
paths go through Beam's ``FileSystems`` so ``gs://`` works like a local path.
"""

from __future__ import annotations

import datetime as _dt
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from transforms.errors import ConfigError, SourceError
from transforms.recommend_vocab import is_product_code

__all__ = [
    "Basket",
    "read_online_retail_csv",
    "read_event_baskets",
    "read_catalog",
    "read_baskets",
    "split_by_time",
    "parquet_files",
]

_UCI_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country")


@dataclass(frozen=True)
class Basket:
    """One purchase: ``items`` are distinct product ids in first-seen order."""

    id: str
    visitor: str | None
    time: _dt.datetime
    items: tuple[str, ...]


def _open(path: str):
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.open(path)
    except Exception as exc:  # Beam raises BeamIOError / OSError / IOError
        raise SourceError(f"cannot open {path!r}: {exc}") from exc


def parquet_files(location: str) -> list[str]:
    """The Parquet files a location names: a file, a folder of ``*.parquet``, or a glob."""
    from apache_beam.io.filesystems import FileSystems

    if any(ch in location for ch in "*?["):
        pattern = location
    elif location.endswith(".parquet"):
        pattern = location
    else:
        pattern = FileSystems.join(location.rstrip("/"), "*.parquet")
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:
        raise SourceError(f"cannot list {pattern!r}: {exc}") from exc
    paths = sorted(m.path for m in matches)
    if not paths:
        raise SourceError(
            f"no Parquet files at {location!r} (looked for {pattern!r}); give the ingest output folder "
            "(e.g. out/events) or a .parquet file"
        )
    return paths


def _group_baskets(
    invoice: Sequence[str],
    code: Sequence[str],
    visitor: Sequence[str | None],
    time: Sequence[_dt.datetime],
) -> list[Basket]:
    """Line items (already filtered) grouped by invoice, items de-duplicated in first-seen order."""
    order: dict[str, int] = {}
    items: list[dict[str, None]] = []
    visitors: list[str | None] = []
    times: list[_dt.datetime] = []
    for inv, c, v, t in zip(invoice, code, visitor, time):
        k = order.get(inv)
        if k is None:
            k = order[inv] = len(items)
            items.append({})
            visitors.append(v)
            times.append(t)
        items[k][c] = None
        if t < times[k]:
            times[k] = t
    baskets = [Basket(inv, visitors[k], times[k], tuple(items[k])) for inv, k in order.items()]
    baskets.sort(key=lambda b: (b.time, b.id))
    return baskets


def read_online_retail_csv(path: str) -> list[Basket]:
    """Baskets of a UCI Online Retail CSV, exclusions applied, sorted by time.

    Guest checkouts (empty ``CustomerID``) keep ``visitor=None``; a
    ``CustomerID`` like ``17850.0`` becomes ``"17850"``. ``InvoiceDate`` is
    read as UTC.
    """
    with _open(path) as fh:
        data = fh.read()
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in _UCI_COLUMNS if c not in ("Quantity", "UnitPrice")}
        | {"Quantity": pa.float64(), "UnitPrice": pa.float64()},
        strings_can_be_null=True,
    )
    try:
        table = pacsv.read_csv(io.BytesIO(data), convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise SourceError(f"{path!r} is not a UCI Online Retail CSV: {exc}") from exc
    missing = [c for c in ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID") if c not in table.column_names]
    if missing:
        raise ConfigError(
            f"{path!r} lacks the UCI Online Retail column(s) {missing}; expected header {','.join(_UCI_COLUMNS)}"
        )
    inv = pc.utf8_trim_whitespace(table["InvoiceNo"])
    code = pc.utf8_trim_whitespace(table["StockCode"])
    keep = pc.and_(
        pc.invert(pc.fill_null(pc.starts_with(inv, "C"), True)),
        pc.and_(pc.fill_null(pc.greater(table["Quantity"], 0), False), pc.fill_null(pc.greater(table["UnitPrice"], 0), False)),
    )
    unique = pc.unique(code).to_pylist()
    products = pa.array([c for c in unique if is_product_code(c)], pa.string())
    keep = pc.and_(keep, pc.fill_null(pc.is_in(code, value_set=products), False))
    keep = pc.and_(keep, pc.is_valid(table["InvoiceDate"]))
    inv, code = inv.filter(keep), code.filter(keep)
    cust = table["CustomerID"].filter(keep).to_pylist()
    visitors = [None if not c else (c[:-2] if c.endswith(".0") else c).strip() or None for c in cust]
    times_text = table["InvoiceDate"].filter(keep)
    try:
        times = pc.strptime(times_text, format="%Y-%m-%d %H:%M:%S", unit="s").to_pylist()
    except pa.ArrowInvalid:
        times = [_parse_time(t) for t in times_text.to_pylist()]
    times = [t.replace(tzinfo=_dt.timezone.utc) for t in times]
    return _group_baskets(inv.to_pylist(), code.to_pylist(), visitors, times)


def _parse_time(text: str) -> _dt.datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M"):
        try:
            return _dt.datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    raise ConfigError(f"InvoiceDate {text!r} is not 'YYYY-MM-DD HH:MM:SS' nor 'M/D/YYYY H:MM'")


def _read_parquet(location: str, columns: Sequence[str] | None = None) -> pa.Table:
    tables = []
    for path in parquet_files(location):
        with _open(path) as fh:
            tables.append(pq.read_table(io.BytesIO(fh.read()), columns=columns))
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def read_event_baskets(location: str) -> list[Basket]:
    """Baskets of the ``purchase-complete`` UserEvents under ``location``.

    One event is one basket, identified by ``purchaseTransaction.id`` (or the
    visitor and time when it has none); events sharing a transaction id are
    merged. Product details with a non-positive quantity or a non-product id
    are dropped, and so is a purchase with a negative revenue.
    """
    from transforms.recommend import purchase_from_event

    table = _read_parquet(location, ["eventType", "visitorId", "eventTime", "productDetails", "purchaseTransaction"])
    invoices, codes, visitors, times = [], [], [], []
    for row in table.to_pylist():
        purchase = purchase_from_event(row)
        if purchase is None:
            continue
        basket_id, visitor, t, items = purchase
        if t is not None and t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        for pid in items:
            invoices.append(basket_id)
            codes.append(pid)
            visitors.append(visitor)
            times.append(t)
    return _group_baskets(invoices, codes, visitors, times)


def read_catalog(location: str) -> dict[str, str]:
    """Product id -> title of the Products (``PRODUCT_SCHEMA`` Parquet) under ``location``."""
    table = _read_parquet(location, ["id", "title"])
    return {i: (t or "") for i, t in zip(table["id"].to_pylist(), table["title"].to_pylist()) if i}


def read_baskets(location: str) -> list[Basket]:
    """Baskets from a UCI CSV (``*.csv``) or from UserEvent Parquet (anything else)."""
    if location.lower().endswith(".csv"):
        return read_online_retail_csv(location)
    return read_event_baskets(location)


def split_by_time(baskets: Iterable[Basket], split: _dt.datetime | str) -> tuple[list[Basket], list[Basket]]:
    """(baskets before ``split``, baskets at or after it): a time split that never leaks."""
    if isinstance(split, str):
        try:
            split = _dt.datetime.fromisoformat(split)
        except ValueError as exc:
            raise ConfigError(f"split date {split!r} is not ISO 8601 (e.g. 2011-08-01)") from exc
    if split.tzinfo is None:
        split = split.replace(tzinfo=_dt.timezone.utc)
    before, after = [], []
    for b in baskets:
        (before if b.time < split else after).append(b)
    return before, after


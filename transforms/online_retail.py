"""The flat transactions CSV of the UCI Online Retail data set, vectorized.

One row per invoice line: ``InvoiceNo,StockCode,Description,Quantity,
InvoiceDate,UnitPrice,CustomerID,Country``. From it aisle derives

* purchase-complete :class:`~transforms.records.UserEvent` records, one per
  invoice, with its lines as ``productDetails``;
* cancellations (``InvoiceNo`` starting with ``C``, negative quantity) as
  events of type ``cancellation`` in their own output, with the cancelled
  quantities as positive numbers and the refunded amount as negative revenue;
* :class:`~transforms.records.Product` records, one per ``StockCode``: the
  most frequent description as title, the latest purchase price, first and
  last seen; codes that are not products (postage, fees, vouchers) flagged.

Everything here works on whole chunks with numpy and pyarrow.compute;
Python loops run only over dead letters and over one row per product.
"""

from __future__ import annotations

import collections
import datetime as dt
import io
import zlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from transforms.records import (
    DEAD_LETTER_SCHEMA,
    PRODUCT_SCHEMA,
    USER_EVENT_SCHEMA,
    CustomAttribute,
    PriceInfo,
    Product,
    format_time,
    to_arrow,
)
from transforms.ftp import redact
from transforms.validation import LIMITS

__all__ = [
    "COLUMNS",
    "LINE_SCHEMA",
    "ParsedChunk",
    "parse_chunk",
    "partition_ids",
    "build_events",
    "product_partials",
    "build_products",
    "is_product_code",
]

FORMAT = "online-retail"
COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country")
_HEADER = ",".join(COLUMNS).lower()
_TS = pa.timestamp("us", tz="UTC")
LINE_SCHEMA = pa.schema(
    [
        ("invoice", pa.string()),
        ("stock", pa.string()),
        ("description", pa.string()),
        ("quantity", pa.int64()),
        ("time", _TS),
        ("price", pa.float64()),
        ("customer", pa.string()),
        ("country", pa.string()),
        ("cancelled", pa.bool_()),
        ("source_file", pa.string()),
        ("source_offset", pa.int64()),
    ]
)
_KEY_COLUMNS = ["invoice", "stock", "description", "quantity", "time", "price", "customer", "country"]

# Codes in this data set that are charges, fees or vouchers, not products.
NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "M", "C2", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "S", "B", "D", "ADJUST", "ADJUST2", "TEST001", "TEST002"}
)


def is_product_code(code: str) -> bool:
    """False for postage, fees, manual adjustments and gift vouchers.

    Real products in this catalog have codes that start with a digit
    (``85123A``, ``22423``); charges use words (``POST``, ``AMAZONFEE``,
    ``gift_0001_20``).
    """
    code = code.strip()
    return bool(code) and code.upper() not in NON_PRODUCT_CODES and code[:1].isdigit()


@dataclass
class ParsedChunk:
    lines: pa.Table  # LINE_SCHEMA, valid rows only
    dead: pa.Table  # DEAD_LETTER_SCHEMA
    read: int  # records read (non-blank, non-header lines)
    reasons: collections.Counter = field(default_factory=collections.Counter)


def _line_bounds(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], nl + 1)).astype(np.int64)
    ends = np.concatenate((nl, [len(arr)])).astype(np.int64)
    if len(starts) and starts[-1] >= len(arr):
        starts, ends = starts[:-1], ends[:-1]
    has_cr = np.zeros(len(starts), dtype=bool)
    nonempty = ends > starts
    has_cr[nonempty] = arr[ends[nonempty] - 1] == 13
    return starts, ends - has_cr


def _has_inner_cr(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per line: a carriage return before its end (a line's own CRLF is already outside ``ends``)."""
    cr = np.flatnonzero(arr == 13)
    out = np.zeros(len(starts), dtype=bool)
    if len(cr) and len(starts):
        line = np.searchsorted(starts, cr, side="right") - 1
        ok = line >= 0
        cr, line = cr[ok], line[ok]
        out[line[cr < ends[line]]] = True
    return out


def _field_counts(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Separators between fields per line, and whether its quoted fields close on the line, as the CSV reader sees them.

    Lines without a quote (99% of the retail file) are counted at once; the
    others one by one (:func:`_quoted_line_fields`).
    """
    commas = np.flatnonzero(arr == 44)
    line = np.searchsorted(starts, commas, side="right") - 1
    inside = commas < ends[line]
    seps = np.bincount(line[inside], minlength=len(starts))
    balanced = np.ones(len(starts), dtype=bool)
    quotes = np.flatnonzero(arr == 34)
    if len(quotes):
        data = arr.tobytes()
        for i in np.flatnonzero(np.searchsorted(quotes, ends) > np.searchsorted(quotes, starts)):
            n = _quoted_line_fields(data[starts[i] : ends[i]])
            seps[i], balanced[i] = (n - 1, True) if n is not None else (seps[i], False)
    return seps, balanced


def _quoted_line_fields(line: bytes) -> int | None:
    """The fields of one CSV line as pyarrow's reader splits it, or None when a quoted field does not close on it.

    A quote opens a quoted field only at the start of a field (``12" TRAY``
    is text); inside one, ``""`` is a quote and the next lone quote closes
    it. An unclosed one would run on into the next line, so the line is
    malformed rather than read.
    """
    fields, i, n, start = 1, 0, len(line), True
    while i < n:
        c = line[i]
        if start and c == 34:
            i += 1
            while True:
                j = line.find(b'"', i)
                if j < 0:
                    return None
                if j + 1 < n and line[j + 1] == 34:
                    i = j + 2
                    continue
                i = j + 1
                break
            start = False
            continue
        if c == 44:
            fields += 1
            start = True
        else:
            start = False
        i += 1
    return fields


def _dead_table(source_file: str, offsets, raws, reasons, details) -> pa.Table:
    n = len(offsets)
    return pa.Table.from_arrays(
        [
            pa.array([source_file] * n, pa.string()),
            pa.array(offsets, pa.int64()),
            pa.array([FORMAT] * n, pa.string()),
            pa.array(raws, pa.string()),
            pa.array(reasons, pa.string()),
            pa.array(details, pa.string()),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


_DETAIL = {
    "MALFORMED_ROW": "expected 8 comma-separated columns with balanced quotes ({})",
    "ENCODING_ERROR": "the line is not valid UTF-8",
    "MISSING_ID": "{} is empty",
    "ID_TOO_LONG": "InvoiceNo or StockCode is longer than 128 characters",
    "FIELD_TOO_LONG": "Description is longer than the 1,000 characters a Retail API title may have",
    "BAD_QUANTITY": "Quantity {!r} is not an integer",
    "BAD_PRICE": "UnitPrice {!r} is not a number",
    "BAD_TIMESTAMP": "InvoiceDate {!r} is not 'YYYY-MM-DD HH:MM:SS' or 'M/D/YYYY H:MM'",
    "TIMESTAMP_OUT_OF_RANGE": "InvoiceDate {!r} is in the future or before 1990",
    "BAD_CUSTOMER_ID": "CustomerID {!r} is not a number",
    "ZERO_QUANTITY": "Quantity is 0",
    "NEGATIVE_QUANTITY": "Quantity {} on invoice {} which is not a cancellation (a stock adjustment)",
    "POSITIVE_CANCELLATION": "cancellation {} has a positive Quantity {}",
    "QUANTITY_OUT_OF_RANGE": "Quantity {} is beyond +-1,000,000",
    "NEGATIVE_PRICE": "UnitPrice {} is negative",
    "ZERO_PRICE": "UnitPrice is 0 on invoice {}: a free or adjustment line; the Retail API needs non-zero revenue",
}


def _detail(reason: str, row: dict) -> str:
    template = _DETAIL[reason]
    args = {
        "MISSING_ID": ("InvoiceNo" if not row["InvoiceNo"].strip() else "StockCode",),
        "BAD_QUANTITY": (row["Quantity"],),
        "BAD_PRICE": (row["UnitPrice"],),
        "BAD_TIMESTAMP": (row["InvoiceDate"],),
        "TIMESTAMP_OUT_OF_RANGE": (row["InvoiceDate"],),
        "BAD_CUSTOMER_ID": (row["CustomerID"],),
        "NEGATIVE_QUANTITY": (row["Quantity"], row["InvoiceNo"]),
        "POSITIVE_CANCELLATION": (row["InvoiceNo"], row["Quantity"]),
        "QUANTITY_OUT_OF_RANGE": (row["Quantity"],),
        "NEGATIVE_PRICE": (row["UnitPrice"],),
        "ZERO_PRICE": (row["InvoiceNo"],),
    }.get(reason, ())
    return template.format(*args)


def parse_chunk(
    data: bytes,
    *,
    source_file: str,
    base_offset: int,
    now: dt.datetime,
    first_chunk: bool,
) -> ParsedChunk:
    """Parse and validate the lines of one chunk; every non-blank line is counted.

    ``source_file`` is recorded with the password of an ``ftp://`` URI redacted.
    """
    source_file = redact(source_file)
    arr = np.frombuffer(data, dtype=np.uint8)
    starts, ends = _line_bounds(arr)
    blank = ends == starts
    seps, balanced = _field_counts(arr, starts, ends)
    inner_cr = _has_inner_cr(arr, starts, ends)  # the CSV reader would end the row there
    reason = np.full(len(starts), None, dtype=object)
    reason[~blank & (inner_cr | ~(balanced & (seps == len(COLUMNS) - 1)))] = "MALFORMED_ROW"
    header = np.zeros(len(starts), dtype=bool)
    if first_chunk:
        first = np.flatnonzero(~blank)
        if len(first) and _is_header(data[starts[first[0]] : ends[first[0]]]):
            header[first[0]] = True
            reason[first[0]] = None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        for i in np.flatnonzero(~blank & ~header):
            try:
                data[starts[i] : ends[i]].decode("utf-8")
            except UnicodeDecodeError:
                reason[i] = "ENCODING_ERROR"
    records = ~blank & ~header
    good_struct = records & (reason == None)  # noqa: E711 (element-wise)
    read = int(records.sum())
    good = good_struct
    dead_idx = np.flatnonzero(records & ~good)

    dead_offsets: list[int] = []
    dead_raw: list[str] = []
    dead_reason: list[str] = []
    dead_detail: list[str] = []

    def dead_lines(indices, reasons, details) -> None:
        """Lines ``indices`` of the chunk become dead letters with these reasons and details."""
        dead_offsets.extend(int(base_offset + starts[i]) for i in indices)
        dead_raw.extend(data[starts[i] : ends[i]].decode("utf-8", "replace") for i in indices)
        dead_reason.extend(reasons)
        dead_detail.extend(details)

    dead_lines(dead_idx, [reason[i] for i in dead_idx], [
        _DETAIL["MALFORMED_ROW"].format(
            "a carriage return inside the line" if inner_cr[i] else f"found {int(seps[i]) + 1} columns" if balanced[i] else "a quoted field left open"
        )
        if reason[i] == "MALFORMED_ROW"
        else _DETAIL["ENCODING_ERROR"]
        for i in dead_idx
    ])

    good_idx = np.flatnonzero(good)
    body = _without_lines(data, starts, np.flatnonzero(~blank & ~good_struct))
    # the count above follows the reader's quoting; a line it still splits otherwise is a dead letter, not a crash
    wrong_columns: dict[int, int] = {}  # position among the lines read -> the columns the reader found
    table = _read_csv(body, wrong_columns)
    if wrong_columns:
        bad = np.array(sorted(wrong_columns), dtype=np.int64)
        dead_lines(good_idx[bad], ["MALFORMED_ROW"] * len(bad),
                   [_DETAIL["MALFORMED_ROW"].format(f"the CSV reader found {wrong_columns[k]} columns") for k in bad])
        good_idx = np.delete(good_idx, bad)
    if table.num_rows != len(good_idx):  # every line is either a row or a dead letter
        raise AssertionError(f"{source_file}@{base_offset}: parsed {table.num_rows} rows from {len(good_idx)} lines")
    offsets = pa.array(base_offset + starts[good_idx], pa.int64())

    lines, rejected = _validate(table, offsets, source_file=source_file, now=now)
    if rejected:
        rows = table.take(pa.array(rejected["index"], pa.int64())).to_pylist()
        dead_lines(good_idx[rejected["index"]], rejected["reason"], [_detail(r, row) for r, row in zip(rejected["reason"], rows)])
    dead = _dead_table(source_file, dead_offsets, dead_raw, dead_reason, dead_detail)
    return ParsedChunk(lines=lines, dead=dead, read=read, reasons=collections.Counter(dead_reason))


def _is_header(line: bytes) -> bool:
    """The column-name line, in the UCI spelling or the "Online Retail II" one (Invoice, Price, Customer ID)."""
    text = line.decode("utf-8", "replace").lstrip("\ufeff").replace('"', "").replace(" ", "").lower()
    return text == _HEADER or (text.startswith("invoice") and "stockcode" in text and "quantity" in text)


def _without_lines(data: bytes, starts: np.ndarray, drop: np.ndarray) -> bytes:
    """``data`` minus the whole lines whose indices are in ``drop`` (few, in order)."""
    if len(drop) == 0:
        return data
    pieces, pos = [], 0
    for i in drop:
        pieces.append(data[pos : starts[i]])
        pos = int(starts[i + 1]) if i + 1 < len(starts) else len(data)
    pieces.append(data[pos:])
    return b"".join(pieces)


def _read_csv(body: bytes, wrong_columns: dict[int, int]) -> pa.Table:
    """The lines of ``body`` as a table of strings; a line that splits into another number of columns is left out
    and recorded in ``wrong_columns`` (its position among the non-blank lines -> the columns found)."""
    if not body:
        return pa.table({c: pa.array([], pa.string()) for c in COLUMNS})

    def skip(row) -> str:
        if row.number is None:  # known when the reader runs on one thread, as here
            raise AssertionError(f"the CSV reader gave no row number for {row.text!r}")
        wrong_columns[row.number - 1] = row.actual_columns
        return "skip"

    return pacsv.read_csv(
        io.BytesIO(body),
        read_options=pacsv.ReadOptions(column_names=list(COLUMNS), use_threads=False, block_size=1 << 26),
        parse_options=pacsv.ParseOptions(newlines_in_values=False, invalid_row_handler=skip),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in COLUMNS},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _validate(table: pa.Table, offsets: pa.Array, *, source_file: str, now: dt.datetime):
    trim = pc.utf8_trim_whitespace
    inv = trim(table["InvoiceNo"])
    stock = trim(table["StockCode"])
    desc = trim(table["Description"])
    qty_s = pc.replace_substring_regex(trim(table["Quantity"]), r"^\+", "")
    price_s = trim(table["UnitPrice"])
    date_s = trim(table["InvoiceDate"])
    cust_s = trim(table["CustomerID"])
    country = trim(table["Country"])

    qty_ok = pc.match_substring_regex(qty_s, r"^-?\d{1,15}$")
    price_ok = pc.match_substring_regex(price_s, r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
    qty = pc.cast(pc.if_else(qty_ok, qty_s, "0"), pa.int64())
    price = pc.cast(pc.if_else(price_ok, price_s, "0"), pa.float64())
    when = pc.coalesce(
        pc.strptime(date_s, format="%Y-%m-%d %H:%M:%S", unit="us", error_is_null=True),
        pc.strptime(date_s, format="%Y-%m-%d %H:%M", unit="us", error_is_null=True),
        pc.strptime(date_s, format="%m/%d/%Y %H:%M", unit="us", error_is_null=True),
    )
    when = pc.cast(when, _TS)
    cust_present = pc.not_equal(cust_s, "")
    cust_ok = pc.match_substring_regex(cust_s, r"^\d{1,20}(\.0*)?$")
    customer = pc.if_else(cust_present, pc.replace_substring_regex(cust_s, r"\.0*$", ""), pa.scalar(None, pa.string()))
    cancelled = pc.starts_with(pc.utf8_upper(inv), "C")
    lo = pa.scalar(LIMITS.min_event_time, _TS)
    hi = pa.scalar(now + LIMITS.max_future, _TS)

    checks = [
        ("MISSING_ID", pc.or_(pc.equal(inv, ""), pc.equal(stock, ""))),
        ("ID_TOO_LONG", pc.or_(pc.greater(pc.utf8_length(inv), LIMITS.id_chars), pc.greater(pc.utf8_length(stock), LIMITS.id_chars))),
        ("FIELD_TOO_LONG", pc.greater(pc.utf8_length(desc), LIMITS.title_chars)),
        ("BAD_QUANTITY", pc.invert(qty_ok)),
        ("BAD_PRICE", pc.invert(price_ok)),
        ("BAD_TIMESTAMP", pc.is_null(when)),
        ("TIMESTAMP_OUT_OF_RANGE", pc.or_(pc.less(when, lo), pc.greater(when, hi))),
        ("BAD_CUSTOMER_ID", pc.and_(cust_present, pc.invert(cust_ok))),
        ("ZERO_QUANTITY", pc.equal(qty, 0)),
        ("NEGATIVE_QUANTITY", pc.and_(pc.less(qty, 0), pc.invert(cancelled))),
        ("POSITIVE_CANCELLATION", pc.and_(pc.greater(qty, 0), cancelled)),
        ("QUANTITY_OUT_OF_RANGE", pc.greater(pc.abs(qty), LIMITS.max_quantity)),
        ("NEGATIVE_PRICE", pc.less(price, 0)),
        ("ZERO_PRICE", pc.and_(pc.equal(price, 0), pc.invert(cancelled))),
    ]
    reason = pa.nulls(table.num_rows, pa.string())
    for code, failed in reversed(checks):
        reason = pc.if_else(pc.fill_null(failed, False), code, reason)
    ok = pc.is_null(reason)
    lines = pa.Table.from_arrays(
        [inv, stock, desc, qty, when, price, customer, country, cancelled,
         pa.array([source_file] * table.num_rows, pa.string()), offsets],
        schema=LINE_SCHEMA,
    ).filter(ok)
    bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
    rejected = {"index": bad, "reason": reason.take(pa.array(bad, pa.int64())).to_pylist()} if len(bad) else None
    return lines, rejected


def _stable_bucket(values: pa.ChunkedArray | pa.Array, buckets: int) -> np.ndarray:
    """A bucket in [0, buckets) per string, the same on every machine and run."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    table = np.array([zlib.crc32(v.encode("utf-8")) % buckets for v in encoded.dictionary.to_pylist()], dtype=np.int64)
    if len(table) == 0:
        return np.zeros(0, dtype=np.int64)
    return table[encoded.indices.to_numpy(zero_copy_only=False)]


def partition_ids(table: pa.Table, column: str, partitions: int) -> list[tuple[int, pa.Table]]:
    """Split a table into (partition, rows) by a stable hash of ``column``.

    The parts are zero-copy slices of one reordered table: cheap to write,
    but pickling a slice serializes the whole underlying buffers, so call
    :func:`compact` on a part before it travels through a Beam shuffle.
    """
    if table.num_rows == 0:
        return []
    bucket = _stable_bucket(table[column], partitions)
    if partitions == 1 or (bucket == bucket[0]).all():
        return [(int(bucket[0]), table)]
    order = np.argsort(bucket, kind="stable")
    sorted_b = bucket[order]
    cuts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_b)) + 1, [len(order)]))
    ordered = table.take(pa.array(order, pa.int64()))  # one gather, then zero-copy slices
    return [(int(sorted_b[a]), ordered.slice(a, b - a)) for a, b in zip(cuts[:-1], cuts[1:])]


def compact(table: pa.Table) -> pa.Table:
    """A copy of ``table`` that owns only its own rows' memory (see :func:`partition_ids`)."""
    return table.take(pa.array(np.arange(table.num_rows, dtype=np.int64)))


# --------------------------------------------------------------------------
# Building events from the lines of one partition
# --------------------------------------------------------------------------


def dedupe_lines(lines: pa.Table) -> tuple[pa.Table, int]:
    """Drop exact duplicate lines (all business fields equal), keeping the first seen."""
    if lines.num_rows == 0:
        return lines, 0
    lines = lines.sort_by([("source_file", "ascending"), ("source_offset", "ascending")])
    codes = _row_codes(lines, _KEY_COLUMNS)
    order = np.lexsort(codes.T[::-1])  # stable: equal rows stay in input order
    ranked = codes[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (ranked[1:] != ranked[:-1]).any(axis=1)
    first = np.sort(order[starts])
    if len(first) == lines.num_rows:
        return lines, 0
    return lines.take(pa.array(first, pa.int64())), lines.num_rows - len(first)


def _row_codes(table: pa.Table, columns: list[str]) -> np.ndarray:
    """An (rows, columns) int64 matrix equal where and only where the values are equal."""
    out = []
    for name in columns:
        col = table[name].combine_chunks()
        if pa.types.is_string(col.type):
            codes = pc.fill_null(pc.dictionary_encode(col).indices, -1)
            out.append(codes.to_numpy(zero_copy_only=False).astype(np.int64))
        elif pa.types.is_timestamp(col.type):
            out.append(pc.fill_null(col.cast(pa.int64()), np.iinfo(np.int64).min).to_numpy())
        elif pa.types.is_floating(col.type):
            out.append(pc.fill_null(col, np.nan).to_numpy().astype(np.float64).view(np.int64))
        else:
            out.append(pc.fill_null(col, np.iinfo(np.int64).min).to_numpy().astype(np.int64))
    return np.column_stack(out)


def _group_runs(sorted_keys: pa.Array) -> np.ndarray:
    """Offsets of runs of equal values in a sorted string array (for ListArray)."""
    keys = sorted_keys.to_numpy(zero_copy_only=False)
    if len(keys) == 0:
        return np.zeros(1, dtype=np.int32)
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return np.concatenate(([0], change, [len(keys)])).astype(np.int32)


def _events(lines: pa.Table, *, event_type: str, currency: str, sign: int) -> pa.Table:
    """One event per invoice from its (deduplicated) lines."""
    if lines.num_rows == 0:
        return USER_EVENT_SCHEMA.empty_table()
    lines = lines.append_column("amount", pc.multiply(pc.cast(lines["quantity"], pa.float64()), lines["price"]))
    # One productDetails entry per (invoice, product), in order of first appearance.
    per_item = (
        lines.sort_by([("invoice", "ascending"), ("source_file", "ascending"), ("source_offset", "ascending")])
        .group_by(["invoice", "stock"], use_threads=False)
        .aggregate([("quantity", "sum"), ("source_file", "first"), ("source_offset", "first")])
        .sort_by([("invoice", "ascending"), ("source_file_first", "ascending"), ("source_offset_first", "ascending")])
    )
    per_invoice = (
        lines.sort_by([("invoice", "ascending"), ("source_file", "ascending"), ("source_offset", "ascending")])
        .group_by("invoice", use_threads=False)
        .aggregate([("time", "min"), ("customer", "first"), ("country", "first"), ("amount", "sum")])
        .sort_by("invoice")
    )
    offsets = _group_runs(per_item["invoice"].combine_chunks())
    n = per_invoice.num_rows
    assert len(offsets) == n + 1
    invoice = per_invoice["invoice"].combine_chunks()
    customer = per_invoice["customer_first"].combine_chunks()
    visitor = pc.coalesce(customer, pc.binary_join_element_wise("guest-", invoice, ""))
    quantity = pc.multiply(per_item["quantity_sum"].combine_chunks(), sign)
    details = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [pa.StructArray.from_arrays([per_item["stock"].combine_chunks()], ["id"]), quantity],
            ["product", "quantity"],
        ),
    )
    user_info = pa.StructArray.from_arrays([customer], ["userId"], mask=pc.is_null(customer))
    revenue = pc.round(per_invoice["amount_sum"].combine_chunks(), 4)
    nulls = pa.nulls(n, pa.float64())
    transaction = pa.StructArray.from_arrays(
        [revenue, pa.array([currency] * n, pa.string()), invoice, nulls, nulls],
        ["revenue", "currencyCode", "id", "tax", "cost"],
    )
    country = per_invoice["country_first"].combine_chunks()
    attr_value = pa.StructArray.from_arrays(
        [pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), country),
         pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.float64()))],
        ["text", "numbers"],
    )
    attributes = pa.MapArray.from_arrays(
        pa.array(np.arange(n + 1, dtype=np.int32)), pa.array(["country"] * n, pa.string()), attr_value
    )
    table = pa.Table.from_arrays(
        [
            pa.array([event_type] * n, pa.string()),
            visitor,
            per_invoice["time_min"].combine_chunks(),
            user_info,
            details,
            transaction,
            attributes,
            pa.nulls(n, pa.string()),
        ],
        names=USER_EVENT_SCHEMA.names,
    )
    return table.cast(USER_EVENT_SCHEMA)


def build_events(lines: pa.Table, *, currency: str) -> dict:
    """Events, cancellations and counts from all lines of one invoice partition."""
    lines, duplicates = dedupe_lines(lines)
    cancelled = lines["cancelled"]
    purchases = lines.filter(pc.invert(cancelled))
    cancels = lines.filter(cancelled)
    return {
        "lines": lines,
        "duplicates": duplicates,
        "events": _events(purchases, event_type="purchase-complete", currency=currency, sign=1),
        "cancellations": _events(cancels, event_type="cancellation", currency=currency, sign=-1),
        "rows": {"events": purchases.num_rows, "cancellations": cancels.num_rows},
    }


# --------------------------------------------------------------------------
# Products: partial aggregates per partition, merged per product
# --------------------------------------------------------------------------

PARTIAL_SCHEMA = pa.schema(
    [
        ("stock", pa.string()),
        ("description", pa.string()),
        ("rows", pa.int64()),
        ("first_seen", _TS),
        ("last_seen", _TS),
        ("price", pa.float64()),
        ("price_time", _TS),
    ]
)


def product_partials(lines: pa.Table) -> pa.Table:
    """Per (product, description) counts plus first/last seen and latest price.

    Purchases set the price and the seen-dates; a product only ever cancelled
    still appears (with no price).
    """
    if lines.num_rows == 0:
        return PARTIAL_SCHEMA.empty_table()
    desc = lines.group_by(["stock", "description"], use_threads=False).aggregate([("quantity", "count")])
    purchases = lines.filter(pc.invert(lines["cancelled"])).sort_by(
        [("stock", "ascending"), ("time", "ascending"), ("source_file", "ascending"), ("source_offset", "ascending")]
    )
    seen = purchases.group_by("stock", use_threads=False).aggregate(
        [("time", "min"), ("time", "max"), ("price", "last"), ("time", "last")]
    )
    joined = desc.join(seen, "stock", join_type="left outer")
    return pa.Table.from_arrays(
        [
            joined["stock"],
            joined["description"],
            joined["quantity_count"],
            joined["time_min"],
            joined["time_max"],
            joined["price_last"],
            joined["time_last"],
        ],
        schema=PARTIAL_SCHEMA,
    )


def build_products(partials: pa.Table, *, currency: str) -> pa.Table:
    """Products from the partial aggregates of every partition, sorted by id."""
    if partials.num_rows == 0:
        return PRODUCT_SCHEMA.empty_table()
    named = partials.filter(pc.not_equal(partials["description"], ""))
    counts = named.group_by(["stock", "description"]).aggregate([("rows", "sum")])
    best = {}
    for stock, description, rows in zip(
        counts["stock"].to_pylist(), counts["description"].to_pylist(), counts["rows_sum"].to_pylist()
    ):
        cur = best.get(stock)
        if cur is None or rows > cur[1] or (rows == cur[1] and description < cur[0]):
            best[stock] = (description, rows)
    seen = partials.group_by("stock").aggregate([("first_seen", "min"), ("last_seen", "max")])
    priced = partials.filter(pc.is_valid(partials["price_time"])).sort_by(
        [("stock", "ascending"), ("price_time", "ascending"), ("price", "ascending")]
    )
    latest = priced.group_by("stock", use_threads=False).aggregate([("price", "last")])
    price_of = dict(zip(latest["stock"].to_pylist(), latest["price_last"].to_pylist()))
    products = []
    for stock, first, last in sorted(
        zip(seen["stock"].to_pylist(), seen["first_seen_min"].to_pylist(), seen["last_seen_max"].to_pylist()),
        key=lambda r: r[0],
    ):
        attributes: dict[str, CustomAttribute] = {}
        if first is not None:
            attributes["first_seen"] = CustomAttribute(text=(format_time(first),))
            attributes["last_seen"] = CustomAttribute(text=(format_time(last),))
        title = best.get(stock, (None,))[0]
        if title is None:
            title = stock
            attributes["imputed_fields"] = CustomAttribute(text=("title",))
        if not is_product_code(stock):
            attributes["non_product"] = CustomAttribute(text=("true",))
        price = price_of.get(stock)
        products.append(
            Product(
                id=stock,
                title=title,
                priceInfo=PriceInfo(price=price, currencyCode=currency) if price is not None else None,
                attributes=attributes,
            )
        )
    return to_arrow(products, Product)

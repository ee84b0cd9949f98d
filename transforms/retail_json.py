"""Retail-API-shaped JSONL, and generic CSV/Parquet with a column mapping.

Each input line (or row) is one Product or UserEvent. Rows of a generic file
are first turned into the Retail API's JSON shape by a :class:`ColumnMapping`
and then validated by the same code as JSONL, so every source obeys one set
of rules.

>>> m = ColumnMapping.parse("id=sku,title=name,priceInfo.price=price,priceInfo.currencyCode==EUR")
>>> m.apply({"sku": "A1", "name": "Tea", "price": "2.5"})
{'id': 'A1', 'title': 'Tea', 'priceInfo': {'price': '2.5', 'currencyCode': 'EUR'}}
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.errors import ConfigError, SourceError
from transforms.ftp import redact
from transforms.records import DEAD_LETTER_SCHEMA, Product, UserEvent, arrow_schema, format_time, to_arrow
from transforms.validation import Invalid, validate_event, validate_product

__all__ = ["KINDS", "ColumnMapping", "ParsedRecords", "parse_records", "dedupe_records", "iter_jsonl", "iter_csv", "iter_parquet"]

KINDS = {"products": Product, "events": UserEvent}
_LIST_FIELDS = {"categories", "brands"}


@dataclass(frozen=True)
class ColumnMapping:
    """Which source column fills which Retail API field.

    Targets are dotted Retail field paths (``priceInfo.price``), ``images``
    (one or more URIs separated by ``|``), ``categories``/``brands`` (``|``
    separated), ``productDetails.product.id`` and
    ``productDetails.quantity`` (one product per row), and
    ``attributes.<key>``. A source of the form ``=value`` is a constant.
    """

    fields: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, spec: str | Mapping[str, str]) -> "ColumnMapping":
        if isinstance(spec, Mapping):
            pairs = list(spec.items())
        else:
            pairs = []
            for part in filter(None, (p.strip() for p in spec.split(","))):
                if "=" not in part:
                    raise ConfigError(f"mapping entry {part!r} must be target=column (for example title=product_name)")
                target, source = part.split("=", 1)
                pairs.append((target.strip(), source.strip()))
        if not pairs:
            raise ConfigError("the column mapping is empty; give target=column pairs such as id=sku,title=name")
        return cls(tuple(pairs))

    def columns(self) -> list[str]:
        return [s for _, s in self.fields if not s.startswith("=")]

    def apply(self, row: Mapping[str, object]) -> dict:
        out: dict = {}
        for target, source in self.fields:
            if source.startswith("="):
                value: object = source[1:]
            else:
                if source not in row:
                    raise Invalid("MAPPING_ERROR", f"column {source!r} (mapped to {target}) is missing from the row")
                value = row[source]
            if value is None or value == "":
                continue
            if target == "images":
                out["images"] = [{"uri": u.strip()} for u in str(value).split("|") if u.strip()]
            elif target in _LIST_FIELDS:
                out[target] = [v.strip() for v in str(value).split("|") if v.strip()]
            elif target.startswith("productDetails."):
                detail = out.setdefault("productDetails", [{}])[0]
                if target == "productDetails.product.id":
                    detail["product"] = {"id": value}
                elif target == "productDetails.quantity":
                    detail["quantity"] = value
                else:
                    raise ConfigError(f"unknown mapping target {target!r}")
            elif target.startswith("attributes."):
                out.setdefault("attributes", {})[target.split(".", 1)[1]] = {"text": [str(value)]}
            else:
                node = out
                *parents, leaf = target.split(".")
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = value
        return out


@dataclass
class ParsedRecords:
    records: pa.Table  # the kind's Arrow schema + _key, _file, _offset
    dead: pa.Table
    read: int
    reasons: collections.Counter


MAX_RECORD_BYTES = 1 << 20  # a Retail API record is far smaller; anything larger is refused unparsed


def _text_lines(data: bytes, base_offset: int, max_record_bytes: int, *, strip: bool):
    """(offset, text, None) for each non-blank UTF-8 line, or (offset, raw, Invalid) when unusable."""
    pos = 0
    for line in data.split(b"\n"):
        offset = base_offset + pos
        pos += len(line) + 1
        line = line.strip() if strip else line.rstrip(b"\r")
        if not line.strip():
            continue
        if len(line) > max_record_bytes:
            head = line[:200].decode("utf-8", "replace")
            yield offset, head, Invalid("RECORD_TOO_LARGE", f"the record has {len(line):,} bytes; the limit is {max_record_bytes:,}")
            continue
        try:
            yield offset, line.decode("utf-8"), None
        except UnicodeDecodeError:
            yield offset, line.decode("utf-8", "replace"), Invalid("ENCODING_ERROR", "the line is not valid UTF-8")


def iter_jsonl(data: bytes, base_offset: int, *, max_record_bytes: int = MAX_RECORD_BYTES) -> Iterable[tuple[int, str, object]]:
    """(offset, raw line, parsed object or Invalid) for each non-blank line."""
    for offset, text, problem in _text_lines(data, base_offset, max_record_bytes, strip=True):
        if problem is not None:
            yield offset, text, problem
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            yield offset, text, Invalid("MALFORMED_JSON", f"not valid JSON: {exc}")
            continue
        if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
            yield offset, text, Invalid("ENCODING_ERROR", "a \\uXXXX escape encodes a lone UTF-16 surrogate, which is not a character")
            continue
        yield offset, text, obj


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(obj) -> bool:
    """True when a string in ``obj`` (keys included) cannot be encoded as UTF-8."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def iter_csv(data: bytes, base_offset: int, header: list[str] | None, mapping: ColumnMapping, *, max_record_bytes: int = MAX_RECORD_BYTES):
    """(offset, raw line, mapped dict or Invalid) for each CSV line after the header."""
    for offset, text, problem in _text_lines(data, base_offset, max_record_bytes, strip=False):
        if problem is not None:
            yield offset, text, problem
            continue
        try:
            values = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            yield offset, text, Invalid("MALFORMED_ROW", f"not a CSV row: {exc}")
            continue
        if header is None:
            header = values
            continue
        if values == header:
            continue
        if len(values) != len(header):
            yield offset, text, Invalid("MALFORMED_ROW", f"expected {len(header)} columns, found {len(values)}")
            continue
        try:
            yield offset, text, mapping.apply(dict(zip(header, values)))
        except Invalid as exc:
            yield offset, text, exc


def iter_parquet(data: bytes, mapping: ColumnMapping, *, uri: str = "<bytes>") -> Iterable[tuple[int, str, object]]:
    """(row index, row as JSON, mapped dict or Invalid) for each row of a Parquet file's bytes.

    A file that is not Parquet (empty, truncated, another format) raises
    :class:`~transforms.errors.SourceError` naming ``uri``: the caller
    turns that into one ``UNREADABLE_FILE`` dead letter. A mapped column the
    file lacks makes every row a ``MAPPING_ERROR`` dead letter.
    """
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SourceError(f"{redact(uri)} is not a readable Parquet file ({len(data)} bytes): {exc}") from exc
    present = [c for c in mapping.columns() if c in table.column_names]
    rows = table.select(present).to_pylist()
    for i, row in enumerate(rows):
        try:
            mapped: object = mapping.apply(row)
        except Invalid as exc:
            mapped = exc
        yield i, json.dumps(row, default=str, ensure_ascii=False), mapped


def _event_key(e: UserEvent) -> str:
    details = sorted((d.product.id, d.quantity or 0) for d in e.productDetails)
    tx = e.purchaseTransaction.id if e.purchaseTransaction else ""
    raw = json.dumps([e.eventType, e.visitorId, format_time(e.eventTime), details, tx])
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()


def parse_records(
    items: Iterable[tuple[int, str, object]],
    *,
    kind: str,
    source_file: str,
    source_format: str,
    now: dt.datetime,
    default_currency: str,
) -> ParsedRecords:
    """Validate parsed items into a typed table plus dead letters.

    ``source_file`` is recorded with the password of an ``ftp://`` URI
    redacted, so credentials never reach an output.
    """
    cls = KINDS[kind]
    source_file = redact(source_file)
    good, keys, offsets = [], [], []
    dead = collections.defaultdict(list)
    reasons: collections.Counter = collections.Counter()
    read = 0
    for offset, raw, obj in items:
        read += 1
        try:
            if isinstance(obj, Invalid):
                raise obj
            if kind == "products":
                record = validate_product(obj, default_currency=default_currency)
                key = record.id
            else:
                record = validate_event(obj, now=now, default_currency=default_currency)
                key = _event_key(record)
        except Invalid as exc:
            for col, value in zip(DEAD_LETTER_SCHEMA.names, (source_file, offset, source_format, raw[:100_000], exc.reason, exc.detail)):
                dead[col].append(value)
            reasons[exc.reason] += 1
            continue
        except (TypeError, ValueError, AttributeError) as exc:  # a shape no check anticipated
            for col, value in zip(DEAD_LETTER_SCHEMA.names, (source_file, offset, source_format, raw[:100_000], "BAD_TYPE", str(exc))):
                dead[col].append(value)
            reasons["BAD_TYPE"] += 1
            continue
        good.append(record)
        keys.append(key)
        offsets.append(offset)
    table = to_arrow(good, cls)
    table = (
        table.append_column("_key", pa.array(keys, pa.string()))
        .append_column("_file", pa.array([source_file] * len(good), pa.string()))
        .append_column("_offset", pa.array(offsets, pa.int64()))
    )
    dead_table = pa.Table.from_pydict({c: dead.get(c, []) for c in DEAD_LETTER_SCHEMA.names}, schema=DEAD_LETTER_SCHEMA)
    return ParsedRecords(table, dead_table, read, reasons)


def dedupe_records(table: pa.Table, *, kind: str) -> tuple[pa.Table, int]:
    """Products upserted latest-wins by id; events deduplicated keeping the first.

    "Latest" and "first" follow input order: file name, then position.
    Returns the records sorted by key (without the helper columns) and the
    number of records dropped.
    """
    schema = arrow_schema(KINDS[kind])
    if table.num_rows == 0:
        return schema.empty_table(), 0
    table = table.sort_by([("_key", "ascending"), ("_file", "ascending"), ("_offset", "ascending")])
    keys = table["_key"].to_numpy(zero_copy_only=False)
    if kind == "products":  # keep the last of each run of equal keys
        keep = np.ones(len(keys), dtype=bool)
        keep[:-1] = keys[1:] != keys[:-1]
    else:  # keep the first
        keep = np.ones(len(keys), dtype=bool)
        keep[1:] = keys[1:] != keys[:-1]
    kept = table.filter(pa.array(keep)).select(schema.names)
    return kept.cast(schema), int(len(keys) - keep.sum())


def unjoined_events(events: pa.Table, catalog_ids: frozenset[str]) -> int:
    """Events naming at least one product that the catalog does not have."""
    if events.num_rows == 0:
        return 0
    details = events["productDetails"].combine_chunks()
    ids = pc.struct_field(pc.struct_field(pc.list_flatten(details), [0]), [0])
    parent = pc.list_parent_indices(details).to_numpy()
    missing = ~np.isin(ids.to_numpy(zero_copy_only=False), np.array(sorted(catalog_ids), dtype=object))
    return int(len(np.unique(parent[missing])))

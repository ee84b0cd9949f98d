"""One reader for the catalog files that ``aisle enrich`` takes: Products or dead letters, never a crash.

A catalog file is Parquet with :data:`transforms.records.PRODUCT_SCHEMA`
(``aisle ingest`` output, already validated) or Retail-API JSON lines
(one product object per line). :func:`read_catalog_file` yields, for every
record in it, either a :class:`~transforms.records.Product` or a
:class:`~transforms.records.DeadLetter` with a reason code of
:data:`transforms.validation.REASONS`:

* a JSON line that is not UTF-8 (``ENCODING_ERROR``), not JSON or not an
  object (``MALFORMED_JSON``), or not a valid product (its validation
  reason: ``MISSING_ID``, ``BAD_TYPE``, ...);
* a Parquet row without an id (``MISSING_ID``);
* a file that cannot be opened or parsed at all (``UNREADABLE_FILE``, one
  dead letter for the whole file).

The OCR and NER halves of the job read a catalog through this one
function, so a line is rejected once and for the same reason in both;
the OCR half writes the dead letters (``dead_letter_catalog``), the NER
half skips them.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "catalog.jsonl")
>>> with open(path, "wb") as f:
...     _ = f.write(b'{"id": "p1", "title": "Tea"}\\n{"title": "no id"}\\n\\xff\\n')
>>> [type(r).__name__ + ":" + (r.id if hasattr(r, "id") else r.reason) for r in read_catalog_file(path)]
['Product:p1', 'DeadLetter:MISSING_ID', 'DeadLetter:ENCODING_ERROR']
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from transforms.records import DeadLetter, Product
from transforms.retail_json import MAX_RECORD_BYTES

__all__ = ["MAX_LINE_BYTES", "read_catalog_file"]

# A product line longer than this is not read into memory as one record (ingest's record limit).
MAX_LINE_BYTES = MAX_RECORD_BYTES
_RAW_CHARS = 2000


def _dead(path: str, offset: int, fmt: str, raw: bytes | str, reason: str, detail: str) -> DeadLetter:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    return DeadLetter(source_file=path, source_offset=offset, source_format=fmt, raw=raw[:_RAW_CHARS], reason=reason, detail=detail[:2000])


def _read_parquet(path: str, columns: Sequence[str] | None) -> Iterator[Product | DeadLetter]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from transforms.records import PRODUCT_SCHEMA, from_arrow

    try:
        with FileSystems.open(path) as f:
            schema_names = pq.read_schema(f).names
            wanted = [n for n in PRODUCT_SCHEMA.names if n in schema_names and (columns is None or n in columns or n in ("id", "title"))]
            table = pq.read_table(f, columns=wanted)
        names = [n for n in PRODUCT_SCHEMA.names if n in table.column_names]
        if "id" not in names:
            raise ValueError(f"no 'id' column (columns: {table.column_names[:20]})")
        table = table.select(names)
        if "title" not in names:  # a product file of another tool: titles are optional for enrichment
            table = table.append_column("title", pa.nulls(table.num_rows, pa.string()).fill_null(""))
    except Exception as exc:  # a truncated, empty or foreign file: one dead letter, not a failed job
        yield _dead(path, 0, "catalog-parquet", "", "UNREADABLE_FILE", f"{type(exc).__name__}: {exc}")
        return
    ids = table.column("id").to_pylist()
    missing = [n for n, i in enumerate(ids) if i is None or not str(i).strip()]
    for n in missing:
        row = table.slice(n, 1).to_pylist()[0]
        yield _dead(path, n, "catalog-parquet", json.dumps(row, default=str), "MISSING_ID",
                    f"row {n} has no product id, so its images and text cannot be joined to a product")
    if missing:
        keep = sorted(set(range(len(ids))) - set(missing))
        table = table.take(keep)
    for batch in table.to_batches(max_chunksize=4096):
        yield from from_arrow(batch, Product)


def _readline(f, limit: int) -> bytes:
    try:
        return f.readline(limit)
    except TypeError:  # Beam's CompressedFile (gzip) reads whole lines only
        return f.readline()


def _read_json_lines(path: str) -> Iterator[Product | DeadLetter]:
    from apache_beam.io.filesystems import FileSystems

    from transforms.retail_json import iter_jsonl
    from transforms.validation import Invalid, validate_product

    fmt = "catalog-jsonl"
    try:
        f = FileSystems.open(path)
    except Exception as exc:
        yield _dead(path, 0, fmt, "", "UNREADABLE_FILE", f"{type(exc).__name__}: {exc}")
        return
    offset = 0
    with f:
        while True:
            try:
                raw = _readline(f, MAX_LINE_BYTES + 1)
            except Exception as exc:  # e.g. a truncated gzip file: what was read stands, the rest is one dead letter
                yield _dead(path, offset, fmt, "", "UNREADABLE_FILE", f"{type(exc).__name__}: {exc} (after byte {offset})")
                return
            if not raw:
                return
            at, offset = offset, offset + len(raw)
            if len(raw) > MAX_LINE_BYTES:
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line, bounded reads
                    raw = _readline(f, MAX_LINE_BYTES)
                    offset += len(raw)
                yield _dead(path, at, fmt, b"", "RECORD_TOO_LARGE", f"a line of over {MAX_LINE_BYTES} bytes at byte {at}")
                continue
            # ingest's line checks (UTF-8, JSON, lone surrogates), then the product's
            for _, text, record in iter_jsonl(raw, at, max_record_bytes=MAX_LINE_BYTES):
                try:
                    if isinstance(record, Invalid):
                        raise record
                    yield validate_product(record)
                except Invalid as exc:
                    yield _dead(path, at, fmt, text, exc.reason, f"{path} byte {at}: {exc.detail}")


def read_catalog_file(path: str, *, columns: Sequence[str] | None = None) -> Iterator[Product | DeadLetter]:
    """Every record of one catalog file (local or any FileSystems scheme) as a Product or a DeadLetter.

    ``.parquet`` files are read as Parquet, anything else as JSON lines
    (gzip by extension, through Beam's FileSystems). Lines are read one at
    a time, so memory is bounded by the longest line (``MAX_LINE_BYTES``),
    not by the file. ``columns`` limits what is read from Parquet (the
    Products get their defaults for the rest; ``id`` and ``title`` are
    always read); JSON
    lines are always validated whole.
    """
    if path.endswith(".parquet"):
        yield from _read_parquet(path, columns)
    else:
        yield from _read_json_lines(path)

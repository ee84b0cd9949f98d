"""The ingestion transform: files in, validated Retail-shaped Parquet out.

Work flows as Arrow record batches, never as one Python object per row:

1. ``PlanChunks``: each input file becomes line-aligned byte ranges.
2. ``ParseChunks``: a chunk is parsed and validated in one vectorized step;
   bad rows are written as dead letters next to it; valid rows are split by
   a stable hash of their grouping key (invoice, product id, event key) and
   each slice is written to a staging file ("shuffle through files": only
   file names travel through Beam's shuffle, so neither a worker nor the
   runner holds the data set in memory).
3. ``BuildPartitions``: all slices of one partition are read together
   (each checked against the row count its writer announced), deduplicated
   and turned into output records, written as one shard per output. Both
   steps count the rows and slices they hand over, so the run summary can
   say which hand-off lost rows if any did.
4. ``BuildProducts`` (online-retail only): per-product partial aggregates
   from every partition are merged into the catalog.
5. ``Commit``: once everything is written, the staged outputs replace the
   previous ones and the counts are written for the run summary.

Re-running on the same input gives byte-identical Parquet: shard contents
are sorted by key and shard membership depends only on the key.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms import online_retail
from transforms.errors import ConfigError, SourceError, StagingError
from transforms.ftp import redact
from transforms.io import Chunk, commit_outputs, join_path, plan_chunks, read_chunk, write_parquet, write_text
from transforms.records import DEAD_LETTER_SCHEMA, PRODUCT_SCHEMA, USER_EVENT_SCHEMA, retail_json_rows
from transforms.retail_json import ColumnMapping, dedupe_records, iter_csv, iter_jsonl, iter_parquet, parse_records, unjoined_events
from transforms.validation import is_currency

__all__ = ["FORMATS", "IngestConfig", "IngestFiles", "merge_counts"]

_LOG = logging.getLogger(__name__)
FORMATS = ("online-retail", "retail-json", "csv", "parquet")
COUNTS_FILE = "_counts.json"
METRICS_NAMESPACE = "aisle.ingest"


@dataclass(frozen=True)
class IngestConfig:
    """What to ingest and how; validated on construction."""

    format: str
    out: str
    kind: str = "events"  # for retail-json / csv / parquet: "products" or "events"
    mapping: ColumnMapping | None = None
    currency: str = "GBP"
    partitions: int = 4
    chunk_bytes: int = 4 << 20
    retail_json: bool = False
    catalog_ids_path: str | None = None  # products Parquet whose ids decide "unjoined"
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    run_id: str = "run"
    emit_tables: bool = False  # also yield (output name, Arrow table) for sinks such as BigQuery

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ConfigError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if self.kind not in ("products", "events"):
            raise ConfigError(f"kind must be 'products' or 'events', got {self.kind!r}")
        if self.format in ("csv", "parquet") and self.mapping is None:
            raise ConfigError(f"--format {self.format} needs a column mapping, for example --mapping id=sku,title=name")
        if not is_currency(self.currency):
            raise ConfigError(f"currency {self.currency!r} is not an ISO 4217 code (for example GBP, EUR, USD)")
        if self.partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {self.partitions}")
        if self.chunk_bytes < 1024:
            raise ConfigError(f"chunk_bytes must be >= 1024, got {self.chunk_bytes}")

    @property
    def staging(self) -> str:
        return join_path(self.out, f"_staging-{self.run_id}")

    @property
    def outputs(self) -> tuple[str, ...]:
        if self.format == "online-retail":
            return ("products", "events", "cancellations")
        return (self.kind,)


def merge_counts(counts: Sequence[Mapping]) -> dict:
    """Sum nested count dicts ({"read": 3, "reasons": {"BAD_PRICE": 1}})."""
    total: dict = {}
    for c in counts:
        for key, value in c.items():
            if isinstance(value, Mapping):
                sub = total.setdefault(key, {})
                for k, v in value.items():
                    sub[k] = sub.get(k, 0) + v
            else:
                total[key] = total.get(key, 0) + value
    return total


class _MergeCounts(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, counts):
        return merge_counts([acc, counts])

    def merge_accumulators(self, accs):
        return merge_counts(list(accs))

    def extract_output(self, acc):
        return acc


def _shard_name(index: int, total: int) -> str:
    return f"part-{index:05d}-of-{total:05d}"


def _write_output(cfg: IngestConfig, name: str, table: pa.Table, shard: str) -> list[str]:
    paths = [write_parquet(table, join_path(cfg.staging, name, f"{shard}.parquet"))]
    if cfg.retail_json and name != "dead_letter":
        lines = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in retail_json_rows(table))
        paths.append(write_text(lines, join_path(cfg.staging, f"{name}_retail_json", f"{shard}.jsonl")))
    return paths


def _emit(cfg: IngestConfig, name: str, table: pa.Table, shard: str):
    """Write one shard of an output; pass the table on when a further sink wants it."""
    yield from (beam.pvalue.TaggedOutput("written", p) for p in _write_output(cfg, name, table, shard))
    if cfg.emit_tables:
        yield beam.pvalue.TaggedOutput("tables", (name, table))


def _read_staged(slices: Sequence[tuple[str, int]]) -> pa.Table:
    """The staged slices of one partition, each checked against the row count its writer announced."""
    tables = []
    for path, rows in sorted(slices):
        with FileSystems.open(path) as f:
            table = pq.read_table(f)
        if table.num_rows != rows:
            raise StagingError(f"staged slice {path} holds {table.num_rows} rows; its writer wrote {rows}")
        tables.append(table)
    return pa.concat_tables(tables)


def _first_line(uri: str) -> str:
    with FileSystems.open(uri) as f:
        return f.readline().decode("utf-8", "replace")


class _ParseChunkFn(beam.DoFn):
    """Parse, validate and partition one chunk (see the module docstring)."""

    def __init__(self, cfg: IngestConfig, headers: Mapping[str, list[str]]):
        self.cfg = cfg
        self.headers = dict(headers)
        self.read_rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "read")
        self.dead_rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "dead_letter")

    def _parse(self, data: bytes, chunk: Chunk, base: int):
        cfg = self.cfg
        if cfg.format == "online-retail":
            parsed = online_retail.parse_chunk(
                data, source_file=chunk.uri, base_offset=base, now=cfg.now, first_chunk=chunk.start == 0
            )
            return parsed.lines, parsed.dead, parsed.read, parsed.reasons, "invoice"
        if cfg.format == "retail-json":
            items = iter_jsonl(data, base)
        elif cfg.format == "csv":
            items = iter_csv(data, base, None if chunk.start == 0 else self.headers.get(chunk.uri), cfg.mapping)
        else:
            items = iter_parquet(data, cfg.mapping, uri=chunk.uri)
        parsed = parse_records(
            items, kind=cfg.kind, source_file=chunk.uri, source_format=cfg.format, now=cfg.now, default_currency=cfg.currency
        )
        return parsed.records, parsed.dead, parsed.read, parsed.reasons, "_key"

    def process(self, chunk: Chunk):
        cfg = self.cfg
        try:
            data, base = read_chunk(chunk)
            valid, dead, read, reasons, key = self._parse(data, chunk, base)
        except SourceError as exc:  # an unreadable file is one dead letter, not a failed job
            _LOG.error("%s", exc)
            valid = None
            dead = pa.Table.from_pylist(
                [dict(source_file=redact(chunk.uri), source_offset=chunk.start, source_format=cfg.format, raw="", reason="UNREADABLE_FILE", detail=str(exc))],
                schema=DEAD_LETTER_SCHEMA,
            )
            read, reasons, key = 1, collections.Counter({"UNREADABLE_FILE": 1}), None
        self.read_rows.inc(read)
        self.dead_rows.inc(dead.num_rows)
        if dead.num_rows:
            for path in _write_output(cfg, "dead_letter", dead, f"part-{chunk.name}"):
                yield beam.pvalue.TaggedOutput("written", path)
            if cfg.emit_tables:
                yield beam.pvalue.TaggedOutput("tables", ("dead_letter", dead))
        parts = [] if valid is None else online_retail.partition_ids(valid, key, cfg.partitions)
        for part, rows in parts:
            path = join_path(cfg.staging, "_shuffle", f"{part:05d}", f"{chunk.name}.parquet")
            write_parquet(rows, path)
            yield part, (path, rows.num_rows)
        stages = {"staged_rows": sum(rows.num_rows for _, rows in parts), "staged_slices": len(parts)}
        yield beam.pvalue.TaggedOutput(
            "counts", {"read": read, "dead_letter": dead.num_rows, "reasons": dict(reasons), "chunks": 1, "stages": stages}
        )


class _BuildPartitionFn(beam.DoFn):
    """Deduplicate one partition and write its shard of every output."""

    def __init__(self, cfg: IngestConfig):
        self.cfg = cfg
        self._catalog_ids = None

    def setup(self):
        if self.cfg.catalog_ids_path:
            from transforms.io import expand_inputs

            ids = set()
            for path in expand_inputs(self.cfg.catalog_ids_path):
                with FileSystems.open(path) as f:
                    ids.update(pq.read_table(f, columns=["id"])["id"].to_pylist())
            self._catalog_ids = frozenset(ids)

    def process(self, element):
        cfg = self.cfg
        part, slices = element
        lines = _read_staged(list(slices))
        shard = _shard_name(part, cfg.partitions)
        counts: dict = {"records": {}, "outputs": {}, "stages": {"unstaged_rows": lines.num_rows, "unstaged_slices": len(slices)}}
        if cfg.format == "online-retail":
            built = online_retail.build_events(lines, currency=cfg.currency)
            counts["duplicates"] = built["duplicates"]
            counts["outputs"] = dict(built["rows"])
            for name in ("events", "cancellations"):
                counts["records"][name] = built[name].num_rows
                yield from _emit(self.cfg, name, built[name], shard)
            partials = online_retail.product_partials(built["lines"])
            for ppart, rows in online_retail.partition_ids(partials, "stock", cfg.partitions):
                yield beam.pvalue.TaggedOutput("partials", (ppart, online_retail.compact(rows)))
        else:
            records, duplicates = dedupe_records(lines, kind=cfg.kind)
            counts["duplicates"] = duplicates
            counts["outputs"][cfg.kind] = records.num_rows
            counts["records"][cfg.kind] = records.num_rows
            if cfg.kind == "events" and self._catalog_ids is not None:
                counts["unjoined_events"] = unjoined_events(records, self._catalog_ids)
            yield from _emit(self.cfg, cfg.kind, records, shard)
        yield beam.pvalue.TaggedOutput("counts", counts)



class _BuildProductsFn(beam.DoFn):
    """Merge the per-product partial aggregates of one product partition into Products."""

    def __init__(self, cfg: IngestConfig):
        self.cfg = cfg

    def process(self, element):
        part, tables = element
        partials = pa.concat_tables(list(tables))
        products = online_retail.build_products(partials, currency=self.cfg.currency)
        shard = _shard_name(part, self.cfg.partitions)
        yield from _emit(self.cfg, "products", products, shard)
        keys = [{k for k, _ in a or []} for a in products["attributes"].to_pylist()]
        flagged = sum("non_product" in k for k in keys)
        imputed = sum("imputed_fields" in k for k in keys)
        yield beam.pvalue.TaggedOutput(
            "counts", {"records": {"products": products.num_rows}, "flags": {"non_product": flagged, "imputed_title": imputed}}
        )


def _commit(_, cfg: IngestConfig, counts: dict, written: list[str]) -> dict:
    names = list(cfg.outputs) + ["dead_letter"]
    if cfg.retail_json:
        names += [f"{n}_retail_json" for n in cfg.outputs]
    # Outputs that received no records still exist, empty, so readers find them.
    empty = {"products": PRODUCT_SCHEMA, "events": USER_EVENT_SCHEMA, "cancellations": USER_EVENT_SCHEMA, "dead_letter": DEAD_LETTER_SCHEMA}
    for name in names:
        if not any(f"/{name}/" in p.replace("\\", "/") for p in written):
            schema = empty.get(name)
            if schema is not None:
                write_parquet(schema.empty_table(), join_path(cfg.staging, name, "part-empty.parquet"))
    commit_outputs(cfg.staging, cfg.out, names)
    write_text(json.dumps(counts, sort_keys=True), join_path(cfg.out, COUNTS_FILE))
    return counts


class IngestFiles(beam.PTransform):
    """Ingest input files into ``cfg.out`` (see the module docstring).

    Applied to the pipeline root. Returns ``{"counts": ..., "tables": ...}``:
    one element, the counts dict, once the outputs are committed; and, when
    ``cfg.emit_tables`` is set, ``(output name, Arrow table)`` pairs for
    further sinks.

    >>> # p | IngestFiles(["data/*.csv"], IngestConfig("online-retail", "out/"))
    """

    def __init__(self, uris: Sequence[str], cfg: IngestConfig):
        super().__init__()
        if not uris:
            raise ConfigError("no input files to ingest")
        self.uris = sorted(uris)
        self.cfg = cfg
        self.headers = {}
        if cfg.format == "csv":  # later chunks of a file need its header
            self.headers = {u: next(csv.reader([_first_line(u).rstrip("\r\n")])) for u in self.uris if not u.startswith("ftp://")}

    def expand(self, pbegin):
        cfg = self.cfg
        # Parquet files are read whole (their footer is at the end).
        chunk_bytes = cfg.chunk_bytes if cfg.format != "parquet" else 1 << 62
        chunks = (
            pbegin
            | "ListInputs" >> beam.Create(list(enumerate(self.uris)))
            | "PlanChunks" >> beam.FlatMap(lambda iu, n: plan_chunks(iu[1], iu[0], chunk_bytes=n), chunk_bytes)
            | "SpreadChunks" >> beam.Reshuffle()
        )
        parsed = chunks | "ParseChunks" >> beam.ParDo(_ParseChunkFn(cfg, self.headers)).with_outputs(
            "counts", "written", "tables", main="parts"
        )
        built = (
            parsed.parts
            | "GroupPartitions" >> beam.GroupByKey()
            | "BuildPartitions" >> beam.ParDo(_BuildPartitionFn(cfg)).with_outputs("counts", "written", "partials", "tables")
        )
        counts = [parsed.counts, built.counts]
        written = [parsed.written, built.written]
        tables = [parsed.tables, built.tables]
        if cfg.format == "online-retail":
            products = (
                built.partials
                | "GroupProductPartials" >> beam.GroupByKey()
                | "BuildProducts" >> beam.ParDo(_BuildProductsFn(cfg)).with_outputs("counts", "written", "tables")
            )
            counts.append(products.counts)
            written.append(products.written)
            tables.append(products.tables)
        total = counts | "FlattenCounts" >> beam.Flatten() | "SumCounts" >> beam.CombineGlobally(_MergeCounts())
        paths = written | "FlattenWritten" >> beam.Flatten()
        committed = (
            pbegin
            | "CommitTrigger" >> beam.Create([None])
            | "Commit" >> beam.Map(_commit, cfg, beam.pvalue.AsSingleton(total), beam.pvalue.AsList(paths))
        )
        return {"counts": committed, "tables": tables | "FlattenTables" >> beam.Flatten()}

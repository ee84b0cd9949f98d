"""Deterministic sharding: output files and inference batches that depend only on the data.

Beam decides bundles, and so the batches ``BatchElements`` makes and the
order in which grouped values arrive, differently from run to run and with
another worker count. Two things here remove that from a job's output.

:class:`WriteSortedShards` writes a PCollection of dict rows as Parquet
(and optionally JSON lines) shards whose contents depend only on the rows,
never on bundling, worker count or retries:

* the number of shards is ``ceil(rows / rows_per_shard)`` (at least
  ``min_shards``), from a global count: a one-integer side input;
* a row's shard is a stable hash (CRC-32) of its sort key, so the same row
  always lands in the same shard;
* each shard is sorted by its sort key, ties by the whole row as JSON, and
  written once to ``<folder>/part-SSSSS-of-NNNNN.parquet``.

So no worker holds more than one shard (about ``rows_per_shard`` rows) in
memory, and a re-run, or a run with another worker count, writes
byte-identical files. Write into a staging folder and publish it with
:func:`transforms.io.commit_outputs`: a retried shard overwrites its own
file, and a reader never sees a half-written folder. The rows may cross
the shuffle in a more compact form than a dict (tuples, say), read by a
:class:`RowLayout` that also builds the shard's table from them.

>>> # rows | "WriteEntities" >> WriteSortedShards("out/_staging-1/entities", ENTITY_SCHEMA, ("product_id",))

:class:`FixedBatches` + :class:`FixedBatchHandler` do the same for model
inputs: a model whose output for one element depends on the rest of its
batch (dynamic INT8 quantization computes activation scales per batch;
a batched matrix product may round differently for another batch shape)
then still gives the same output on every run.

>>> # keyed | FixedBatches(128) | RunInference(FixedBatchHandler(NerModelHandler(path)))
"""

from __future__ import annotations

import itertools
import json
import operator
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa

from transforms.beam_ml import ModelHandler, PredictionResult
from transforms.errors import ConfigError

__all__ = [
    "ROWS_PER_SHARD",
    "FixedBatchHandler",
    "RowLayout",
    "FixedBatches",
    "TaggedFixedBatches",
    "WriteSortedShards",
    "batch_group",
    "shard_index",
    "shard_name",
    "sorted_elements",
    "sorted_rows",
]


# Rows per output shard. One worker writes a shard, so this is also the unit of parallel writing and the
# bound on a writer's memory. At 200,000 rows one worker wrote the 10x enriched catalog alone (4.2 s of a
# 71 s two-worker run); at 25,000 a 10x output (37,610 products, 47,800 visitors) was 2 shards, one per
# worker at best, of sizes set by a hash. 10,000 recommendation rows are about 0.9 MB of Parquet (the 10x
# frequently-bought-together output: 3.3 MB for 37,000 rows).
ROWS_PER_SHARD = 10_000


def shard_name(index: int, total: int) -> str:
    """``part-00001-of-00004``: the file stem of shard ``index`` of ``total``."""
    return f"part-{index:05d}-of-{total:05d}"


def shard_index(key: Sequence, n_shards: int) -> int:
    """The shard of a sort key: CRC-32 of its values (stable across processes, unlike ``hash``)."""
    text = "\x1f".join("" if v is None else str(v) for v in key)
    return zlib.crc32(text.encode("utf-8")) % n_shards


def _row_json(row: dict) -> str:
    return json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)


class RowLayout:
    """How :class:`WriteSortedShards` reads its elements: here, dict rows of the output schema.

    A subclass lets a job shuffle something more compact than a dict per
    row (a tuple, say) and build the shard's table from it directly: the
    local runner decodes and encodes every value it groups, and a coder
    spends its time per object (see :class:`transforms.recommend.RecommendationLayout`).
    The sort key, the row (for ties and for anything that needs the dict)
    and the table must agree: the shard's rows, in order, are
    ``[self.row(e) for e in ordered]``.
    """

    def __init__(self, keys: Sequence[str]):
        self.keys = tuple(keys)

    def sort_key(self, element) -> tuple:
        """The values of the sort-key columns, in :attr:`keys` order."""
        return tuple([element.get(k) for k in self.keys])

    def row(self, element) -> dict:
        """The element as a dict row of the schema."""
        return element

    def table(self, ordered: list, schema: pa.Schema) -> pa.Table:
        """The shard's table, rows in the order given."""
        return pa.Table.from_pylist([self.row(e) for e in ordered], schema=schema)


def sorted_elements(elements, layout: RowLayout) -> list:
    """``elements`` ordered by ``layout.sort_key`` (``None`` last), elements with equal keys by their whole row as JSON.

    Only rows whose keys tie are turned into JSON: serializing every row
    cost 0.7 s of a 37,610-product shard whose ids are all distinct.
    """

    sort_key = layout.sort_key
    if len(layout.keys) == 1:  # most writers: one key column, and no tuple of pairs to build per element
        keyed = sorted(((((v := sort_key(e)[0]) is None, v), e) for e in elements), key=operator.itemgetter(0))
    else:
        keyed = sorted(((tuple([(v is None, v) for v in sort_key(e)]), e) for e in elements), key=operator.itemgetter(0))
    out: list = []
    for _, run in itertools.groupby(keyed, key=operator.itemgetter(0)):
        tied = [e for _, e in run]
        if len(tied) > 1:
            tied.sort(key=lambda e: _row_json(layout.row(e)))
        out.extend(tied)
    return out


def sorted_rows(rows, keys: Sequence[str]) -> list[dict]:
    """Dict ``rows`` ordered by ``keys`` (``None`` last), rows with equal keys by the whole row as JSON."""
    return sorted_elements(rows, RowLayout(keys))


class _WriteShardFn(beam.DoFn):
    def __init__(self, folder: str, schema: pa.Schema, layout: RowLayout, jsonl: Callable | None, jsonl_prefix: str):
        self.folder, self.schema, self.layout = folder, schema, layout
        self.jsonl, self.jsonl_prefix = jsonl, jsonl_prefix

    def process(self, element, n_shards: int):
        from transforms.io import join_path, write_parquet, write_text

        index, elements = element
        ordered = sorted_elements(elements, self.layout)
        stem = shard_name(index, n_shards)
        yield write_parquet(self.layout.table(ordered, self.schema), join_path(self.folder, f"{stem}.parquet"))
        if self.jsonl is not None:
            text = "".join(self.jsonl(e) + "\n" for e in ordered)
            yield write_text(text, join_path(self.folder, f"{self.jsonl_prefix}-{stem[5:]}.jsonl"))


class WriteSortedShards(beam.PTransform):
    """Write dict rows to ``folder`` as sorted, hash-sharded Parquet (see the module docstring).

    ``sort_keys``: the columns that order a shard and choose it (their
    values should be mostly distinct: rows with equal keys share a shard).
    ``rows_per_shard`` bounds a writer's memory; ``jsonl`` (optional) turns
    a row into one JSON line, written beside each Parquet shard as
    ``<jsonl_prefix>-SSSSS-of-NNNNN.jsonl``. Returns the written paths.
    Shards that receive no rows get no file; callers that need a file per
    output write an empty one.

    ``layout``: how the elements are read (:class:`RowLayout`, dict rows of
    ``schema``, by default); ``jsonl`` is then given an element.

    ``n_rows``: a singleton PCollection holding the number of rows, when the
    pipeline already knows it from an upstream collection (one row per key
    of it). Counted here otherwise, and the count depends on every row, so
    the rows then wait in the runner until all are made, and are read back
    in a stage of their own; with ``n_rows`` computed upstream, the shard
    assignment runs in the stage that makes the rows. Only the number of
    shards depends on it: an estimate changes the files' sizes, not
    their rows.
    """

    def __init__(
        self,
        folder: str,
        schema: pa.Schema,
        sort_keys: Sequence[str],
        *,
        rows_per_shard: int = ROWS_PER_SHARD,
        min_shards: int = 1,
        jsonl: Callable[[Any], str] | None = None,
        jsonl_prefix: str = "predictions",
        n_rows: beam.PCollection | None = None,
        layout: RowLayout | None = None,
    ):
        super().__init__()
        if not sort_keys:
            raise ConfigError("WriteSortedShards needs at least one sort key column")
        missing = [k for k in sort_keys if k not in schema.names]
        if missing:
            raise ConfigError(f"sort keys {missing} are not columns of the output schema ({schema.names})")
        if rows_per_shard < 1 or min_shards < 1:
            raise ConfigError(f"rows_per_shard and min_shards must be >= 1, got {rows_per_shard} and {min_shards}")
        self.folder, self.schema, self.sort_keys = folder, schema, tuple(sort_keys)
        self.rows_per_shard, self.min_shards = rows_per_shard, min_shards
        self.jsonl, self.jsonl_prefix = jsonl, jsonl_prefix
        self.n_rows = n_rows
        self.layout = layout if layout is not None else RowLayout(self.sort_keys)
        if self.layout.keys != self.sort_keys:
            raise ConfigError(f"the layout sorts by {self.layout.keys}, the writer by {self.sort_keys}")

    def expand(self, rows):
        per, least, layout = self.rows_per_shard, self.min_shards, self.layout
        count = self.n_rows if self.n_rows is not None else rows | "CountRows" >> beam.combiners.Count.Globally()
        n_shards = count | "ShardCount" >> beam.Map(lambda n: max(least, -(-n // per)))
        n = beam.pvalue.AsSingleton(n_shards)
        return (
            rows
            | "AssignShard" >> beam.Map(lambda e, total: (shard_index(layout.sort_key(e), total), e), total=n)
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShardFn(self.folder, self.schema, layout, self.jsonl, self.jsonl_prefix), n_shards=n)
        )


def _key_text(key) -> str:
    if isinstance(key, tuple):
        return "\x1f".join(str(k) for k in key)
    return str(key)


def batch_group(key, n_groups: int) -> int:
    """The group (``0 .. n_groups - 1``) of an element with ``key``: a CRC-32 of the key, stable across runs."""
    return zlib.crc32(_key_text(key).encode("utf-8")) % n_groups


def _batch_count(n: int, size: int) -> int:
    return max(1, -(-n // size))


def _cut_batches(values, size: int):
    """A group's ``(key, example)`` values, sorted by key, in chunks of ``size``."""
    ordered = sorted(values, key=lambda e: _key_text(e[0]))
    for i in range(0, len(ordered), size):
        yield tuple(ordered[i : i + size])


class FixedBatches(beam.PTransform):
    """``(key, example)`` -> tuples of at most ``batch_size`` of them, the same tuples on every run.

    Elements are spread over ``ceil(n / batch_size)`` groups by a CRC-32 of
    their key (a global count, one integer, sets ``n``), sorted by key in
    each group and cut into chunks of ``batch_size``: the batches depend
    only on the keys, never on bundling or worker count. A worker holds one
    group (about ``batch_size`` elements) at a time. Keys should be distinct.
    """

    def __init__(self, batch_size: int):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def expand(self, keyed):
        size = self.batch_size

        def bucket(kv, n):
            return batch_group(kv[0], n), kv

        n_groups = (
            keyed
            | "CountElements" >> beam.combiners.Count.Globally()
            | "GroupCount" >> beam.Map(_batch_count, size)
        )
        return (
            keyed
            | "AssignBatch" >> beam.Map(bucket, n=beam.pvalue.AsSingleton(n_groups))
            | "GroupBatches" >> beam.GroupByKey()
            | "CutBatches" >> beam.FlatMap(lambda kv: _cut_batches(kv[1], size))
        )


class TaggedFixedBatches(beam.PTransform):
    """``{tag: (key, example) PCollection}`` -> ``(tag, batch)``: :class:`FixedBatches` of several inputs, in one shuffle.

    Each input is cut into the batches ``FixedBatches(sizes[tag])`` would
    cut it into alone, but all are grouped by one ``GroupByKey``, so the
    step after it gets every input's batches in one stage. Where a runner
    runs a job stage after stage (the local ``FnApiRunner``), a small input's
    few batches (a cold-start lookup, say) then run on one worker while the
    others work through a large input's batches, instead of in a stage of
    their own with the other workers idle.
    """

    def __init__(self, sizes: Mapping[str, int]):
        super().__init__()
        if not sizes or any(size < 1 for size in sizes.values()):
            raise ConfigError(f"batch sizes must be >= 1, one per tag, got {dict(sizes)}")
        self.sizes = dict(sizes)

    def expand(self, inputs):
        sizes = self.sizes
        if set(inputs) - set(sizes):
            raise ConfigError(f"no batch size for {sorted(set(inputs) - set(sizes))}")

        def bucket(kv, n, tag):
            return (tag, batch_group(kv[0], n[tag])), kv

        tags = [pcoll | f"Tag{tag.title()}" >> beam.Map(lambda _, t=tag: t) for tag, pcoll in sorted(inputs.items())]
        n_groups = beam.pvalue.AsDict(
            tags
            | "FlattenTags" >> beam.Flatten()
            | "CountPerTag" >> beam.combiners.Count.PerElement()
            | "GroupCounts" >> beam.Map(lambda kv: (kv[0], _batch_count(kv[1], sizes[kv[0]])))
        )
        keyed = [
            pcoll | f"AssignBatch{tag.title()}" >> beam.Map(bucket, n=n_groups, tag=tag) for tag, pcoll in sorted(inputs.items())
        ]
        return (
            keyed
            | "FlattenBatches" >> beam.Flatten()
            | "GroupBatches" >> beam.GroupByKey()
            | "CutBatches" >> beam.FlatMap(lambda kv: ((kv[0][0], batch) for batch in _cut_batches(kv[1], sizes[kv[0][0]])))
        )


class FixedBatchHandler(ModelHandler):
    """Runs an unkeyed ModelHandler on the batches :class:`FixedBatches` made.

    An element is a tuple of ``(key, example)``; its result's ``inference``
    is ``[(key, PredictionResult), ...]`` in the same order (flatten it with
    ``beam.FlatMap(lambda r: r.inference)`` to get what a
    ``KeyedModelHandler`` would give). Each fixed batch goes to the model
    as one call, whatever batches RunInference itself would make. A
    failure's batch (``with_exception_handling``) is a list of such tuples.
    """

    def __init__(self, inner: ModelHandler):
        super().__init__()
        self._inner = inner

    def load_model(self):
        return self._inner.load_model()

    def run_inference(self, batch, model, inference_args=None):
        out = []
        for group in batch:
            results = list(self._inner.run_inference([example for _, example in group], model, inference_args))
            out.append(PredictionResult(group, [(key, r) for (key, _), r in zip(group, results)]))
        return out

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": 1}

    def share_model_across_processes(self) -> bool:
        return self._inner.share_model_across_processes()

    def get_metrics_namespace(self) -> str:
        return self._inner.get_metrics_namespace()

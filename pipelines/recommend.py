"""``aisle recommend``: similar items, frequently bought together and recommended-for-you, in Beam.

Reads the ingest output (``<dir>/events``: purchase-complete UserEvents,
``<dir>/products``: Products, Parquet; single ``.parquet`` files work too)
and a trained model folder (``--model``; when none is given, one is trained
from the events first), and writes under ``--out``:

* ``similar_items/``: for every product, its ``k`` nearest items by cosine
  over the learned item embeddings (Retail API model type ``similar-items``);
* ``frequently_bought_together/``: for every product, the model's
  basket-completion scores for the product alone, blended with cosine
  co-occurrence counted over the events (``frequently-bought-together``);
* ``recommended_for_you/``: for every visitor with purchases, the model's
  scores for their purchase history (the 48 most recent distinct
  products), those products excluded (``recommended-for-you``);
* ``dead_letter/``: queries the model failed on, as DeadLetter rows;
* ``summary.json``: events ``read``, ``used`` and ``dropped`` per reason
  (:data:`transforms.recommend.DROP_REASONS`: views, refunds, empty
  baskets, baskets of postage only; read == used + dropped, checked),
  counts per output, fallbacks, the model used, seconds.

Outputs are staged under ``<out>/_staging-<id>`` and swapped into place
only when the whole job has succeeded, so a reader never sees a partial
output; files are sorted, hash-sharded and byte-identical across re-runs
and worker counts (model batches too are fixed by the data). On Dataflow::

    aisle recommend --events gs://<project>-aisle-dev-processed/ingest/events \
        --catalog gs://<project>-aisle-dev-processed/ingest/products \
        --model gs://<project>-aisle-dev-models/recommender/<version> --out gs://<project>-aisle-dev-processed/recommend \
        --runner DataflowRunner --project <project> --region europe-west1 \
        --temp_location gs://<project>-aisle-dev-dataflow/tmp \
        --sdk_container_image europe-west1-docker.pkg.dev/<project>/aisle/aisle:<tag> --sdk_location container

Each output folder holds ``part-*.parquet`` (``RECOMMENDATION_SCHEMA``:
key, model_type, results[{id, score}], fallback) and
``predictions-*.jsonl`` (one Retail-API-style prediction per line).
Cold starts are flagged in ``fallback``: a product the model does not know
gets, as similar items, the known products with the closest titles
(``"title"``, TF-IDF cosine) when the catalog gives it a title that shares
words with them, else the most popular items (``"popularity"``), as it does
for frequently-bought-together; a visitor whose history holds no known
product gets the most popular items (``"popularity"``).
Every product of the catalog and of the events gets exactly one row in
each product output, and every visitor one row in ``recommended_for_you``.
"""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
import click
from apache_beam.io.filesystems import FileSystems

from transforms.beam_ml import RunInference
from transforms.counts import WriteCounts, read_counts
from transforms.errors import ConfigError
from transforms.inference.recommend import (
    SERVING_TFLITE,
    SavedModelQueryHandler,
    TFLiteQueryHandler,
    load_item_embeddings,
    load_vocab,
)
from transforms.item_index import DEFAULT_NPROBE, INDEX_FILE, load_item_index
from transforms.records import DEAD_LETTER_SCHEMA
from transforms.recommend import (
    RECOMMENDATION_SCHEMA,
    ApplyFallback,
    CooccurrenceCounts,
    ItemCounts,
    SimilarItemsFn,
    DROP_REASONS,
    blend_lists,
    pack_items,
    RecommendationLayout,
    purchases_of_batch,
    unpack_items,
)

__all__ = ["LIST_ROWS_PER_SHARD", "OUTPUTS", "EVENT_COUNTS", "add_recommend_steps", "event_accounting", "resolve_engine", "resolve_neighbours", "train_model_from_events", "run", "command", "index_command"]

# Rows per shard of the recommendation outputs (transforms.shards.ROWS_PER_SHARD is 10,000). A writer holds
# its shard's rows as dicts, sorted, then as an Arrow table and as JSON lines; at 10x the retail volume with
# two workers the largest worker peaked at 660 / 681 MiB with shards of 10,000 rows and 585 / 603 MiB with
# 4,096, in the same time (34.9 / 34.6 and 34.9 / 35.6 s, alternating runs). At 10x the shards are 0.20-0.39 MB
# of Parquet: 10, 10 and 12 files for similar items, frequently bought together and recommended for you.
LIST_ROWS_PER_SHARD = 4096

# output folder -> Retail API model type
OUTPUTS = {
    "similar_items": "similar-items",
    "frequently_bought_together": "frequently-bought-together",
    "recommended_for_you": "recommended-for-you",
}


@functools.lru_cache(maxsize=4)
def _cached_vocab(model_dir: str):
    return load_vocab(model_dir)


class _ModelVocab:
    """The model's item vocabulary, read from ``model_dir`` on first use in each worker process.

    Building the graph therefore needs neither the model nor access to
    ``gs://``; the vocabulary is bounded by the model (one id and one count
    per trained item), never by the number of events.
    """

    def __init__(self, model_dir: str):
        self.model_dir = model_dir

    # methods, not properties: Beam's type inference reads attributes of
    # objects a lambda captures, and must not load the model by doing so
    def load(self):
        return _cached_vocab(self.model_dir)

    def ids(self):
        return self.load().ids

    def __contains__(self, item) -> bool:
        return item in self.load()

    def __len__(self) -> int:
        return len(self.load())

    def encode(self, items):
        return self.load().encode(items)

    def index(self, item):
        return self.load().index(item)


def _parquet_pattern(location: str) -> str:
    if location.endswith(".parquet") or any(ch in location for ch in "*?["):
        return location
    return location.rstrip("/") + "/*.parquet"


EVENT_COUNTS = "event_counts.json"
# the UserEvent columns purchases_of_batch reads
EVENT_COLUMNS = ["eventType", "visitorId", "eventTime", "productDetails", "purchaseTransaction"]


class _ReadParquet(beam.PTransform):
    """Record batches of the Parquet files at ``location`` (a folder, a file or a pattern), read in parallel.

    The files are matched and split into ranges inside the pipeline, and the
    ranges are spread over the workers (``ReadAllFromParquetBatched``): a
    root read would leave all of it to the one worker holding the impulse.
    A local location that matches no file is a ConfigError when the graph
    is built; a remote one is matched by the workers.
    """

    def __init__(self, location: str, columns: list[str] | None = None):
        super().__init__()
        self.pattern, self.columns = _parquet_pattern(location), columns
        if "://" not in location and not FileSystems.match([self.pattern])[0].metadata_list:
            raise ConfigError(f"no Parquet files at {location} (looked for {self.pattern})")

    def expand(self, pbegin):
        return (
            pbegin
            | "Pattern" >> beam.Create([self.pattern])
            | "ReadRanges" >> beam.io.ReadAllFromParquetBatched(columns=self.columns)
        )


def _purchases(batch):
    """A record batch of UserEvents -> ``(basket_id, (visitor, time_us, items))`` per purchase, and one count dict.

    The count dict (tagged ``counts``) holds ``read``, ``used`` and one key per
    :data:`transforms.recommend.DROP_REASONS` code met in the batch, so the
    job can account for every event it read.
    """
    purchases, counts = purchases_of_batch(batch)
    for basket_id, visitor, t, items in purchases:
        yield basket_id, (visitor, t, pack_items(items))  # one string for the shuffle, not one per item
    yield beam.pvalue.TaggedOutput("counts", dict(counts))


def event_accounting(counts: Mapping[str, int]) -> dict:
    """``read``, ``used``, ``dropped`` per reason and ``conservation`` (read == used + dropped) from the job's counts."""
    dropped = {reason: int(counts[reason]) for reason in DROP_REASONS if counts.get(reason)}
    read, used = int(counts.get("read", 0)), int(counts.get("used", 0))
    return {
        "read": read,
        "used": used,
        "dropped": dropped,
        "conservation": {"ok": read == used + sum(dropped.values()), "read": read, "used": used, "dropped": sum(dropped.values())},
    }


def _merge_basket(kv):
    """Events of one transaction id -> (visitor, time_us, items)."""
    parts = [(v, t, tuple(unpack_items(its))) for v, t, its in kv[1]]
    # grouped values arrive in any order: sort them so the basket is the same on every run
    parts = sorted(parts, key=lambda p: (p[1] is None, p[1] if p[1] is not None else 0, p[2], p[0] or ""))
    items: dict[str, None] = {}
    for _, _, its in parts:
        items.update(dict.fromkeys(its))
    visitor = next((v for v, _, _ in parts if v), None)
    times = [t for _, t, _ in parts if t is not None]
    return visitor, (min(times) if times else None), tuple(items)


def _history(kv, vocab, max_items: int):
    """(visitor, [(time_us, items)]) -> (visitor, query rows), most recent purchases last, each item once."""
    visitor = kv[0]
    purchases = [(t, tuple(unpack_items(items))) for t, items in kv[1]]
    # ties in time broken by the items, so the history is the same whatever order the purchases arrive in
    ordered = sorted(purchases, key=lambda p: (p[0] if p[0] is not None else float("-inf"), p[1]))
    last: dict[int, None] = {}
    for _, items in ordered:
        for row in vocab.encode(items):
            last.pop(row, None)
            last[row] = None
    rows = tuple(last)[-max_items:]
    return visitor, rows


def _to_ranked(kv, vocab):
    key, result = kv
    rows, scores = result.inference
    ids = vocab.ids()
    return key, tuple((ids[int(r)], float(s)) for r, s in zip(rows, scores))


def _blend(kv, alpha: float, k: int):
    key, grouped = kv
    learned = next(iter(grouped["learned"]), ())
    cooc = next(iter(grouped["cooccurrence"]), ())
    return key, tuple(blend_lists(learned, cooc, alpha=alpha, k=k))


def _dead_letter(failed, stage: str):
    batch, exc = failed
    for element in (e for group in batch for e in group):  # RunInference's batch of fixed batches
        key = element[0] if isinstance(element, tuple) and element else ""
        yield {
            "source_file": stage,
            "source_offset": -1,
            "source_format": "recommend-query",
            "raw": json.dumps([str(key), [int(r) for r in element[1]]] if isinstance(element, tuple) else str(element)),
            "reason": "INFERENCE_FAILED",
            "detail": f"{type(exc).__name__}: {exc}"[:2000],
        }


def _write(pcoll, out_dir: str, name: str, model_type: str, rows_per_shard: int, n_rows):
    from transforms.shards import WriteSortedShards

    label = "".join(part.title() for part in name.split("_"))  # similar_items -> SimilarItems
    layout = RecommendationLayout(model_type)
    (
        pcoll
        # a plain tuple crosses the writer's shuffle: a coder pickles a NamedTuple, its type's name with every value
        | f"{label}Rows" >> beam.Map(tuple)
        | f"Write{label}"
        >> WriteSortedShards(
            FileSystems.join(out_dir, name),
            RECOMMENDATION_SCHEMA,
            ("key",),
            rows_per_shard=rows_per_shard,
            jsonl=layout.jsonl,
            n_rows=n_rows,
            layout=layout,
        )
    )


def add_recommend_steps(
    pipeline: beam.Pipeline,
    *,
    events: str,
    catalog: str | None,
    model_dir: str,
    out_dir: str,
    k: int = 10,
    fbt_alpha: float = 0.5,
    engine: str = "saved_model",
    tflite_path: str | None = None,
    max_history_items: int | None = None,
    batch_size: int = 256,
    rows_per_shard: int = LIST_ROWS_PER_SHARD,
    neighbours: str = "exact",
    nprobe: int | None = None,
) -> dict[str, beam.PCollection]:
    """Add the recommendation steps to ``pipeline``; returns the three Recommendation PCollections.

    ``engine`` picks the handler for the model's queries: ``"saved_model"``
    (``<model_dir>/saved_model``), ``"tflite"`` (``tflite_path``, default
    ``<model_dir>/model_int8.tflite``) or ``"auto"`` (:func:`resolve_engine`:
    the INT8 file when it exists, else the SavedModel; the one choice that
    looks at the model folder while the graph is built, which is why
    :func:`run` resolves it, and not this function's default). ``fbt_alpha`` weights the learned
    scores against cosine co-occurrence in frequently-bought-together
    (1 = learned only, 0 = co-occurrence only). ``neighbours`` picks how
    similar items are found: ``"exact"`` (every item scored against every
    other) or ``"index"`` (the model's approximate index,
    ``<model_dir>/item_index.faiss``, :mod:`transforms.item_index`, searching
    ``nprobe`` clusters a query); :func:`run` resolves ``"auto"`` (the index
    when the model has one) with :func:`resolve_neighbours`.

    Building the graph reads no file (the vocabulary and embeddings are
    loaded by the workers), so a Dataflow job can be built and validated
    with ``--dry_run`` without the model at hand. Outputs are sorted,
    hash-sharded Parquet + JSON lines (:class:`transforms.shards.WriteSortedShards`),
    byte-identical across re-runs and worker counts.

    What a worker holds in memory, besides one shard of one output: the
    model (vocabulary, embeddings, SavedModel); one group per key
    (a transaction's events, a visitor's purchases, a group of baskets or
    an item shard's baskets and co-occurrence rows in
    :class:`transforms.recommend.CooccurrenceCounts`); and three side
    inputs, all bounded by the catalog, not by the number of events or
    visitors: the item table of ``CooccurrenceCounts`` (one id and one int
    per distinct item), the titles of the items the model knows (one string
    per model item, for the title fallback) and the popularity list
    (``k + 1`` items).
    ``benchmarks/scale.py`` records their sizes at 1x, 3x and 10x the retail
    volume.
    """
    from transforms.shards import FixedBatches, FixedBatchHandler, TaggedFixedBatches, WriteSortedShards

    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if not 0.0 <= fbt_alpha <= 1.0:
        raise ConfigError(f"fbt_alpha must be in [0, 1], got {fbt_alpha}")
    vocab = _ModelVocab(model_dir)
    engine = resolve_engine(engine, model_dir, tflite_path)
    if engine == "saved_model":
        handler_cls, uri = SavedModelQueryHandler, os.path.join(model_dir, "saved_model")
    elif engine == "tflite":
        handler_cls, uri = TFLiteQueryHandler, tflite_path or os.path.join(model_dir, SERVING_TFLITE)
    else:
        raise ConfigError(f"engine must be 'auto', 'saved_model' or 'tflite', got {engine!r}")
    max_history = max_history_items or 48

    def handler():
        # batches fixed by the data: a batched matrix product may round differently for another batch shape
        return FixedBatchHandler(handler_cls(uri, top_k=k, max_batch_size=batch_size))

    p = pipeline
    events_read = (
        p
        | "ReadEvents" >> _ReadParquet(events, EVENT_COLUMNS)
        # the output type is given: inferred from the generator it would include TaggedOutput, which GroupByKey refuses
        | "Purchases" >> beam.FlatMap(_purchases).with_output_types(tuple[str, Any]).with_outputs("counts", main="purchases")
    )
    purchases = events_read.purchases
    events_read.counts | "EventCounts" >> WriteCounts(FileSystems.join(out_dir, EVENT_COUNTS))
    baskets = purchases | "GroupByTransaction" >> beam.GroupByKey() | "MergeBasket" >> beam.Map(_merge_basket)
    basket_items = baskets | "BasketItems" >> beam.Map(lambda b: b[2])
    # counted once per basket (not once per item) and shared by popularity, co-occurrence and the item list
    item_counts = basket_items | "ItemCounts" >> ItemCounts()
    event_items = item_counts | "EventItems" >> beam.Keys()
    # similar items: cosine over the learned embeddings, in batches; a product the model does not know gets the
    # known products with the closest titles. Both kinds of batch come from one shuffle, so the few title batches
    # run beside the embedding batches, not in a stage of their own.
    batches, side_inputs = {}, {}
    if catalog:
        titles = (
            p
            | "ReadCatalog" >> _ReadParquet(catalog, ["id", "title"])
            | "CatalogTitles"
            >> beam.FlatMap(lambda batch: [(i, t or "") for i, t in zip(batch.column("id").to_pylist(), batch.column("title").to_pylist()) if i])
        )
        catalog_items = titles | "CatalogIds" >> beam.Keys()
        all_items = (catalog_items, event_items) | "AllItems" >> beam.Flatten()
        # an iterable, read only by a worker that gets a batch of cold titles (a dict would be built by every worker)
        side_inputs["known_titles"] = beam.pvalue.AsIter(titles | "KnownTitles" >> beam.Filter(lambda kv: kv[0] in vocab))
        batches[SimilarItemsFn.TITLES] = titles | "ColdTitles" >> beam.Filter(lambda kv: kv[0] not in vocab)
    else:
        all_items = event_items
    items = all_items | "DistinctItems" >> beam.Distinct()
    batches[SimilarItemsFn.EMBEDDINGS] = items | "KeyItems" >> beam.Map(lambda i: (i, None))

    popular = (
        item_counts
        | "TopPopular" >> beam.combiners.Top.Of(k + 1, key=lambda kv: (kv[1], kv[0]))
        | "PopularList"
        >> beam.Map(lambda top: tuple((i, c / (top[0][1] if top else 1)) for i, c in top))
    )

    if neighbours not in ("exact", "index"):
        raise ConfigError(f"neighbours must be 'exact' or 'index' (run() resolves 'auto'), got {neighbours!r}")
    if nprobe is not None and nprobe < 1:
        raise ConfigError(f"nprobe must be >= 1, got {nprobe}")
    load_index = None
    if neighbours == "index":
        load_index = functools.partial(load_item_index, FileSystems.join(model_dir, INDEX_FILE))
    load = functools.partial(load_item_embeddings, model_dir, unit_t=True)
    similar_fn = SimilarItemsFn(load, k, unit_t=True, load_index=load_index, nprobe=nprobe)
    neighbour_lists = (
        batches
        | "BatchItems" >> TaggedFixedBatches({SimilarItemsFn.EMBEDDINGS: 1024, SimilarItemsFn.TITLES: 2048})
        | "NearestNeighbours"
        >> beam.ParDo(similar_fn, **side_inputs).with_outputs(
            "unknown", "title", main="known"
        )
    )
    similar_in = (items, neighbour_lists.known, popular, neighbour_lists.title) if catalog else (items, neighbour_lists.known, popular)
    similar = similar_in | "SimilarFallback" >> ApplyFallback(k)

    # frequently bought together: learned single-item queries blended with cosine co-occurrence
    known_items = items | "KnownItems" >> beam.Filter(lambda i: i in vocab)
    learned, item_failures = (
        known_items
        | "ItemQuery" >> beam.Map(lambda i: (i, (vocab.index(i),)))
        | "ItemQueryBatches" >> FixedBatches(batch_size)
        | "ScoreItems" >> RunInference(handler()).with_exception_handling()
    )
    learned = learned | "UnbatchItems" >> beam.FlatMap(lambda r: r.inference) | "ItemResults" >> beam.Map(_to_ranked, vocab)
    # the purchase events bound the baskets (a transaction's events become one) and are counted as they are read
    n_purchases = purchases | "CountPurchases" >> beam.combiners.Count.Globally()
    cooc = basket_items | "Cooccurrence" >> CooccurrenceCounts(k, normalize="cosine", item_counts=item_counts, n_baskets=n_purchases)
    blended = (
        {"learned": learned, "cooccurrence": cooc}
        | "JoinFBT" >> beam.CoGroupByKey()
        | "BlendFBT" >> beam.Map(_blend, fbt_alpha, k)
    )
    fbt = (items, blended, popular) | "FBTFallback" >> ApplyFallback(k)

    # recommended for you: visitor history -> model
    visitors_hist = (
        baskets
        | "VisitorPurchases" >> beam.FlatMap(lambda b: [(b[0], (b[1], pack_items(b[2])))] if b[0] else [])
        | "GroupByVisitor" >> beam.GroupByKey()
        | "History" >> beam.Map(_history, vocab, max_history)
    )
    visitors = visitors_hist | "Visitors" >> beam.Keys()
    visitor_lists, visitor_failures = (
        visitors_hist
        | "KnownHistory" >> beam.Filter(lambda kv: len(kv[1]) > 0)
        | "VisitorQueryBatches" >> FixedBatches(batch_size)
        | "ScoreVisitors" >> RunInference(handler()).with_exception_handling()
    )
    visitor_lists = (
        visitor_lists | "UnbatchVisitors" >> beam.FlatMap(lambda r: r.inference) | "VisitorResults" >> beam.Map(_to_ranked, vocab)
    )
    rfy = (visitors, visitor_lists, popular) | "ForYouFallback" >> ApplyFallback(k)

    outputs = {"similar_items": similar, "frequently_bought_together": fbt, "recommended_for_you": rfy}
    # one list per item and one per visitor (ApplyFallback answers every key once): the writers size their
    # shards from these counts, made early, instead of counting the lists, which would hold them back a stage
    n_items = items | "CountItems" >> beam.combiners.Count.Globally()
    n_rows = {"similar_items": n_items, "frequently_bought_together": n_items,
              "recommended_for_you": visitors | "CountVisitors" >> beam.combiners.Count.Globally()}
    for name, pcoll in outputs.items():
        _write(pcoll, out_dir, name, OUTPUTS[name], rows_per_shard, n_rows[name])
    (
        (
            item_failures.failed_inferences | "ItemDeadLetters" >> beam.FlatMap(_dead_letter, "ScoreItems"),
            visitor_failures.failed_inferences | "VisitorDeadLetters" >> beam.FlatMap(_dead_letter, "ScoreVisitors"),
        )
        | "DeadLetters" >> beam.Flatten()
        | "WriteDeadLetters"
        >> WriteSortedShards(FileSystems.join(out_dir, "dead_letter"), DEAD_LETTER_SCHEMA, ("source_file", "raw"), rows_per_shard=rows_per_shard)
    )
    return outputs


def resolve_engine(engine: str, model_dir: str, tflite_path: str | None = None) -> str:
    """The engine ``"auto"`` stands for: ``"tflite"`` when ``tflite_path`` is given or
    ``<model_dir>/model_int8.tflite`` exists, else ``"saved_model"``; other values pass through.

    The quantized model is what the ``evaluate`` step picks for serving
    (recall@10 0.2554 against the SavedModel's 0.2544 in ``benchmarks/recommend``),
    and serving it keeps TensorFlow out of the workers (LiteRT instead).
    """
    if engine != "auto":
        return engine
    if tflite_path or FileSystems.exists(FileSystems.join(model_dir, SERVING_TFLITE)):
        return "tflite"
    return "saved_model"


def resolve_neighbours(neighbours: str, model_dir: str) -> str:
    """What ``neighbours="auto"`` stands for: ``"index"`` when ``<model_dir>/item_index.faiss`` exists, else
    ``"exact"``; ``"index"`` without that file is a ConfigError; other values pass through."""
    if neighbours == "exact":
        return neighbours
    has_index = FileSystems.exists(FileSystems.join(model_dir, INDEX_FILE))
    if neighbours == "auto":
        return "index" if has_index else "exact"
    if neighbours == "index" and not has_index:
        raise ConfigError(f"--neighbours index: the model {model_dir!r} has no {INDEX_FILE}; build it with `aisle index --model {model_dir}`")
    return neighbours


def train_model_from_events(events: str, model_dir: str, *, epochs: int | None = None, echo=print) -> str:
    """Train and export a model from the purchase events at ``events``; returns ``model_dir``."""
    from components.recommend_data import read_event_baskets
    from components.recommend_model import TrainConfig, export_model, train_item_model
    from components.recommend_quantize import write_serving_tflite
    from transforms.recommend_vocab import ItemVocab

    baskets = [b.items for b in read_event_baskets(events)]
    vocab = ItemVocab.build(baskets)
    config = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    echo(f"no --model given: training one on {len(baskets)} baskets, {len(vocab)} items from {events} ({config.epochs} epochs)")
    trained = train_item_model(baskets, vocab, config)
    export_model(trained, model_dir)
    write_serving_tflite(model_dir, baskets)  # the quantized model the job then serves
    return model_dir


def _count_rows(folder: str) -> dict[str, int]:
    import glob

    import pyarrow.parquet as pq

    total, fallback = 0, 0
    for path in glob.glob(os.path.join(folder, "part*.parquet")):
        meta = pq.read_metadata(path)
        total += meta.num_rows
        if "fallback" in meta.schema.names:
            fallback += meta.num_rows - pq.read_table(path, columns=["fallback"]).column("fallback").null_count
    return {"rows": total, "fallback_rows": fallback}


def run(
    *,
    events: str,
    catalog: str | None,
    out_dir: str,
    model_dir: str | None = None,
    beam_args=(),
    workers: int = 1,
    epochs: int | None = None,
    echo=print,
    registry=None,
    **options,
) -> dict:
    """Train if needed, run the pipeline, write ``summary.json``; returns the summary.

    ``options`` go to :func:`add_recommend_steps`; its ``engine`` defaults
    here to ``"auto"``: a model with ``model_int8.tflite`` beside it (a
    model trained here has one) is served quantized, through LiteRT.

    ``model_dir`` may name a registered model (``registry://recommender@production``):
    it is resolved in ``registry`` (:mod:`components.registry`) once, here, to
    one checksummed version, used for the whole run and recorded in the
    summary (``model_version``).

    The outputs are written under ``<out_dir>/_staging-<id>`` and moved into
    place only when the whole job has succeeded
    (:func:`transforms.io.commit_outputs`): a reader never sees a partial
    output, and a killed run leaves the previous output as it was.
    """
    from components.registry import resolve_model_uri
    from pipelines.options import make_pipeline, pipeline_options
    from transforms.io import commit_outputs, join_path, write_parquet, write_text

    start = time.perf_counter()
    model_dir, model_version = resolve_model_uri(model_dir, registry)
    trained_here = model_dir is None
    if trained_here:
        model_dir = train_model_from_events(events, os.path.join(out_dir, "model"), epochs=epochs, echo=echo)
    options["engine"] = resolve_engine(options.get("engine", "auto"), model_dir, options.get("tflite_path"))
    options["neighbours"] = resolve_neighbours(options.get("neighbours", "auto"), model_dir)
    train_secs = time.perf_counter() - start
    staging = join_path(out_dir, f"_staging-{uuid.uuid4().hex[:12]}")
    with make_pipeline(pipeline_options(beam_args, workers=workers), preload=[__name__, "pyarrow.compute", "scipy.sparse"]) as p:
        add_recommend_steps(p, events=events, catalog=catalog, model_dir=model_dir, out_dir=staging, **options)
    names = (*OUTPUTS, "dead_letter")
    for name in names:  # an output that received no rows still exists, empty
        if not FileSystems.match([FileSystems.join(staging, name, "*.parquet")])[0].metadata_list:
            schema = DEAD_LETTER_SCHEMA if name == "dead_letter" else RECOMMENDATION_SCHEMA
            write_parquet(schema.empty_table(), FileSystems.join(staging, name, "part-empty.parquet"))
    accounting = event_accounting(read_counts(FileSystems.join(staging, EVENT_COUNTS)))
    if not accounting["conservation"]["ok"]:
        raise ConfigError(f"event counts not conserved: {accounting['conservation']}")
    commit_outputs(staging, out_dir, names)
    summary = {
        "events": events,
        "catalog": catalog,
        "model": model_dir,
        "model_version": model_version,
        "trained_here": trained_here,
        "engine": options["engine"],
        "neighbours": options["neighbours"],
        "nprobe": (options.get("nprobe") or DEFAULT_NPROBE) if options["neighbours"] == "index" else None,
        "train_seconds": round(train_secs, 2),
        "seconds": round(time.perf_counter() - start, 2),
        **accounting,
        "outputs": {},
    }
    if "://" in out_dir:
        summary["outputs"] = {name: {"folder": f"{out_dir}/{name}"} for name in OUTPUTS}
    else:
        summary["outputs"] = {name: _count_rows(os.path.join(out_dir, name)) for name in OUTPUTS}
        summary["dead_letters"] = _count_rows(os.path.join(out_dir, "dead_letter"))["rows"]
    write_text(json.dumps(summary, indent=2) + "\n", join_path(out_dir, "summary.json"))
    return summary


@click.command(
    "recommend",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option("--events", required=True, help="Ingest output events folder (<dir>/events) or a .parquet file.")
@click.option("--catalog", default=None, help="Ingest output products folder (<dir>/products) or a .parquet file.")
@click.option("--out", "out_dir", required=True, help="Output folder (local or gs://).")
@click.option("--model", "model_dir", default=None, help="Trained model folder (local or gs://); trained from --events when absent.")
@click.option("--k", default=10, show_default=True, help="Items per recommendation list.")
@click.option("--fbt-alpha", default=0.5, show_default=True, help="Weight of learned scores vs cosine co-occurrence in frequently-bought-together.")
@click.option(
    "--engine",
    type=click.Choice(["auto", "saved_model", "tflite"]),
    default="auto",
    show_default=True,
    help="auto: the model's INT8 TFLite file (model_int8.tflite) when it has one, else its SavedModel.",
)
@click.option("--neighbours", type=click.Choice(["auto", "exact", "index"]), default="auto", show_default=True,
              help="Similar items: auto = the model's approximate index (item_index.faiss, `aisle index`) when it has one, else exact.")
@click.option("--nprobe", default=None, type=int, help="Clusters an index query searches (default 16; more: slower, closer to exact).")
@click.option("--tflite", "tflite_path", default=None, help="TFLite model for --engine tflite (default <model>/model_int8.tflite).")
@click.option("--epochs", default=None, type=int, help="Training epochs when no --model is given.")
@click.option("--workers", default=1, show_default=True, help="Local worker processes.")
@click.option("--registry", "registry_root", default="out/registry", show_default=True, help="Local model registry that --model registry://name@alias resolves in.")
@click.pass_context
def command(ctx, events, catalog, out_dir, model_dir, k, fbt_alpha, engine, neighbours, nprobe, tflite_path, epochs, workers, registry_root):
    """Similar items, frequently bought together and recommended-for-you lists from purchase events."""
    from components.registry import LocalRegistry

    summary = run(
        events=events,
        catalog=catalog,
        out_dir=out_dir,
        model_dir=model_dir,
        beam_args=ctx.args,
        workers=workers,
        epochs=epochs,
        echo=click.echo,
        k=k,
        fbt_alpha=fbt_alpha,
        engine=engine,
        neighbours=neighbours,
        nprobe=nprobe,
        tflite_path=tflite_path,
        registry=LocalRegistry(registry_root),
    )
    click.echo(json.dumps(summary, indent=2))


@click.command("index")
@click.option("--model", "model_dir", required=True, help="Model folder (local or gs://) with vocab.json and item_embeddings.npy.")
@click.option("--nlist", default=None, type=int, help="Clusters (default about 4 * sqrt(items)).")
@click.option("--seed", default=0, show_default=True, help="Seed of the k-means that places the clusters.")
def index_command(model_dir, nlist, seed):
    """Build the model's approximate similar-items index (item_index.faiss) beside its embeddings."""
    from transforms.item_index import build_model_index

    click.echo(json.dumps(build_model_index(model_dir, nlist=nlist, seed=seed), indent=2))

"""The NER half of ``aisle enrich``: entities from product text and OCR, attributes merged into the catalog.

:func:`add_ner_steps` adds to a pipeline, for a PCollection of products and
one of OCR text rows (``product_id``, ``text``, as the OCR step writes them):

1. one text per (product, field): ``title``, ``description`` and ``ocr``
   (a product's OCR lines of all its images, joined in a stable order);
2. a check that routes unusable text (blank, over ``max_chars``) to dead
   letters, then ``RunInference`` with the keyed :class:`NerModelHandler`
   and exception handling (a failing batch becomes dead letters, not a crash);
3. ``<out>/entities/*.parquet`` (:data:`ENTITY_SCHEMA`: product id, source
   field, span text, character offsets, label, score);
4. attribute rules over the same text and entities
   (:func:`transforms.attributes.extract_attributes`) merged into each
   product: ``<out>/catalog_enriched/*.parquet`` (``PRODUCT_SCHEMA``);
5. ``<out>/dead_letter_ner/*.parquet`` (``DEAD_LETTER_SCHEMA``).

Every product ends in the enriched catalog (with or without new
attributes); every text ends as entities (possibly none) or as a dead letter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.ml.inference.base import PredictionResult, RunInference

from transforms.attributes import extract_attributes, merge_attributes
from transforms.errors import ConfigError
from transforms.inference.ner import METRICS_NAMESPACE, NerInputError, NerModelHandler, check_text
from transforms.shards import ROWS_PER_SHARD, FixedBatches, FixedBatchHandler
from transforms.records import DEAD_LETTER_SCHEMA, PRODUCT_SCHEMA, DeadLetter, Product, from_arrow, to_row

__all__ = ["ENTITY_SCHEMA", "NER_OUTPUTS", "NerEnrich", "NerOutputs", "add_ner_steps", "product_texts", "read_products"]

ENTITY_SCHEMA = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("start", pa.int64(), nullable=False),
        pa.field("end", pa.int64(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
    ]
)

FIELDS = ("title", "description", "ocr")
NER_OUTPUTS = ("entities", "catalog_enriched", "dead_letter_ner")  # folders under <out>


class NerOutputs(NamedTuple):
    """The PCollections :class:`NerEnrich` produces."""

    entities: beam.PCollection  # dicts with ENTITY_SCHEMA's fields
    enriched: beam.PCollection  # Product records with merged attributes
    dead_letters: beam.PCollection  # DeadLetter records


def _field(row: Any, name: str):
    return row.get(name) if isinstance(row, Mapping) else getattr(row, name, None)


def _as_product(row: Any) -> Product:
    if isinstance(row, Product):
        return row
    if isinstance(row, Mapping):
        return from_arrow(pa.Table.from_pylist([dict(row)], schema=PRODUCT_SCHEMA), Product)[0]
    raise ConfigError(f"products must be Product records or dicts with PRODUCT_SCHEMA fields, got {type(row).__name__}")


def read_products(path: str) -> Iterable[Product]:
    """The valid products of one catalog file: Parquet with PRODUCT_SCHEMA, or Retail JSON lines.

    Records that are not products are skipped here: the catalog reader
    (:func:`transforms.catalog.read_catalog_file`) that ``aisle enrich``'s
    OCR half shares dead-letters them there, once (``dead_letter_catalog``).
    """
    from transforms.catalog import read_catalog_file

    return (r for r in read_catalog_file(path) if isinstance(r, Product))


def product_texts(product: Product) -> Iterable[tuple[tuple[str, str], str]]:
    """``((product_id, field), text)`` for the title and description a product has."""
    for name in ("title", "description"):
        text = getattr(product, name)
        if text:
            yield (product.id, name), text


def _dead_letter(key: tuple[str, str], text: Any, reason: str, detail: str) -> DeadLetter:
    raw = text if isinstance(text, str) else repr(text)
    return DeadLetter(
        source_file=f"product:{key[0]}",
        source_offset=0,
        source_format=f"ner:{key[1]}",
        raw=raw[:2000],
        reason=reason,
        detail=detail[:2000],
    )


class _CheckText(beam.DoFn):
    """Route blank / over-long texts to the ``invalid`` output as dead letters."""

    def __init__(self, max_chars: int):
        self._max_chars = max_chars

    def process(self, element):
        key, text = element
        try:
            check_text(text, max_chars=self._max_chars)
        except NerInputError as exc:
            reason = "NER_EMPTY_TEXT" if isinstance(text, str) and not text.strip() else "NER_BAD_TEXT"
            if isinstance(text, str) and len(text) > self._max_chars:
                reason = "NER_TEXT_TOO_LONG"
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "dead_letters").inc()
            yield beam.pvalue.TaggedOutput("invalid", _dead_letter(key, text, reason, str(exc)))
            return
        yield element


def _entity_rows(element: tuple[tuple[str, str], PredictionResult]) -> Iterable[dict]:
    (product_id, source), result = element
    for e in result.inference:
        yield {
            "product_id": product_id,
            "source": source,
            "text": e.text,
            "start": e.start,
            "end": e.end,
            "label": e.label,
            "score": float(e.score),
        }


def _failed_batch(element) -> Iterable[DeadLetter]:
    batch, exc = element
    for group in batch:  # RunInference's batch of fixed batches
        for key, text in group:
            yield _dead_letter(key, text, "NER_INFERENCE_FAILED", f"{type(exc).__name__}: {exc}")


def _join_ocr(element) -> tuple[str, str]:
    product_id, texts = element
    return product_id, "\n".join(sorted(t for t in texts if t))


def _enrich(element) -> Product:
    """One product with the attributes its texts and entities give, merged in."""
    _, grouped = element
    products = grouped["product"]
    if not products:
        return None
    product = products[0]
    fields = {"title": product.title, "description": product.description}
    if grouped["ocr"]:
        fields["ocr"] = grouped["ocr"][0]
    entities: dict[str, list] = {}
    for source, entity in grouped["entities"]:
        entities.setdefault(source, []).append(entity)
    found = extract_attributes({k: v for k, v in fields.items() if v}, entities=entities, title=product.title)
    if found:
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "products_with_attributes").inc()
    return merge_attributes(product, found)


class NerEnrich(beam.PTransform):
    """Products (+ OCR text rows) in, :class:`NerOutputs` out. See the module docstring.

    ``handler`` replaces the default ``NerModelHandler(model_path, ...)``
    (e.g. a handler with other batching); ``handler_kwargs`` go to the
    default one. Texts reach the model in batches of at most
    ``batch_texts`` that depend only on the data (see :class:`transforms.shards.FixedBatchHandler`),
    so the entities are the same whatever the bundling or worker count.
    """

    def __init__(self, model_path: str, *, max_chars: int = 20_000, handler=None, batch_texts: int = 128, **handler_kwargs):
        super().__init__()
        if not model_path and handler is None:
            raise ConfigError("NerEnrich needs model_path (a NER model folder) or a handler")
        if batch_texts < 1:
            raise ConfigError(f"batch_texts must be >= 1, got {batch_texts}")
        self._handler = handler or NerModelHandler(model_path, max_chars=max_chars, **handler_kwargs)
        self._max_chars = max_chars
        self._batch_texts = batch_texts

    def expand(self, inputs: Mapping[str, beam.PCollection]) -> NerOutputs:
        if "products" not in inputs:
            raise ConfigError("NerEnrich takes {'products': ..., 'ocr': ...} (ocr optional)")
        products = inputs["products"] | "AsProducts" >> beam.Map(_as_product)
        keyed_products = products | "KeyProducts" >> beam.Map(lambda p: (p.id, p))
        catalog_texts = products | "CatalogTexts" >> beam.FlatMap(product_texts)
        ocr = inputs.get("ocr")
        if ocr is not None:
            ocr_joined = (
                ocr
                | "KeyOcr" >> beam.Map(lambda r: (str(_field(r, "product_id")), _field(r, "text") or ""))
                | "GroupOcr" >> beam.GroupByKey()
                | "JoinOcr" >> beam.Map(_join_ocr)
            )
            ocr_texts = ocr_joined | "OcrTexts" >> beam.Map(lambda kv: ((kv[0], "ocr"), kv[1]))
            texts = (catalog_texts, ocr_texts) | "AllTexts" >> beam.Flatten()
        else:
            ocr_joined = inputs["products"].pipeline | "NoOcr" >> beam.Create([])
            texts = catalog_texts
        checked = texts | "CheckText" >> beam.ParDo(_CheckText(self._max_chars)).with_outputs("invalid", main="valid")
        batches = checked.valid | "FixedBatches" >> FixedBatches(self._batch_texts)
        batched, failed = batches | "RunNer" >> RunInference(FixedBatchHandler(self._handler)).with_exception_handling()
        predictions = batched | "UnpackBatches" >> beam.FlatMap(lambda result: result.inference)
        entity_rows = predictions | "EntityRows" >> beam.FlatMap(_entity_rows)
        inference_failures = failed.failed_inferences | "FailedBatches" >> beam.FlatMap(_failed_batch)
        dead = (checked.invalid, inference_failures) | "DeadLetters" >> beam.Flatten()

        keyed_entities = predictions | "KeyEntities" >> beam.FlatMap(
            lambda kv: [(kv[0][0], (kv[0][1], e)) for e in kv[1].inference]
        )
        enriched = (
            {"product": keyed_products, "ocr": ocr_joined, "entities": keyed_entities}
            | "JoinForAttributes" >> beam.CoGroupByKey()
            | "Attributes" >> beam.Map(_enrich)
            | "DropOrphans" >> beam.Filter(lambda p: p is not None)
        )
        return NerOutputs(entity_rows, enriched, dead)


def _product_row(product: Product) -> dict:
    return to_row(product)


def _dead_letter_row(dl: DeadLetter) -> dict:
    return dl._asdict()


def add_ner_steps(
    products: beam.PCollection,
    ocr_text: beam.PCollection | None,
    out: str,
    model_path: str,
    *,
    max_chars: int = 20_000,
    handler=None,
    rows_per_shard: int = ROWS_PER_SHARD,
    **handler_kwargs,
) -> NerOutputs:
    """Add NER enrichment to the pipeline of ``products`` and write its three outputs under ``out``.

    ``products``: Product records (or dicts with PRODUCT_SCHEMA fields);
    ``ocr_text``: rows with ``product_id`` and ``text`` (or ``None``);
    ``model_path``: a NER model folder (local or ``gs://``), e.g. the
    chosen candidate of ``python -m benchmarks.ner``; it is loaded when the
    job runs, not here. Outputs are sorted, hash-sharded Parquet
    (:class:`transforms.shards.WriteSortedShards`): byte-identical across
    re-runs and worker counts, at most ``rows_per_shard`` rows per shard.
    """
    from transforms.shards import WriteSortedShards

    inputs = {"products": products}
    if ocr_text is not None:
        inputs["ocr"] = ocr_text
    outputs = inputs | "NER" >> NerEnrich(model_path, max_chars=max_chars, handler=handler, **handler_kwargs)
    base = out.rstrip("/")
    outputs.entities | "WriteEntities" >> WriteSortedShards(
        f"{base}/entities", ENTITY_SCHEMA, ("product_id", "source", "start", "end", "label"), rows_per_shard=rows_per_shard
    )
    (
        outputs.enriched
        | "EnrichedRows" >> beam.Map(_product_row)
        | "WriteEnrichedCatalog" >> WriteSortedShards(f"{base}/catalog_enriched", PRODUCT_SCHEMA, ("id",), rows_per_shard=rows_per_shard)
    )
    (
        outputs.dead_letters
        | "DeadLetterRows" >> beam.Map(_dead_letter_row)
        | "WriteNerDeadLetters"
        >> WriteSortedShards(
            f"{base}/dead_letter_ner", DEAD_LETTER_SCHEMA, ("source_file", "source_format", "source_offset"), rows_per_shard=rows_per_shard
        )
    )
    return outputs

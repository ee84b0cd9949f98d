"""The NER half of ``aisle enrich``: entities from product text and OCR, attributes merged into the catalog.

:func:`add_ner_steps` adds to a pipeline, for a PCollection of products and
one of OCR text rows (``product_id``, ``text``, as the OCR step writes them):

1. products and OCR rows grouped together, about ``batch_texts`` texts a
   group by a hash of the id (one shuffle, which both joins a
   product to its OCR text and makes the model's batches);
2. in each group, one text per (product, field): ``title``,
   ``description`` and ``ocr`` (a product's OCR lines of all its images,
   joined in a stable order); unusable text (blank, over ``max_chars``)
   becomes a dead letter; the products are cut in id order into batches of
   at most ``batch_texts`` texts;
3. ``RunInference`` with :class:`ProductBatchHandler` over the
   :class:`NerModelHandler` and exception handling (a failing batch
   becomes dead letters, and its products keep the rule-based attributes);
4. ``<out>/entities/*.parquet`` (:data:`ENTITY_SCHEMA`: product id, source
   field, span text, character offsets, label, score);
5. attribute rules over the same text and entities
   (:func:`transforms.attributes.extract_attributes`) merged into each
   product right after the model, in the same step:
   ``<out>/catalog_enriched/*.parquet`` (``PRODUCT_SCHEMA``);
6. ``<out>/dead_letter_ner/*.parquet`` (``DEAD_LETTER_SCHEMA``).

A product travels with its texts, so nothing is joined after the model:
at 10x (37,610 products, two workers) the join of products with their
entities cost 3.6 s of a 52 s run.

Every product ends in the enriched catalog (with or without new
attributes); every text ends as entities (possibly none) or as a dead letter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa

from transforms.attributes import extract_attributes, merge_attributes
from transforms.beam_ml import PredictionResult, RunInference
from transforms.errors import ConfigError
from transforms.inference.ner import METRICS_NAMESPACE, NerInputError, NerModelHandler, check_text
from transforms.records import DEAD_LETTER_SCHEMA, PRODUCT_SCHEMA, DeadLetter, Product, from_arrow, to_row
from transforms.shards import ROWS_PER_SHARD, FixedBatchHandler, batch_group

__all__ = ["ENTITY_SCHEMA", "NER_OUTPUTS", "NerEnrich", "NerOutputs", "ProductBatchHandler", "ProductWork", "add_ner_steps", "read_products"]

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


class ProductWork(NamedTuple):
    """One product's NER input: the product (``None`` for OCR text of an unknown id), its OCR text, the fields to tag."""

    product_id: str
    product: Product | None
    ocr: str | None
    fields: tuple[str, ...]  # the fields whose text passed the checks, in FIELDS order

    def text(self, name: str) -> str | None:
        if name == "ocr":
            return self.ocr
        return getattr(self.product, name) if self.product is not None else None

    def texts(self) -> list[str]:
        return [self.text(name) for name in self.fields]


class _ProductBatches(beam.DoFn):
    """A group of products and OCR rows -> batches of :class:`ProductWork`, at most ``batch_texts`` texts each.

    OCR rows join their product here (all rows of an id, sorted, one text);
    a text that cannot be tagged (blank, over ``max_chars``) becomes a dead
    letter on the ``invalid`` output and its product goes on without it.
    Products are cut into batches in id order, so the batches depend only
    on the data.
    """

    def __init__(self, max_chars: int, batch_texts: int):
        self._max_chars = max_chars
        self._batch_texts = batch_texts

    def _refusal(self, key: tuple[str, str], text) -> DeadLetter | None:
        """A dead letter for a text the model cannot take, else ``None``."""
        try:
            check_text(text, max_chars=self._max_chars)
        except NerInputError as exc:
            reason = "NER_EMPTY_TEXT" if isinstance(text, str) and not text.strip() else "NER_BAD_TEXT"
            if isinstance(text, str) and len(text) > self._max_chars:
                reason = "NER_TEXT_TOO_LONG"
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "dead_letters").inc()
            return _dead_letter(key, text, reason, str(exc))
        return None

    def process(self, element):
        _, members = element
        products: dict[str, list[Product]] = {}
        ocr: dict[str, list[str]] = {}
        for kind, product_id, value in members:
            if kind == "product":
                products.setdefault(product_id, []).append(value)
            else:
                ocr.setdefault(product_id, []).append(value)
        work: list[ProductWork] = []
        for product_id in sorted(set(products) | set(ocr)):
            ocr_text = "\n".join(sorted(t for t in ocr[product_id] if t)) if product_id in ocr else None
            # duplicate ids (which ingestion removes) each go through, in a stable order
            same_id = sorted(products.get(product_id, []), key=lambda p: (p.title or "", p.description or "")) or [None]
            for product in same_id:
                item = ProductWork(product_id, product, ocr_text, ())
                present = [name for name in FIELDS if (item.text(name) is not None if name == "ocr" else item.text(name))]
                fields = []
                for name in present:
                    dead = self._refusal((product_id, name), item.text(name))
                    if dead is None:
                        fields.append(name)
                    else:
                        yield beam.pvalue.TaggedOutput("invalid", dead)
                work.append(item._replace(fields=tuple(fields)))
        batch: list[ProductWork] = []
        n_texts = 0
        for item in work:
            if batch and n_texts + len(item.fields) > self._batch_texts:
                yield tuple(batch)
                batch, n_texts = [], 0
            batch.append(item)
            n_texts += len(item.fields)
        if batch:
            yield tuple(batch)


class ProductBatchHandler(FixedBatchHandler):
    """Runs a text ModelHandler (:class:`NerModelHandler`) on batches of :class:`ProductWork`.

    An element is a tuple of ``ProductWork``; all its texts go to the model
    in one call, and its result's ``inference`` is ``[(work, {field:
    entities}), ...]`` in the same order. A failure's batch
    (``with_exception_handling``) is a list of such tuples.
    """

    def run_inference(self, batch, model, inference_args=None):
        out = []
        for group in batch:
            texts = [t for item in group for t in item.texts()]
            results = iter(self._inner.run_inference(texts, model, inference_args) if texts else ())
            tagged = [(item, {name: next(results).inference for name in item.fields}) for item in group]
            out.append(PredictionResult(group, tagged))
        return out


def _enriched(item: ProductWork, entities: Mapping[str, list]) -> Product:
    """The product with the attributes its texts and entities give, merged in."""
    product = item.product
    fields = {name: item.text(name) for name in FIELDS}
    found = extract_attributes({k: v for k, v in fields.items() if v}, entities=dict(entities), title=product.title)
    if found:
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "products_with_attributes").inc()
    return merge_attributes(product, found)


def _tagged_outputs(result: PredictionResult):
    """Entity rows on ``entities``, enriched products on the main output."""
    for item, entities in result.inference:
        for source in item.fields:
            for e in entities[source]:
                yield beam.pvalue.TaggedOutput(
                    "entities",
                    {
                        "product_id": item.product_id,
                        "source": source,
                        "text": e.text,
                        "start": e.start,
                        "end": e.end,
                        "label": e.label,
                        "score": float(e.score),
                    },
                )
        if item.product is not None:
            yield _enriched(item, entities)


def _failed_batch(element):
    """A batch the model failed on: its texts as dead letters, its products enriched by the rules alone."""
    batch, exc = element
    for group in batch:  # RunInference's batch of product batches
        for item in group:
            for name in item.fields:
                yield beam.pvalue.TaggedOutput(
                    "dead", _dead_letter((item.product_id, name), item.text(name), "NER_INFERENCE_FAILED", f"{type(exc).__name__}: {exc}")
                )
            if item.product is not None:
                yield _enriched(item, {})


def _ocr_member(row, n: int):
    """An OCR text row as a member of its product's group."""
    product_id = str(_field(row, "product_id"))
    return batch_group(product_id, n), ("ocr", product_id, _field(row, "text") or "")


class NerEnrich(beam.PTransform):
    """Products (+ OCR text rows) in, :class:`NerOutputs` out. See the module docstring.

    ``handler`` replaces the default ``NerModelHandler(model_path, ...)``
    (e.g. a handler with other batching); ``handler_kwargs`` go to the
    default one. Products and their OCR rows meet in one grouping that also
    makes the model's batches: groups of about ``batch_texts`` texts (a
    global count of texts sets their number) by a hash of the product id,
    cut in id order into batches of at most
    ``batch_texts`` texts. So the entities are the same whatever the
    bundling or worker count, and a product is shuffled once, not once for
    its texts and again to meet its entities.
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
        size = self._batch_texts
        products = inputs["products"] | "AsProducts" >> beam.Map(_as_product)
        ocr = inputs.get("ocr")
        text_counts = [products | "ProductTexts" >> beam.Map(lambda p: bool(p.title) + bool(p.description))]
        if ocr is not None:
            text_counts.append(ocr | "OcrTexts" >> beam.Map(lambda _: 1))
        n_groups = (
            text_counts
            | "AllTexts" >> beam.Flatten()
            | "CountTexts" >> beam.CombineGlobally(sum)
            | "GroupCount" >> beam.Map(lambda n: max(1, -(-n // size)))
        )
        n = beam.pvalue.AsSingleton(n_groups)
        members = [products | "GroupProducts" >> beam.Map(lambda p, n: (batch_group(p.id, n), ("product", p.id, p)), n=n)]
        if ocr is not None:
            members.append(ocr | "GroupOcr" >> beam.Map(_ocr_member, n=n))
        batches = (
            members
            | "AllMembers" >> beam.Flatten()
            | "GroupBatches" >> beam.GroupByKey()
            | "ProductBatches" >> beam.ParDo(_ProductBatches(self._max_chars, self._batch_texts)).with_outputs("invalid", main="batches")
        )
        batched, failed = batches.batches | "RunNer" >> RunInference(ProductBatchHandler(self._handler)).with_exception_handling()
        tagged = batched | "Outputs" >> beam.FlatMap(_tagged_outputs).with_outputs("entities", main="enriched")
        rescued = failed.failed_inferences | "FailedBatches" >> beam.FlatMap(_failed_batch).with_outputs("dead", main="enriched")
        enriched = (tagged.enriched, rescued.enriched) | "Enriched" >> beam.Flatten()
        dead = (batches.invalid, rescued.dead) | "DeadLetters" >> beam.Flatten()
        return NerOutputs(tagged.entities, enriched, dead)


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

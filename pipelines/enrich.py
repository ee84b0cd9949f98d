"""``aisle enrich``: read the text on every product image (OCR), joined to the product id.

Steps (fixed labels)::

    ReadCatalog -> LoadImages -> OCR (RunInference, keyed by product/image)
        -> OcrLines      -> <out>/ocr_lines/*.parquet
        -> OcrText       -> <out>/ocr_text/*.parquet   (one row per product)
        -> OcrDeadLetter -> <out>/dead_letter_ocr/*.parquet
    ReadCatalog -> WriteCatalogDeadLetter -> <out>/dead_letter_catalog/*.parquet
        (catalog records that are not products: not UTF-8, not JSON, no id, ...)

``add_ocr_steps`` adds the OCR half to any PCollection of image references
and returns its outputs, so other enrichment steps (attribute extraction
from the text) chain on ``outputs["text"]``; ``build_enrich`` wires the
whole job onto a Pipeline it is given. Every image ends in exactly one
place: an OCR result (possibly with no lines) or a dead letter, and so
does every catalog record that is not a product (summary ``read`` counts
both: image references plus rejected records).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import click
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.errors import ConfigError, SourceError
from transforms.inference.ocr import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageError,
    OcrConfig,
    OcrModelHandler,
    OcrResult,
    decode_image,
    failure_reason,
)
from transforms.catalog import read_catalog_file
from transforms.counts import WriteCounts, read_counts
from transforms.records import DEAD_LETTER_SCHEMA, DeadLetter
from transforms.shards import ROWS_PER_SHARD

__all__ = [
    "OCR_LINES_SCHEMA",
    "OCR_TEXT_SCHEMA",
    "ImageRef",
    "add_ocr_steps",
    "build_enrich",
    "catalog_files",
    "command",
    "catalog_entries",
    "image_refs",
    "run_enrich",
]

OCR_LINES_SCHEMA = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("line_index", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("box", pa.list_(pa.list_(pa.float32(), 2), 4), nullable=False),
        pa.field("angle", pa.int16(), nullable=False),
    ]
)
OCR_TEXT_SCHEMA = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("n_lines", pa.int32(), nullable=False),
        pa.field("mean_confidence", pa.float32(), nullable=True),
        pa.field("n_images", pa.int32(), nullable=False),
    ]
)
OUTPUTS = ("ocr_lines", "ocr_text", "dead_letter_ocr", "dead_letter_catalog")


class ImageRef(NamedTuple):
    """One image of one product: ``uri`` already resolved; ``index`` its position in ``images``."""

    product_id: str
    uri: str
    index: int


# ---------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------


def catalog_files(catalog: str) -> tuple[list[str], str]:
    """The product files of ``catalog`` and the folder relative image paths resolve against.

    ``catalog`` is an ingest output folder (``<dir>/products/*.parquet``), a
    folder of Parquet/JSONL files, or one Parquet/JSONL file (local or any
    FileSystems scheme).
    """
    base = catalog.rstrip("/")
    candidates = [
        (FileSystems.join(base, "products", "*.parquet"), base),
        (FileSystems.join(base, "*.parquet"), base),
        (FileSystems.join(base, "*.jsonl"), base),
    ]
    if base.endswith((".parquet", ".jsonl", ".json", ".ndjson")):
        candidates = [(base, base.rsplit("/", 1)[0] if "/" in base else ".")]
    for pattern, root in candidates:
        try:
            found = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        except Exception:
            found = []
        if found:
            return found, root
    raise SourceError(
        f"no products found at {catalog!r}: pass an ingest output folder (with products/*.parquet), "
        "a folder of .parquet/.jsonl files, or one such file"
    )


def _resolve(uri: str, root: str) -> str:
    if "://" in uri or os.path.isabs(uri):
        return uri
    return FileSystems.join(root, uri) if "://" in root else os.path.normpath(os.path.join(root, uri))


CATALOG_DEAD = "catalog_dead_letter"


def catalog_entries(path: str, root: str) -> Iterator[ImageRef | DeadLetter]:
    """Every ``images[].uri`` of every product in one catalog file, and a DeadLetter for every record that is not a product.

    Records come from :func:`transforms.catalog.read_catalog_file`: a line
    that is not UTF-8, not JSON or not a valid product (no id, ...) is a
    dead letter with its reason, never a failed job; its images are not read.
    """
    for record in read_catalog_file(path, columns=("id", "images")):
        if isinstance(record, DeadLetter):
            yield record
            continue
        for i, img in enumerate(record.images or ()):
            if img.uri:
                yield ImageRef(str(record.id), _resolve(img.uri, root), i)


def image_refs(path: str, root: str) -> Iterator[ImageRef]:
    """Every ``images[].uri`` of every valid product in one catalog file (Parquet or JSON lines)."""
    return (e for e in catalog_entries(path, root) if isinstance(e, ImageRef))


CATALOG_COUNTS = "catalog_counts.json"


def _route_catalog(path: str, root: str):
    """Image refs, tagged catalog dead letters, and one tagged count of both (the job's ``read``)."""
    n = 0
    for entry in catalog_entries(path, root):
        n += 1
        if isinstance(entry, DeadLetter):
            yield beam.pvalue.TaggedOutput(CATALOG_DEAD, entry._asdict())
        else:
            yield entry
    yield beam.pvalue.TaggedOutput("counts", {"read": n})


# ---------------------------------------------------------------------------
# DoFns
# ---------------------------------------------------------------------------

DEAD = "dead_letter"


def _dead(ref: ImageRef, reason: str, detail: str) -> dict:
    return {
        "source_file": ref.uri,
        "source_offset": ref.index,
        "source_format": "image",
        "raw": json.dumps({"product_id": ref.product_id, "image_uri": ref.uri, "image_index": ref.index}),
        "reason": reason,
        "detail": detail[:2000],
    }


class LoadImage(beam.DoFn):
    """ImageRef -> (ImageRef, BGR array); unreadable images go to the ``dead_letter`` output."""

    def __init__(self, *, max_pixels: int, max_bytes: int):
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes

    def process(self, ref: ImageRef):
        try:
            meta = FileSystems.match([ref.uri])[0].metadata_list
        except Exception:
            meta = []
        if not meta:
            yield beam.pvalue.TaggedOutput(DEAD, _dead(ref, "IMAGE_NOT_FOUND", f"no file at {ref.uri}"))
            return
        if meta[0].size_in_bytes > self.max_bytes:
            yield beam.pvalue.TaggedOutput(
                DEAD, _dead(ref, "IMAGE_TOO_LARGE", f"{meta[0].size_in_bytes} bytes, over the limit of {self.max_bytes}")
            )
            return
        try:
            with FileSystems.open(ref.uri) as f:
                data = f.read(self.max_bytes + 1)  # the listed size may lie (a device, a growing file): never read more
        except Exception as e:
            yield beam.pvalue.TaggedOutput(DEAD, _dead(ref, "IMAGE_READ_ERROR", f"{type(e).__name__}: {e}"))
            return
        if len(data) > self.max_bytes:
            yield beam.pvalue.TaggedOutput(
                DEAD, _dead(ref, "IMAGE_TOO_LARGE", f"over the limit of {self.max_bytes} bytes (listed as {meta[0].size_in_bytes})")
            )
            return
        try:
            image = decode_image(data, max_pixels=self.max_pixels, max_bytes=self.max_bytes)
        except ImageError as e:
            yield beam.pvalue.TaggedOutput(DEAD, _dead(ref, e.reason, str(e)))
            return
        yield ref, image


class LoadImageBatch(beam.DoFn):
    """A fixed batch of ``(ImageRef, ImageRef)`` -> the tuple of ``(ImageRef, BGR array)`` that loaded; the rest dead letters."""

    def __init__(self, *, max_pixels: int, max_bytes: int):
        self._load = LoadImage(max_pixels=max_pixels, max_bytes=max_bytes)

    def process(self, group):
        loaded = []
        for ref, _ in group:
            for out in self._load.process(ref):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield out
                else:
                    loaded.append(out)
        if loaded:
            yield tuple(loaded)


def _line_rows(item: tuple[ImageRef, Any]) -> Iterator[dict]:
    ref, prediction = item
    result: OcrResult = prediction.inference
    for k, line in enumerate(result.lines):
        yield {
            "product_id": ref.product_id,
            "image_uri": ref.uri,
            "line_index": k,
            "text": line.text,
            "confidence": float(line.confidence),
            "box": [[float(x), float(y)] for x, y in line.box],
            "angle": int(line.angle),
        }


def _image_summary(item: tuple[ImageRef, Any]) -> tuple[str, tuple[int, list[tuple[str, float]]]]:
    ref, prediction = item
    return ref.product_id, (ref.index, [(l.text, float(l.confidence)) for l in prediction.inference.lines])


def _text_row(kv: tuple[str, Iterable[tuple[int, list[tuple[str, float]]]]]) -> dict:
    product_id, images = kv
    lines = [line for _, ls in sorted(images, key=lambda t: t[0]) for line in ls]
    n_images = len(list(images))
    return {
        "product_id": product_id,
        "text": "\n".join(t for t, _ in lines),
        "n_lines": len(lines),
        "mean_confidence": float(np.mean([c for _, c in lines])) if lines else None,
        "n_images": n_images,
    }


def _failed_refs(batch) -> Iterator[ImageRef]:
    for element in batch if isinstance(batch, list) else [batch]:
        if isinstance(element, tuple) and element and isinstance(element[0], ImageRef):  # (ref, image)
            yield element[0]
        elif isinstance(element, tuple) and element and all(
            isinstance(e, tuple) and e and isinstance(e[0], ImageRef) for e in element
        ):  # a fixed batch of (ref, image)
            yield from (e[0] for e in element)
        else:
            yield ImageRef("", repr(element)[:200], -1)


def _failed_rows(failure) -> Iterator[dict]:
    """A RunInference failure ``(batch, exception)``: one dead letter per image of the batch."""
    batch, error = failure[0], failure[1]
    reason, detail = failure_reason(error)
    for ref in _failed_refs(batch):
        yield _dead(ref, reason, detail)


# ---------------------------------------------------------------------------
# Wiring
# ---------------------------------------------------------------------------


def add_ocr_steps(
    refs: beam.PCollection,
    *,
    handler: OcrModelHandler | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> dict[str, beam.PCollection]:
    """Add OCR to a PCollection of :class:`ImageRef`.

    Returns ``{"lines": dict rows (OCR_LINES_SCHEMA), "text": dict rows
    (OCR_TEXT_SCHEMA), "dead_letter": dict rows (DEAD_LETTER_SCHEMA)}``.
    """
    from transforms.beam_ml import RunInference

    from transforms.shards import FixedBatches, FixedBatchHandler

    handler = handler or OcrModelHandler(max_image_pixels=max_image_pixels, max_image_bytes=max_image_bytes)
    # batches fixed by the data: recognition pads the text crops of a batch's images together, so a line's
    # reading could otherwise change with bundling or worker count
    batch_size = int(handler.batch_elements_kwargs().get("max_batch_size", 4))
    loaded = (
        refs
        | "KeyImageRefs" >> beam.Map(lambda ref: (ref, ref))
        | "ImageBatches" >> FixedBatches(batch_size)
        | "LoadImages" >> beam.ParDo(LoadImageBatch(max_pixels=max_image_pixels, max_bytes=max_image_bytes)).with_outputs(
            DEAD, main="images"
        )
    )
    batched, failures = loaded.images | "OCR" >> RunInference(FixedBatchHandler(handler)).with_exception_handling()
    results = batched | "UnbatchOcr" >> beam.FlatMap(lambda r: r.inference)
    lines = results | "OcrLines" >> beam.FlatMap(_line_rows)
    text = results | "OcrImageText" >> beam.Map(_image_summary) | "GroupByProduct" >> beam.GroupByKey() | "OcrText" >> beam.Map(_text_row)
    failed = failures.failed_inferences | "OcrFailures" >> beam.FlatMap(_failed_rows)
    dead = (loaded[DEAD], failed) | "OcrDeadLetter" >> beam.Flatten()
    return {"lines": lines, "text": text, "dead_letter": dead}


def _catalog_pairs(catalog: str) -> list[tuple[str, str]]:
    """``(file, root)`` for every product file of ``catalog``: listed when the job runs, not when it is built."""
    files, root = catalog_files(catalog)
    return [(f, root) for f in files]


def _write(rows: beam.PCollection, label: str, out: str, name: str, schema: pa.Schema, keys: Sequence[str], rows_per_shard: int):
    from transforms.shards import WriteSortedShards

    return rows | label >> WriteSortedShards(FileSystems.join(out, name), schema, keys, rows_per_shard=rows_per_shard)


def build_enrich(
    pipeline: beam.Pipeline,
    catalog: str,
    out: str,
    *,
    handler: OcrModelHandler | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ner_model: str | None = None,
    ner_options: Mapping[str, Any] | None = None,
    rows_per_shard: int = ROWS_PER_SHARD,
) -> dict[str, beam.PCollection]:
    """Add the enrichment job to ``pipeline``: products of ``catalog`` -> Parquet under ``out``.

    Returns the PCollections of :func:`add_ocr_steps` so further steps can
    chain on them (e.g. attribute extraction on ``["text"]``). With
    ``ner_model`` (a NER model folder), the NER half runs on the products'
    title, description and OCR text (``transforms.ner_enrich.add_ner_steps``)
    and adds ``entities``, ``catalog_enriched`` and ``dead_letter_ner``
    (``ner_options``: keyword options of ``NerModelHandler``, e.g.
    ``{"intra_op_threads": 1}``).

    Building the graph touches no file: the catalog is listed, and models
    are loaded, when the job runs, so a Dataflow job can be built (and
    validated with ``--dry_run``) without the data or models at hand.
    Every output is written as sorted, hash-sharded Parquet
    (:class:`transforms.shards.WriteSortedShards`, at most
    ``rows_per_shard`` rows in a worker's memory at once), byte-identical
    across re-runs and worker counts.
    """
    files = (
        pipeline
        | "ListCatalog" >> beam.Create([catalog])
        | "CatalogFiles" >> beam.FlatMap(_catalog_pairs)
        | "SpreadCatalogFiles" >> beam.Reshuffle()
    )
    catalog_read = files | "ReadCatalog" >> beam.FlatMapTuple(_route_catalog).with_outputs(CATALOG_DEAD, "counts", main="refs")
    catalog_read.counts | "CatalogCounts" >> WriteCounts(FileSystems.join(out, CATALOG_COUNTS))
    refs = catalog_read.refs | "Reshuffle" >> beam.Reshuffle()
    outputs = add_ocr_steps(refs, handler=handler, max_image_pixels=max_image_pixels, max_image_bytes=max_image_bytes)
    outputs["dead_letter_catalog"] = catalog_read[CATALOG_DEAD]
    _write(outputs["dead_letter_catalog"], "WriteCatalogDeadLetter", out, "dead_letter_catalog", DEAD_LETTER_SCHEMA,
           ("source_file", "source_offset"), rows_per_shard)
    _write(outputs["lines"], "WriteOcrLines", out, "ocr_lines", OCR_LINES_SCHEMA, ("product_id", "image_uri", "line_index"), rows_per_shard)
    _write(outputs["text"], "WriteOcrText", out, "ocr_text", OCR_TEXT_SCHEMA, ("product_id",), rows_per_shard)
    _write(outputs["dead_letter"], "WriteOcrDeadLetter", out, "dead_letter_ocr", DEAD_LETTER_SCHEMA, ("source_file", "source_offset"), rows_per_shard)
    if ner_model:
        from transforms.ner_enrich import add_ner_steps, read_products

        # No reshuffle of the products themselves: the files are spread already, and the NER step
        # groups them anew with their OCR text (a reshuffle here cost 2 s of 70 at 10x, for no parallelism gained).
        products = files | "ReadProducts" >> beam.FlatMapTuple(lambda path, _root: read_products(path))
        ner = add_ner_steps(products, outputs["text"], out, ner_model, rows_per_shard=rows_per_shard, **dict(ner_options or {}))
        outputs.update({"entities": ner.entities, "enriched": ner.enriched, "dead_letter_ner": ner.dead_letters})
    return outputs


def _count(out: str, name: str, column: str | None = None) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total = 0
    for m in FileSystems.match([FileSystems.join(out, name, "*.parquet")])[0].metadata_list:
        with FileSystems.open(m.path) as f:
            t = pq.read_table(f)
        total += int(pc.sum(t[column]).as_py() or 0) if column else t.num_rows
    return total


def run_enrich(
    catalog: str,
    out: str,
    *,
    model_dir: str | None = None,
    threads: int | None = None,
    batch_size: int = 4,
    config: OcrConfig | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    workers: int = 1,
    beam_args: Sequence[str] = (),
    ner_model: str | None = None,
    ner_options: Mapping[str, Any] | None = None,
    registry=None,
) -> dict:
    """Run the enrichment to completion; returns its summary (also ``<out>/summary_enrich.json``).

    ``model_dir`` and ``ner_model`` may name registered models
    (``registry://ocr@production``): they are resolved in ``registry``
    (:mod:`components.registry`) once, here, to one checksummed version
    used for the whole run and recorded in the summary (``model_versions``).
    Outputs are written under ``<out>/_staging-<id>`` and moved into place
    only once the whole job has succeeded (:func:`transforms.io.commit_outputs`):
    a killed run leaves the previous output as it was.
    """
    from components.registry import resolve_model_uri
    from pipelines.options import make_pipeline, pipeline_options
    from pipelines.summary import ingest_summary
    from transforms.io import commit_outputs, join_path, write_text

    t0 = time.perf_counter()
    model_dir, ocr_version = resolve_model_uri(model_dir, registry)
    ner_model, ner_version = resolve_model_uri(ner_model, registry)
    staging = join_path(out, f"_staging-{uuid.uuid4().hex[:12]}")
    handler = OcrModelHandler(
        model_dir,
        threads=threads or os.cpu_count(),
        max_batch_size=batch_size,
        config=config,
        max_image_pixels=max_image_pixels,
        max_image_bytes=max_image_bytes,
    )
    files, _ = catalog_files(catalog)
    pipeline = make_pipeline(pipeline_options(beam_args, workers=workers), preload=[__name__])
    build_enrich(
        pipeline,
        catalog,
        staging,
        handler=handler,
        max_image_pixels=max_image_pixels,
        max_image_bytes=max_image_bytes,
        ner_model=ner_model,
        ner_options=ner_options,
    )
    result = pipeline.run()
    result.wait_until_finish()
    t_run = time.perf_counter()
    for name in OUTPUTS:  # empty outputs still get their (empty) Parquet file
        if not FileSystems.match([FileSystems.join(staging, name, "*.parquet")])[0].metadata_list:
            from transforms.io import write_parquet

            schema = {"ocr_lines": OCR_LINES_SCHEMA, "ocr_text": OCR_TEXT_SCHEMA}.get(name, DEAD_LETTER_SCHEMA)
            write_parquet(schema.empty_table(), FileSystems.join(staging, name, "part-00000.parquet"))
    n_images = read_counts(FileSystems.join(staging, CATALOG_COUNTS)).get("read", 0)  # image refs + records that are not products
    images_ok = _count(staging, "ocr_text", "n_images")
    import pyarrow.parquet as pq

    reasons: dict[str, int] = {}
    for folder in ("dead_letter_ocr", "dead_letter_catalog"):
        for m in FileSystems.match([FileSystems.join(staging, folder, "*.parquet")])[0].metadata_list:
            with FileSystems.open(m.path) as f:
                for r in pq.read_table(f, columns=["reason"]).column("reason").to_pylist():
                    reasons[r] = reasons.get(r, 0) + 1
    counts = {
        "read": n_images,
        "dead_letter": sum(reasons.values()),
        "outputs": {"ocr_images": images_ok},
        "records": {"ocr_lines": _count(staging, "ocr_lines"), "ocr_text": _count(staging, "ocr_text")},
        "reasons": reasons,
    }
    if ner_model:
        from transforms.ner_enrich import NER_OUTPUTS

        counts["records"].update({name: _count(staging, name) for name in NER_OUTPUTS})
    commit_outputs(staging, out, OUTPUTS + (NER_OUTPUTS if ner_model else ()))
    if "://" not in staging:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    summary = ingest_summary(
        counts,
        job="enrich",
        inputs=files,
        out=out,
        timings={"pipeline": t_run - t0, "total": time.perf_counter() - t0, "secs_per_image": (t_run - t0) / max(n_images, 1)},
        extra={
            "models": handler.model_paths()._asdict(),
            "model_versions": {"ocr": ocr_version, "ner": ner_version},
            "threads": threads or os.cpu_count(),
            "batch_size": batch_size,
        },
    )
    write_text(json.dumps(summary, indent=2, default=str) + "\n", join_path(out, "summary_enrich.json"))
    if not summary["conservation"]["ok"]:
        raise ConfigError(f"image counts not conserved: {summary['conservation']}")
    return summary


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--catalog", required=True, help="Products: ingest output folder, a folder of .parquet/.jsonl, or one such file.")
@click.option("--out", required=True, help="Output folder (local or gs://).")
@click.option("--ocr-models", "model_dir", help="Folder with det.onnx, rec.onnx (and cls.onnx): e.g. a chosen quantized candidate. Default: the models of rapidocr-onnxruntime.")
@click.option("--threads", type=int, help="CPU threads per worker for the models: the OCR detector runs on all of them, OCR recognition batches this many at a time (default: all cores).")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Images per RunInference batch (their text crops are recognized together).")
@click.option("--tile-aspect", type=float, default=OcrConfig().tile_aspect, show_default=True, help="Tile images taller than this many widths (0: never).")
@click.option("--small-print", type=float, default=OcrConfig().det_small_text, show_default=True,
              help="Detect again, enlarged, where the median text line is under this many pixels high as the detector sees it (0: never; costs a second detection on those images).")
@click.option("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS, show_default=True, help="Refuse larger images (decompression bombs).")
@click.option("--ner-model", help="NER model folder (e.g. the chosen candidate under out/models/ner/candidates): adds entities, catalog_enriched and dead_letter_ner.")
@click.option("--registry", "registry_root", default="out/registry", show_default=True, help="Local model registry that registry://name@alias model options resolve in.")
@click.option("--workers", default=1, show_default=True, help="Local worker processes (remote runners ignore it).")
@click.pass_context
def command(ctx, catalog, out, model_dir, threads, batch_size, tile_aspect, small_print, max_image_pixels, ner_model, registry_root, workers):
    """Read the text on product images into <out>/ocr_lines, <out>/ocr_text and dead letters.

    Extra flags (--runner, --project, --region, --temp_location, ...) go to Beam.
    """
    from components.registry import LocalRegistry
    from pipelines.summary import print_summary

    summary = run_enrich(
        catalog,
        out,
        model_dir=model_dir,
        threads=threads,
        batch_size=batch_size,
        config=OcrConfig().replace(tile_aspect=tile_aspect, det_small_text=small_print),
        max_image_pixels=max_image_pixels,
        beam_args=ctx.args,
        ner_model=ner_model,
        workers=workers,
        registry=LocalRegistry(registry_root),
    )
    print_summary(summary)


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m pipelines.enrich``."""
    from pipelines.cli import main

    return main(["enrich", *(argv if argv is not None else __import__("sys").argv[1:])])


if __name__ == "__main__":
    raise SystemExit(run())

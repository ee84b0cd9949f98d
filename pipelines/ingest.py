"""``aisle ingest``: catalog and event files into validated Retail-shaped Parquet.

Outputs under ``--out``: ``products/``, ``events/``, ``cancellations/`` (for
the online-retail format), ``dead_letter/`` (every rejected record with its
source file, byte offset, raw text and reason) and ``summary.json``.

    aisle ingest --format online-retail --input data/retail.csv --out out/ingest
    aisle ingest --format retail-json --kind products --input 'gs://bucket/catalog/*.jsonl.gz' --out gs://bucket/clean \\
        --runner DataflowRunner --project my-project --region europe-west1 --temp_location gs://bucket/tmp
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence

import apache_beam as beam
import click
from apache_beam.io.filesystems import FileSystems

from pipelines.options import is_local, make_pipeline, pipeline_options
from pipelines.summary import ingest_summary, print_summary, write_summary
from transforms.errors import AisleError
from transforms.ftp import redact
from transforms.ingest import COUNTS_FILE, FORMATS, IngestConfig, IngestFiles
from transforms.io import expand_inputs, join_path
from transforms.records import DeadLetter, Product, UserEvent, bigquery_rows, bigquery_schema
from transforms.retail_json import ColumnMapping

__all__ = ["build_ingest", "run_ingest", "auto_partitions", "command"]

PARTITION_BYTES = 16 << 20  # input bytes per output shard: bounds a worker's memory
# --worker-mode auto: worker processes from this much input on, threads below. Measured with 2 workers on
# 2 cores (benchmarks/README.md): 103 MB of retail CSV took 5.9-6.0 s as threads, 6.3-7.3 s as processes;
# 347 MB, in two runs of interleaved rounds, 1.52x and 1.53x one worker as threads, 1.58x and 1.63x as
# processes (peak memory of the process tree 1.4 GB against 0.95; each mode's own peak grows about 1.2x
# from 1x to 10x).
PROCESS_BYTES = 192 << 20


def auto_partitions(uris: Sequence[str]) -> int:
    """Output shards for these inputs: about one per 16 MB, at least 2."""
    return _partitions_for(sum(_size(u) for u in uris))


def _partitions_for(total_bytes: int) -> int:
    return max(2, math.ceil(total_bytes / PARTITION_BYTES))


# output name -> (BigQuery table, record class); the tables Terraform creates
BIGQUERY_TABLES = {
    "products": ("products", Product),
    "events": ("user_events", UserEvent),
    "cancellations": ("cancellations", UserEvent),
    "dead_letter": ("dead_letters", DeadLetter),
}


def build_ingest(pipeline: beam.Pipeline, uris: Sequence[str], cfg: IngestConfig, *, bigquery_dataset: str | None = None):
    """Add the ingestion steps to ``pipeline``; returns the PCollection of counts.

    With ``bigquery_dataset`` (``project:dataset`` or ``dataset``) every
    output is also loaded into BigQuery with an explicit schema
    (``WriteToBigQuery`` file loads, replacing the table's content).
    """
    result = pipeline | "Ingest" >> IngestFiles(list(uris), cfg)
    if bigquery_dataset:
        from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery

        for name in (*cfg.outputs, "dead_letter"):
            table, cls = BIGQUERY_TABLES[name]
            _ = (
                result["tables"]
                | f"Select_{name}" >> beam.Filter(lambda nt, n=name: nt[0] == n)
                | f"ToBigQueryRows_{name}" >> beam.FlatMap(lambda nt: bigquery_rows(nt[1]))
                | f"WriteToBigQuery_{name}"
                >> WriteToBigQuery(
                    table=f"{bigquery_dataset}.{table}",
                    schema=bigquery_schema(cls),
                    method=WriteToBigQuery.Method.FILE_LOADS,
                    create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
                    write_disposition=BigQueryDisposition.WRITE_TRUNCATE,
                )
            )
    return result["counts"]


def run_ingest(
    inputs: Sequence[str],
    out: str,
    *,
    format: str,
    kind: str = "events",
    mapping: str | None = None,
    currency: str = "GBP",
    partitions: int | None = None,
    chunk_mb: float = 4.0,
    workers: int | None = None,
    worker_mode: str = "auto",
    retail_json: bool = False,
    catalog: str | None = None,
    bigquery_dataset: str | None = None,
    beam_args: Sequence[str] = (),
    now: dt.datetime | None = None,
    progress: bool = False,
) -> dict:
    """Run an ingestion to completion and return its summary (also written to ``out``).

    ``worker_mode``: ``"threads"``, ``"processes"`` or ``"auto"`` (processes
    for inputs of :data:`PROCESS_BYTES` or more, threads below).
    """
    t0 = time.perf_counter()
    uris = expand_inputs(list(inputs))
    total_bytes = sum(_size(u) for u in uris)  # one size lookup an input (a request each on gs://)
    partitions = partitions or _partitions_for(total_bytes)
    cfg = IngestConfig(
        format=format,
        out=out,
        kind=kind,
        mapping=ColumnMapping.parse(mapping) if mapping else None,
        currency=currency,
        partitions=partitions,
        chunk_bytes=int(chunk_mb * (1 << 20)),
        retail_json=retail_json,
        catalog_ids_path=_catalog_products(catalog) if catalog else None,
        now=now or dt.datetime.now(dt.timezone.utc),
        run_id=uuid.uuid4().hex[:12],
        emit_tables=bool(bigquery_dataset),
    )
    if workers is None:
        workers = (os.cpu_count() or 1) if total_bytes > 8 * (1 << 20) else 1
    if worker_mode == "auto":
        worker_mode = "processes" if total_bytes >= PROCESS_BYTES else "threads"
    options = pipeline_options(beam_args, workers=workers, worker_mode=worker_mode)
    t_plan = time.perf_counter()
    pipeline = make_pipeline(options, preload=[__name__])
    build_ingest(pipeline, uris, cfg, bigquery_dataset=bigquery_dataset)
    stop = threading.Event()
    watcher = None
    if progress and is_local(options) and "://" not in out:
        watcher = threading.Thread(target=_show_progress, args=(cfg, uris, stop), daemon=True)
        watcher.start()
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        stop.set()
        if watcher:
            watcher.join()
    t_run = time.perf_counter()
    with FileSystems.open(join_path(out, COUNTS_FILE)) as f:
        counts = json.loads(f.read())
    FileSystems.delete([join_path(out, COUNTS_FILE)])
    summary = ingest_summary(
        counts,
        job="ingest",
        inputs=[redact(u) for u in uris],
        out=out,
        timings={"plan": t_plan - t0, "pipeline": t_run - t_plan, "total": time.perf_counter() - t0},
        extra={
            "format": format,
            "partitions": partitions,
            "workers": workers if is_local(options) else None,
            "worker_mode": worker_mode if is_local(options) and workers > 1 else None,
            "runner": "FnApiRunner" if is_local(options) else options.get_all_options().get("runner"),
        },
    )
    write_summary(summary, out)
    if not summary["conservation"]["ok"]:
        raise AisleError(f"counts not conserved: {summary['conservation']} (see {join_path(out, 'summary.json')})")
    return summary


def _size(uri: str) -> int:
    if uri.startswith("ftp://"):
        return 0
    try:
        return FileSystems.match([uri])[0].metadata_list[0].size_in_bytes
    except Exception:  # sizes are a hint only (partitions, workers, worker mode)
        return 0


def _catalog_products(catalog: str) -> str:
    if "://" not in catalog and os.path.isdir(os.path.join(catalog, "products")):
        return os.path.join(catalog, "products", "*.parquet")
    if "://" not in catalog and os.path.isdir(catalog):
        return os.path.join(catalog, "*.parquet")
    return catalog


def _show_progress(cfg: IngestConfig, uris: Sequence[str], stop: threading.Event) -> None:
    """Poll the staging folder to show how many chunks have been parsed."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    total = sum(max(1, math.ceil(_size(u) / cfg.chunk_bytes)) for u in uris)
    shuffle = os.path.join(cfg.staging, "_shuffle")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} chunks"), TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("ingesting", total=total)
        while not stop.wait(0.5):
            done = set()
            if os.path.isdir(shuffle):
                for part in os.listdir(shuffle):
                    try:
                        done.update(os.listdir(os.path.join(shuffle, part)))
                    except FileNotFoundError:
                        pass
            bar.update(task, completed=min(len(done), total))


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--input", "inputs", multiple=True, required=True, help="File, glob, folder, gs:// or ftp://user:pass@host/path (repeatable).")
@click.option("--out", required=True, help="Output folder (local or gs://).")
@click.option("--format", "format_", type=click.Choice(FORMATS), required=True, help="Input format.")
@click.option("--kind", type=click.Choice(["products", "events"]), default="events", show_default=True, help="Record kind for retail-json, csv and parquet inputs.")
@click.option("--mapping", help="Column mapping for csv/parquet: target=column,... (priceInfo.price=price, images=image_url, ...).")
@click.option("--currency", default="GBP", show_default=True, help="ISO 4217 currency for prices that carry none.")
@click.option("--catalog", help="Products (ingest output folder or Parquet) to count events that name unknown products.")
@click.option("--partitions", type=int, help="Output shards (default: one per 16 MB of input, at least 2).")
@click.option("--chunk-mb", type=float, default=4.0, show_default=True, help="Split size for parallel reads of one file.")
@click.option("--workers", type=int, help="Local workers (default: all cores for inputs over 8 MB, else 1).")
@click.option("--worker-mode", type=click.Choice(["auto", "threads", "processes"]), default="auto", show_default=True,
              help="Local workers as threads (the work is in Arrow kernels; no start-up cost) or processes; "
                   "auto: processes for inputs of 192 MiB or more, where their start-up pays (about 1.5x the memory).")
@click.option("--bigquery-dataset", help="Also load every output into BigQuery: project:dataset (tables products, user_events, cancellations, dead_letters).")
@click.option("--retail-json/--no-retail-json", default=False, show_default=True, help="Also write the Retail API's JSON import format.")
@click.pass_context
def command(ctx, inputs, out, format_, kind, mapping, currency, catalog, partitions, chunk_mb, workers, worker_mode, bigquery_dataset, retail_json):
    """Ingest catalog/event files into validated Parquet, dead letters and a run summary.

    Extra flags (--runner, --project, --region, --temp_location, ...) go to Beam.
    """
    summary = run_ingest(
        inputs,
        out,
        format=format_,
        kind=kind,
        mapping=mapping,
        currency=currency,
        partitions=partitions,
        chunk_mb=chunk_mb,
        workers=workers,
        worker_mode=worker_mode,
        retail_json=retail_json,
        catalog=catalog,
        bigquery_dataset=bigquery_dataset,
        beam_args=ctx.args,
        progress=True,
    )
    print_summary(summary)
    click.echo(join_path(out, "summary.json"))


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m pipelines.ingest`` (Dataflow flex templates use it)."""
    from pipelines.cli import main

    return main(["ingest", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(run())

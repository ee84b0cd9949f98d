"""``python -m pipelines.batch``: the batch flow as one job, ingest -> enrich -> recommend -> publish.

The entry point of the ``batch`` Dataflow flex template (``docker/flex_main.py``
runs it with the template's parameters and the launcher's Beam options),
and a way to run the flow without a KFP runner. Each stage is the same
function the ``batch`` KFP pipeline runs as a step (``components.kfp.*``),
called in sequence; each Beam stage gets the Beam flags, so with
``--runner=DataflowRunner ...`` every stage is a Dataflow job.

::

    python -m pipelines.batch --catalog gs://.../catalog --events gs://.../events \\
        --out gs://.../batch --config prod --set project=P [Beam flags]

Models are resolved from the registry of ``--config`` once, at launch
(``registry://ocr@production`` -> one checksummed version), and recorded
in ``<out>/summary_batch.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence

import click

from transforms.errors import ConfigError

__all__ = ["command", "infer_environment", "run", "run_batch"]


def _artifact(cls, uri: str, **metadata):
    return cls(name=uri.rstrip("/").rsplit("/", 1)[-1], uri=uri, metadata=dict(metadata))


_TEMP_BUCKET = re.compile(r"^gs://(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])-aisle-(?P<env>[a-z0-9]+)-dataflow(/|$)")


def infer_environment(beam_args: Sequence[str]) -> dict:
    """``{"env", "project"}`` from a ``--temp_location`` in the Terraform-named dataflow bucket, else ``{}``.

    The flex template launcher passes the spec's launch defaults
    (``tempLocation`` = ``gs://<project>-aisle-<env>-dataflow/temp``) as
    Beam flags, so a scheduled flex run knows its environment without a
    parameter of its own.

    >>> infer_environment(["--runner=DataflowRunner", "--temp_location=gs://acme-prod-1-aisle-prod-dataflow/temp"])
    {'env': 'prod', 'project': 'acme-prod-1'}
    """
    it = iter(beam_args)
    for arg in it:
        value = arg.split("=", 1)[1] if arg.startswith("--temp_location=") else next(it, "") if arg == "--temp_location" else None
        if value and (m := _TEMP_BUCKET.match(value)):
            return {"env": m.group("env"), "project": m.group("project")}
    return {}


def run_batch(
    catalog: str,
    events: str,
    out: str,
    *,
    catalog_format: str = "",
    events_format: str = "",
    ocr_model: str = "registry://ocr@production",
    ner_model: str = "registry://ner@production",
    recommender_model: str = "registry://recommender@production",
    registry: Mapping | None = None,
    beam_args: Sequence[str] = (),
    clock=time.perf_counter,
) -> dict:
    """Run the four stages in order; returns ``{"out", "steps": [{step, seconds}], "models", "work"}``.

    Intermediate outputs go to ``<out>/_work/<run id>/`` and are removed
    once ``publish`` has swapped the results into ``<out>``.
    """
    from apache_beam.io.filesystems import FileSystems
    from kfp import dsl

    from components.kfp.enrich import enrich
    from components.kfp.ingest import ingest
    from components.kfp.publish import publish
    from components.kfp.recommend import recommend

    run_id = f"batch-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    work = FileSystems.join(out, "_work", run_id)
    reg = dict(registry or {})
    args = [str(a) for a in beam_args]
    steps = []

    def step(name, fn, **kwargs):
        t0 = clock()
        fn.python_func(**kwargs)
        steps.append({"step": name, "seconds": round(clock() - t0, 2)})

    products = _artifact(dsl.Dataset, FileSystems.join(work, "catalog"))
    purchases = _artifact(dsl.Dataset, FileSystems.join(work, "events"))
    step("ingest catalog", ingest, inputs=catalog, format=catalog_format, kind="products", dataset=products,
         metrics=_artifact(dsl.Metrics, FileSystems.join(work, "m-catalog")), beam_args=args)
    step("ingest events", ingest, inputs=events, format=events_format, kind="events", dataset=purchases,
         metrics=_artifact(dsl.Metrics, FileSystems.join(work, "m-events")), beam_args=args)
    enriched = _artifact(dsl.Dataset, FileSystems.join(work, "enriched"))
    step("enrich", enrich, catalog=products, enriched=enriched, metrics=_artifact(dsl.Metrics, FileSystems.join(work, "m-enrich")),
         registry=reg, ocr_model=ocr_model, ner_model=ner_model, beam_args=args)
    recs = _artifact(dsl.Dataset, FileSystems.join(work, "recommendations"))
    step("recommend", recommend, events=purchases, recommendations=recs, metrics=_artifact(dsl.Metrics, FileSystems.join(work, "m-rec")),
         registry=reg, model=recommender_model, beam_args=args)
    summary_md = _artifact(dsl.Markdown, os.path.join(work, "summary.md") if "://" not in work else FileSystems.join(work, "summary.md"))
    step("publish", publish, enriched=enriched, recommendations=recs, out=out, summary=summary_md,
         metrics=_artifact(dsl.Metrics, FileSystems.join(work, "m-publish")), run_name=run_id)

    with FileSystems.open(FileSystems.join(out, "summary_batch.json")) as fh:
        record = json.loads(fh.read())
    if "://" in work:
        leftovers = FileSystems.match([FileSystems.join(work, "**")])[0].metadata_list
        if leftovers:
            FileSystems.delete([m.path for m in leftovers])
    else:
        shutil.rmtree(work, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(work))
        except OSError:
            pass
    return {"run": run_id, "out": out, "steps": steps, "models": record.get("models")}


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--catalog", required=True, help="Products: an ingest output folder, or with --catalog-format the raw files.")
@click.option("--events", required=True, help="User events: an ingest output folder, or with --events-format the raw files.")
@click.option("--out", required=True, help="Folder the enriched catalog, the recommendations and summary_batch.json are published to.")
@click.option("--catalog-format", default="", help='"" (default): --catalog is already validated; else retail-json, csv, parquet.')
@click.option("--events-format", default="", help='"" (default): --events is an ingest output; else online-retail, retail-json, csv, parquet.')
@click.option("--config", "config_name", default=None, help="Environment whose model registry to use (local, dev, prod); default local for local runs.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override (repeatable), e.g. --set project=P.")
@click.pass_context
def command(ctx, catalog, events, out, catalog_format, events_format, config_name, overrides):
    """Ingest -> enrich (OCR + NER) -> recommend -> publish, with the registered production models.

    Extra flags (--runner, --project, --region, --temp_location, ...) go to Beam.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.config import load_config
    from pipelines.kfp_cli import _registry
    from pipelines.options import is_local

    local = is_local(PipelineOptions(list(ctx.args)))
    inferred = {} if local or config_name else infer_environment(ctx.args)
    if config_name is None:
        if not local and not inferred:
            raise ConfigError(
                "a remote run needs --config dev|prod (it names the model registry), or a --temp_location in the "
                "Terraform-created bucket gs://<project>-aisle-<env>-dataflow/ to infer it from"
            )
        config_name = inferred.get("env", "local")
    inferred_project = [f"project={inferred['project']}"] if "project" in inferred else []
    cfg = load_config(config_name, [*inferred_project, *overrides])
    b = cfg.batch
    summary = run_batch(
        catalog, events, out, catalog_format=catalog_format, events_format=events_format,
        ocr_model=b.ocr_model, ner_model=b.ner_model, recommender_model=b.recommender_model,
        registry=_registry(cfg, local=local), beam_args=ctx.args,
    )
    click.echo(json.dumps(summary, indent=2))


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m pipelines.batch`` (the flex template launcher runs this)."""
    import sys

    from transforms.errors import AisleError

    try:
        command.main(args=list(argv if argv is not None else sys.argv[1:]), prog_name="python -m pipelines.batch", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except AisleError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(run())

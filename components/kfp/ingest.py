"""KFP component ``ingest``: validate and normalize input files (``pipelines.ingest.run_ingest``).

With ``format=""`` the input is taken as already validated: an ingest
output folder (for example the nightly ingest job's folder in the
processed bucket) or a Product/UserEvent file; it is checked and *named*
by the output Dataset (``metadata["location"]``), not copied. Beam options in ``beam_args`` pass through, so on Vertex AI
the step launches a Dataflow job (``--runner=DataflowRunner ...``) whose
output is the Dataset's ``gs://`` URI.
"""


from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components.kfp.images import AISLE_IMAGE


@dsl.component(base_image=AISLE_IMAGE, install_kfp_package=False)
def ingest(
    inputs: str,
    format: str,
    dataset: Output[Dataset],
    metrics: Output[Metrics],
    kind: str = "events",
    currency: str = "GBP",
    mapping: str = "",
    beam_args: list = [],  # noqa: B006 - KFP parameter defaults are literals; never mutated
):
    """Ingest ``inputs`` (comma-separated paths/globs) in ``format``; ``format=""``: already ingested."""
    import json

    from apache_beam.io.filesystems import FileSystems

    from components.kfp._common import log_metrics, output_location
    from transforms.errors import SourceError

    if not format:
        folder = inputs.rstrip("/")
        found = [
            sub
            for sub in ("products", "events")
            if FileSystems.match([FileSystems.join(folder, sub, "*.parquet")])[0].metadata_list
        ]
        if not found and not FileSystems.match([folder])[0].metadata_list:
            raise SourceError(
                f"format='' means {inputs!r} is already validated (an ingest output folder or a Product/UserEvent file), "
                "but nothing is there: pass an existing location, or the raw files with their format"
            )
        dataset.metadata["location"] = folder
        dataset.metadata["kinds"] = found or ["as-is"]
        summary = {}
        summary_path = FileSystems.join(folder, "summary.json")
        if FileSystems.exists(summary_path):
            with FileSystems.open(summary_path) as fh:
                summary = json.loads(fh.read())
        log_metrics(metrics, {k: v for k, v in summary.items() if k in ("read", "dead_letter", "duplicates", "outputs", "records")})
        return

    from pipelines.ingest import run_ingest

    out = output_location(dataset)
    summary = run_ingest(
        [p.strip() for p in inputs.split(",") if p.strip()],
        out,
        format=format,
        kind=kind,
        mapping=mapping or None,
        currency=currency,
        beam_args=[str(a) for a in beam_args],
    )
    dataset.metadata["location"] = out
    dataset.metadata["format"] = format
    log_metrics(metrics, {k: v for k, v in summary.items() if k not in ("conservation", "partitions", "workers")})

"""KFP component ``recommend``: similar items, frequently bought together and recommended-for-you (``pipelines.recommend.run``).

Resolves ``model`` (``registry://recommender@production``) to one
checksummed version at launch; the version's ``serving.json`` names the
engine (SavedModel or the chosen TFLite file). ``beam_args`` pass through
to Beam, so on Vertex the step launches a Dataflow job.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.kfp.images import AISLE_IMAGE


@dsl.component(base_image=AISLE_IMAGE, install_kfp_package=False)
def recommend(
    events: Input[Dataset],
    recommendations: Output[Dataset],
    metrics: Output[Metrics],
    registry: dict = {},  # noqa: B006
    model: str = "registry://recommender@production",
    k: int = 10,
    beam_args: list = [],  # noqa: B006
):
    """Recommendations from the purchase events of ``events`` (an ingest output with events/ and products/)."""
    import json

    from apache_beam.io.filesystems import FileSystems

    from components.kfp._common import location, log_metrics, output_location, write_text
    from components.kfp._models import make_registry, resolve
    from pipelines.recommend import run

    source = location(events).rstrip("/")
    events_dir = FileSystems.join(source, "events")
    products_dir = FileSystems.join(source, "products")
    catalog = products_dir if FileSystems.match([FileSystems.join(products_dir, "*.parquet")])[0].metadata_list else None
    model_dir, info = resolve(model, make_registry(registry))
    options = {"engine": "auto"}  # no serving choice recorded: the INT8 file beside the model when there is one
    if model_dir:
        serving_path = FileSystems.join(model_dir, "serving.json")
        if FileSystems.exists(serving_path):
            with FileSystems.open(serving_path) as fh:
                serving = json.loads(fh.read())
            if serving.get("engine") == "tflite":
                options = {"engine": "tflite", "tflite_path": FileSystems.join(model_dir, serving["tflite"])}
            else:
                options = {"engine": "saved_model"}
    out = output_location(recommendations)
    summary = run(events=events_dir, catalog=catalog, out_dir=out, model_dir=model_dir, beam_args=[str(a) for a in beam_args],
                  echo=lambda *a, **kw: None, k=k, **options)
    summary["model_version"] = info
    write_text(out.rstrip("/") + "/summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    recommendations.metadata.update({"location": out, "model": info.get("version") or info.get("uri"), "engine": summary["engine"]})
    log_metrics(metrics, {k2: summary.get(k2) for k2 in ("outputs", "dead_letters", "seconds", "train_seconds") if k2 in summary})

"""KFP component ``enrich``: OCR (and NER, where the enrich job provides it) over the catalog images.

Resolves the model URIs (``registry://ocr@production``) to concrete,
checksummed versions when the step starts, runs ``pipelines.enrich.run_enrich``
with them as a Beam job (``beam_args`` pass through: ``--runner=DataflowRunner
...`` on Vertex) and records the versions in the Dataset's metadata and
in the run summary.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.kfp.images import AISLE_IMAGE


@dsl.component(base_image=AISLE_IMAGE, install_kfp_package=False)
def enrich(
    catalog: Input[Dataset],
    enriched: Output[Dataset],
    metrics: Output[Metrics],
    registry: dict = {},  # noqa: B006
    ocr_model: str = "registry://ocr@production",
    ner_model: str = "registry://ner@production",
    batch_size: int = 4,
    beam_args: list = [],  # noqa: B006
):
    """Enrich the products of ``catalog``; a model URI "" uses the model packaged with aisle."""
    import inspect
    import json

    from components.kfp._common import location, log_metrics, output_location, write_text
    from components.kfp._models import make_registry, resolve
    from pipelines.enrich import run_enrich

    reg = make_registry(registry)
    ocr_path, ocr_info = resolve(ocr_model, reg)
    models = {"ocr": ocr_info}
    kwargs = {}
    params = inspect.signature(run_enrich).parameters
    if "ner_model" in params:  # the NER half of the enrich job
        ner_path, models["ner"] = resolve(ner_model, reg)
        kwargs["ner_model"] = ner_path
    else:
        models["ner"] = {"uri": ner_model, "resolved": False, "skipped": "pipelines.enrich.run_enrich has no NER stage yet"}
    out = output_location(enriched)
    summary = run_enrich(location(catalog), out, model_dir=ocr_path, batch_size=batch_size, beam_args=[str(a) for a in beam_args], **kwargs)
    summary["model_versions"] = models
    write_text(out.rstrip("/") + "/summary_enrich.json", json.dumps(summary, indent=2, default=str) + "\n")
    enriched.metadata.update({"location": out, "models": {k: v.get("version") or v.get("uri") for k, v in models.items()}})
    log_metrics(metrics, {k: summary.get(k) for k in ("read", "dead_letter", "outputs", "records", "timings_secs") if k in summary})

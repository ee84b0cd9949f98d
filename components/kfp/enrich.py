"""KFP component ``enrich``: OCR over the catalog images, then NER and attribute rules over product text and OCR text.

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
    """Enrich the products of ``catalog``; ``ocr_model=""`` uses the packaged OCR models, ``ner_model=""`` skips NER."""
    import json

    from components.kfp._common import location, log_metrics, output_location, write_text
    from components.kfp._models import make_registry, resolve
    from pipelines.enrich import run_enrich

    reg = make_registry(registry)
    ocr_path, ocr_info = resolve(ocr_model, reg)
    ner_path, ner_info = resolve(ner_model, reg)
    models = {"ocr": ocr_info, "ner": ner_info}
    out = output_location(enriched)
    summary = run_enrich(location(catalog), out, model_dir=ocr_path, ner_model=ner_path, batch_size=batch_size,
                         beam_args=[str(a) for a in beam_args])
    summary["model_versions"] = models
    write_text(out.rstrip("/") + "/summary_enrich.json", json.dumps(summary, indent=2, default=str) + "\n")
    enriched.metadata.update({"location": out, "models": {k: v.get("version") or v.get("uri") for k, v in models.items()}})
    log_metrics(metrics, {k: summary.get(k) for k in ("read", "dead_letter", "outputs", "records", "timings_secs") if k in summary})

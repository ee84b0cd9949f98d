"""The KFP pipelines of aisle: ``training`` and ``batch``, and their compilation.

``training``::

    ingest ─┬─ train_recommender ── quantize_recommender ── evaluate ── register (recommender)
            │
    train_ner ── quantize_ner ── evaluate ── register (ner)
    quantize_ocr (fine-tune the recognizer's head if labelled pages are given, calibrate + quantize) ── evaluate ── register (ocr)

``batch``::

    ingest (catalog) ── enrich (OCR + NER) ──┐
    ingest (events) ─── recommend ───────────┴── publish

Definitions are separate from running them: :func:`compile_pipeline`
writes the YAML Vertex AI Pipelines runs (with the configured container
image); :mod:`pipelines.kfp_cli` runs it locally or submits it. Nothing
here imports google.cloud.aiplatform.

Caching: steps whose inputs are *paths* to data that changes under the
same name (ingest, enrich, recommend) and steps with side effects
(register, publish) never use the cache; the model steps do, since their
inputs are artifacts produced in the same run.
"""


import pathlib
from collections.abc import Mapping

from kfp import compiler, dsl

from components.kfp.enrich import enrich
from components.kfp.evaluate import evaluate
from components.kfp.images import AISLE_IMAGE
from components.kfp.ingest import ingest
from components.kfp.publish import publish
from components.kfp.quantize_ner import quantize_ner
from components.kfp.quantize_ocr import quantize_ocr
from components.kfp.quantize_recommender import quantize_recommender
from components.kfp.recommend import recommend
from components.kfp.register import register
from components.kfp.train_ner import train_ner
from components.kfp.train_recommender import train_recommender
from transforms.errors import ConfigError

__all__ = ["PIPELINES", "batch", "compile_pipeline", "training", "NO_CACHE_STEPS"]

LOCAL_REGISTRY = {"backend": "local", "root": "out/registry"}
# Component names that must never be served from the cache (see the module docstring).
NO_CACHE_STEPS = ("ingest", "enrich", "recommend", "register", "publish")


def _no_cache(task):
    return task.set_caching_options(False)


def _resources(task, cpu: str, memory: str):
    """Vertex AI machine size of a step (the local runner ignores it)."""
    return task.set_cpu_limit(cpu).set_memory_limit(memory)


@dsl.pipeline(
    name="aisle-training",
    description="Ingest -> train NER and recommender -> optimize and quantize every model (OCR included) -> evaluate all candidates -> register the chosen ones.",
)
def training(
    events: str,
    ner_train: str,
    ocr_images: str,
    events_format: str = "online-retail",
    ner_eval: str = "",
    ner_base_model: str = "",
    ner_epochs: int = 1,
    ner_max_steps: int = 0,
    ner_batch_size: int = 16,
    ner_max_length: int = 64,
    ner_learning_rate: float = 1e-4,
    ner_max_train_sentences: int = 0,
    ner_max_eval_sentences: int = 0,
    ner_candidates: list = ["fp32", "fp32_fused", "int8_dynamic", "int8_static", "int8_mixed"],  # noqa: B006
    ner_max_f1_drop: float = 1.0,
    ner_latency_budget_ms: float = 0.0,
    rec_split: str = "",
    rec_dim: int = 32,
    rec_epochs: int = 2,
    rec_candidates: list = ["fp32", "fp16", "dynamic", "int8"],  # noqa: B006
    rec_max_drop: float = 0.02,
    rec_latency_budget_ms: float = 0.0,
    ocr_candidates: list = ["fp32", "fp16", "int8_dynamic", "int8_static", "int8_detector", "int8_fp32_small", "mixed", "int8_qat"],  # noqa: B006
    ocr_labelled_pages: str = "",
    ocr_max_drop: float = 0.05,
    ocr_latency_budget_ms: float = 0.0,
    eval_repeats: int = 10,
    registry: dict = LOCAL_REGISTRY,
    promote: bool = True,
    beam_args: list = [],  # noqa: B006
):
    data = _no_cache(ingest(inputs=events, format=events_format, beam_args=beam_args)).set_display_name("ingest events")

    # NER: train -> candidates -> evaluate -> register
    ner_model = _resources(
        train_ner(
            train_data=ner_train,
            eval_data=ner_eval,
            base_model=ner_base_model,
            epochs=ner_epochs,
            max_steps=ner_max_steps,
            batch_size=ner_batch_size,
            max_length=ner_max_length,
            learning_rate=ner_learning_rate,
            max_train_sentences=ner_max_train_sentences,
            max_eval_sentences=ner_max_eval_sentences,
        ),
        "8",
        "32G",
    ).set_display_name("train NER")
    ner_cands = quantize_ner(
        model=ner_model.outputs["model"], heldout=ner_model.outputs["heldout"], include=ner_candidates,
        max_f1_drop=ner_max_f1_drop, max_length=ner_max_length,
    ).set_display_name("optimize and quantize NER")
    ner_eval_task = evaluate(
        family="ner", candidates=ner_cands.outputs["candidates"], heldout=ner_model.outputs["heldout"],
        max_drop=ner_max_f1_drop, latency_budget_ms=ner_latency_budget_ms, repeats=eval_repeats,
    ).set_display_name("evaluate NER candidates")
    _no_cache(
        register(name="ner", model=ner_eval_task.outputs["chosen"], registry=registry, promote=promote,
                 run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
    ).set_display_name("register NER")

    # Recommender: train on the ingested events -> TFLite candidates -> evaluate -> register
    rec_model = _resources(
        train_recommender(events=data.outputs["dataset"], split=rec_split, dim=rec_dim, epochs=rec_epochs), "8", "32G"
    ).set_display_name("train recommender")
    rec_cands = quantize_recommender(
        model=rec_model.outputs["model"], heldout=rec_model.outputs["heldout"], include=rec_candidates
    ).set_display_name("optimize and quantize recommender")
    rec_eval_task = evaluate(
        family="recommender", candidates=rec_cands.outputs["candidates"], heldout=rec_model.outputs["heldout"],
        max_drop=rec_max_drop, latency_budget_ms=rec_latency_budget_ms, repeats=eval_repeats,
    ).set_display_name("evaluate recommender candidates")
    _no_cache(
        register(name="recommender", model=rec_eval_task.outputs["chosen"], registry=registry, promote=promote,
                 run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
    ).set_display_name("register recommender")

    # OCR: the packaged PP-OCRv4 models (their recognizer's head fine-tuned on ocr_labelled_pages when given),
    # calibrated and quantized -> evaluate -> register
    ocr_cands = _resources(quantize_ocr(images=ocr_images, include=ocr_candidates, labelled_pages=ocr_labelled_pages), "8", "32G").set_display_name(
        "calibrate and quantize OCR"
    )
    ocr_eval_task = evaluate(
        family="ocr", candidates=ocr_cands.outputs["candidates"], heldout=ocr_cands.outputs["heldout"],
        max_drop=ocr_max_drop, latency_budget_ms=ocr_latency_budget_ms, repeats=3,
    ).set_display_name("evaluate OCR candidates")
    _no_cache(
        register(name="ocr", model=ocr_eval_task.outputs["chosen"], registry=registry, promote=promote,
                 run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
    ).set_display_name("register OCR")


@dsl.pipeline(
    name="aisle-batch",
    description="Ingest -> enrich (OCR + NER) -> recommend -> publish, with the registered production models.",
)
def batch(
    catalog: str,
    events: str,
    out: str,
    catalog_format: str = "",
    events_format: str = "",
    ocr_model: str = "registry://ocr@production",
    ner_model: str = "registry://ner@production",
    recommender_model: str = "registry://recommender@production",
    registry: dict = LOCAL_REGISTRY,
    beam_args: list = [],  # noqa: B006
):
    products = _no_cache(ingest(inputs=catalog, format=catalog_format, kind="products", beam_args=beam_args)).set_display_name(
        "ingest catalog"
    )
    purchases = _no_cache(ingest(inputs=events, format=events_format, kind="events", beam_args=beam_args)).set_display_name(
        "ingest events"
    )
    enriched = _no_cache(
        enrich(catalog=products.outputs["dataset"], registry=registry, ocr_model=ocr_model, ner_model=ner_model, beam_args=beam_args)
    ).set_display_name("enrich (OCR + NER)")
    recs = _no_cache(
        recommend(events=purchases.outputs["dataset"], registry=registry, model=recommender_model, beam_args=beam_args)
    ).set_display_name("recommend")
    _no_cache(
        publish(enriched=enriched.outputs["enriched"], recommendations=recs.outputs["recommendations"], out=out,
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
    ).set_display_name("publish")


PIPELINES = {"training": training, "batch": batch}


def compile_pipeline(name: str, out_path: str | pathlib.Path, *, image: str | None = None,
                     parameter_defaults: Mapping | None = None) -> str:
    """Compile pipeline ``name`` to YAML at ``out_path``; every executor runs ``image`` when given.

    ``parameter_defaults`` replace the pipeline's default parameter values
    in the YAML (e.g. the configured registry and Beam runner options, so
    a scheduled run needs only ``catalog``, ``events`` and ``out``).
    """
    import yaml

    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}: choose one of {sorted(PIPELINES)}")
    out = pathlib.Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(PIPELINES[name], package_path=str(out), pipeline_parameters=dict(parameter_defaults or {}) or None)
    if image and image != AISLE_IMAGE:
        spec = yaml.safe_load(out.read_text())
        for executor in spec["deploymentSpec"]["executors"].values():
            if "container" in executor:
                executor["container"]["image"] = image
        out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(out)

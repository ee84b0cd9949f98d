"""KFP component functions called directly (``component.python_func``) with artifact objects in a temp folder."""

from __future__ import annotations

import json
import logging
import os
import pathlib

import pytest
from kfp import dsl

from components.kfp import _common
from components.registry import LocalRegistry
from tests.ner_support import SENTENCES, build_tiny_base
from transforms.errors import AisleError, ConfigError, SourceError

ROOT = pathlib.Path(__file__).resolve().parents[1]
RETAIL = ROOT / "samples" / "retail" / "online_retail_sample.csv"


def _art(cls, tmp_path, name, **metadata):
    return cls(name=name, uri=str(tmp_path / name), metadata=dict(metadata))


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def test_flatten_numbers_and_locations(tmp_path):
    assert _common.flatten_numbers({"a": 1, "b": {"c": 2.5, "d": "x", "e": True, "f": float("nan")}}) == {"a": 1.0, "b.c": 2.5}
    local = _art(dsl.Dataset, tmp_path, "d")
    assert _common.location(local) == str(tmp_path / "d")
    named = _art(dsl.Dataset, tmp_path, "n", location="gs://bucket/processed/events")
    assert _common.location(named) == "gs://bucket/processed/events"
    remote = dsl.Dataset(name="r", uri="gs://bucket/root/run/task/r", metadata={})
    assert _common.location(remote) == "gs://bucket/root/run/task/r"  # Beam workers need the URI, not /gcs/
    assert _common.output_location(remote) == "gs://bucket/root/run/task/r"
    with pytest.raises(ConfigError, match="family='x': expected one of"):
        _common.check_choice("family", "x", ["ner", "ocr"])


def test_step_clock_reads_the_local_runner_log():
    from pipelines.kfp_cli import _StepClock

    ticks = iter([10.0, 12.5, 20.0, 21.0])
    clock = _StepClock(clock=lambda: next(ticks))
    logger = logging.getLogger("test-step-clock")
    logger.addFilter(clock)
    logger.warning("Executing task \x1b[96m'train-ner'\x1b[0m")
    logger.warning("Task \x1b[96m'train-ner'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m")
    logger.warning("Executing task 'evaluate'")
    logger.warning("Task 'evaluate' finished with status FAILURE")
    assert clock.steps == [
        {"step": "train-ner", "status": "SUCCESS", "seconds": 2.5},
        {"step": "evaluate", "status": "FAILURE", "seconds": 1.0},
    ]


# ---------------------------------------------------------------------------
# ingest
# ---------------------------------------------------------------------------


def test_ingest_component_runs_the_ingest_job(tmp_path):
    from components.kfp.ingest import ingest

    dataset, metrics = _art(dsl.Dataset, tmp_path, "dataset"), _art(dsl.Metrics, tmp_path, "metrics")
    ingest.python_func(inputs=str(RETAIL), format="online-retail", dataset=dataset, metrics=metrics, beam_args=[])
    out = pathlib.Path(dataset.metadata["location"])
    assert out == tmp_path / "dataset"
    summary = json.loads((out / "summary.json").read_text())
    assert list((out / "events").glob("*.parquet")) and list((out / "products").glob("*.parquet"))
    assert metrics.metadata["read"] == summary["read"] == 4000
    assert metrics.metadata["records.products"] == summary["records"]["products"]

    # format="" names an existing ingest output instead of copying it
    named, m2 = _art(dsl.Dataset, tmp_path, "named"), _art(dsl.Metrics, tmp_path, "m2")
    ingest.python_func(inputs=str(out), format="", dataset=named, metrics=m2)
    assert named.metadata["location"] == str(out) and named.metadata["kinds"] == ["products", "events"]
    assert not (tmp_path / "named").exists()
    assert m2.metadata["read"] == 4000
    with pytest.raises(SourceError, match="already validated"):
        ingest.python_func(inputs=str(tmp_path / "nothing"), format="", dataset=named, metrics=m2)


# ---------------------------------------------------------------------------
# NER chain: train -> quantize -> evaluate -> register, on a tiny model
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ner_chain(tmp_path_factory):
    from components.kfp._ner import write_sentences
    from components.kfp.evaluate import evaluate
    from components.kfp.quantize_ner import quantize_ner
    from components.kfp.train_ner import train_ner

    tmp = tmp_path_factory.mktemp("ner-chain")
    base = build_tiny_base(tmp / "base")
    data = write_sentences(SENTENCES * 4, str(tmp / "train.txt"))
    model, heldout, m1 = _art(dsl.Model, tmp, "model"), _art(dsl.Dataset, tmp, "heldout"), _art(dsl.Metrics, tmp, "m1")
    train_ner.python_func(train_data=data, model=model, heldout=heldout, metrics=m1, base_model=base, epochs=2, batch_size=4, max_length=32)
    cands, m2 = _art(dsl.Model, tmp, "candidates"), _art(dsl.Metrics, tmp, "m2")
    quantize_ner.python_func(model=model, heldout=heldout, candidates=cands, metrics=m2, include=["fp32", "int8_dynamic"], max_f1_drop=100.0, max_length=32)
    chosen, report, m3 = _art(dsl.Model, tmp, "chosen"), _art(dsl.HTML, tmp, "report.html"), _art(dsl.Metrics, tmp, "m3")
    name = evaluate.python_func(family="ner", candidates=cands, heldout=heldout, chosen=chosen, report=report, metrics=m3,
                                max_drop=100.0, repeats=2)
    return tmp, model, heldout, m1, cands, m2, chosen, report, m3, name


def test_train_ner_component(ner_chain):
    tmp, model, heldout, m1, *_ = ner_chain
    assert (tmp / "model" / "config.json").is_file()
    assert model.metadata["family"] == "ner" and model.metadata["framework"] == "pytorch"
    sizes = {k: heldout.metadata[k] for k in ("train", "tune", "test")}
    assert sizes == {"train": 26, "tune": 3, "test": 3}  # 32 sentences, 80/10/10
    assert (tmp / "heldout" / "test.txt").read_text().count("\n\n") == 3
    assert m1.metadata["sentences.train"] == 26.0 and "best_f1" in m1.metadata


def test_quantize_ner_component(ner_chain):
    tmp, _, _, _, cands, m2, *_ = ner_chain
    manifest = json.loads((tmp / "candidates" / "candidates.json").read_text())
    assert manifest["family"] == "ner" and manifest["reference"] == "fp32"
    assert set(manifest["candidates"]) == {"fp32", "int8_dynamic"}
    for rel in manifest["candidates"].values():
        assert (tmp / "candidates" / rel / "model.onnx").is_file()
    assert m2.metadata["size_mb.fp32"] > m2.metadata["size_mb.int8_dynamic"]


def test_evaluate_component_reports_every_candidate(ner_chain):
    tmp, *_, chosen, report, m3, name = ner_chain
    assert name in ("fp32", "int8_dynamic")
    assert chosen.metadata["candidate"] == name and chosen.metadata["framework"] == "onnx"
    assert (tmp / "chosen" / "model.onnx").is_file()
    html = (tmp / "report.html").read_text()
    assert "fp32" in html and "int8_dynamic" in html and "data:image/png;base64," in html
    for cand in ("fp32", "int8_dynamic"):
        assert f"{cand}.metrics.f1" in m3.metadata and f"{cand}.latency_ms_p95" in m3.metadata
    assert m3.metadata["chosen.metrics.f1"] == m3.metadata[f"{name}.metrics.f1"]


def test_evaluate_refuses_when_no_candidate_qualifies(ner_chain, tmp_path):
    from components.kfp.evaluate import evaluate

    _, _, heldout, _, cands, *_ = ner_chain
    chosen, report, m = _art(dsl.Model, tmp_path, "chosen"), _art(dsl.HTML, tmp_path, "r.html"), _art(dsl.Metrics, tmp_path, "m")
    with pytest.raises(AisleError, match="no candidate meets the constraints"):
        evaluate.python_func(family="ner", candidates=cands, heldout=heldout, chosen=chosen, report=report, metrics=m,
                             latency_budget_ms=1e-6, repeats=2)
    assert "none met the constraints" in (tmp_path / "r.html").read_text()  # the report still shows every candidate
    assert not (tmp_path / "chosen").exists()  # nothing to register
    with pytest.raises(ConfigError, match="family='recommender' got candidates of family 'ner'"):
        evaluate.python_func(family="recommender", candidates=cands, heldout=heldout, chosen=chosen, report=report, metrics=m)


def test_register_component(ner_chain, tmp_path):
    from components.kfp.register import register

    *_, chosen, _, _, name = ner_chain
    registry = {"backend": "local", "root": str(tmp_path / "registry")}
    md = _art(dsl.Markdown, tmp_path, "registered.md")
    version = register.python_func(name="ner", model=chosen, registry=registry, registered=md, promote=False, run_name="run-1")
    assert version == "v1"
    reg = LocalRegistry(tmp_path / "registry")
    assert reg.aliases("ner") == {"latest": "v1"}
    meta = reg.metadata("ner", "v1")
    assert meta["source"]["candidate"] == name and meta["source"]["pipeline_run"] == "run-1"
    assert meta["framework"] == "onnx" and "f1" in meta["metrics"]
    assert "model.onnx" in meta["sha256"]
    version = register.python_func(name="ner", model=chosen, registry=registry, registered=md, promote=True)
    assert reg.aliases("ner") == {"latest": "v2", "production": "v2"}
    assert reg.resolve("ner@production").version == "v2"
    assert "| model.onnx |" in (tmp_path / "registered.md").read_text()
    with pytest.raises(ConfigError, match="registry section"):
        register.python_func(name="ner", model=chosen, registry={}, registered=md)


# ---------------------------------------------------------------------------
# publish
# ---------------------------------------------------------------------------


def test_publish_swaps_outputs_in_and_records_the_models(tmp_path):
    from components.kfp.publish import publish

    enriched_dir = tmp_path / "enriched_art"
    (enriched_dir / "ocr_text").mkdir(parents=True)
    (enriched_dir / "ocr_text" / "part-00000.parquet").write_bytes(b"PAR1")
    (enriched_dir / "summary_enrich.json").write_text(json.dumps({"job": "enrich", "read": 7}))
    recs_dir = tmp_path / "recs_art" / "similar_items"
    recs_dir.mkdir(parents=True)
    (recs_dir / "part-0.parquet").write_bytes(b"PAR1")
    enriched = dsl.Dataset(name="enriched", uri=str(enriched_dir), metadata={"location": str(enriched_dir), "models": {"ocr": "v1", "ner": "v2"}})
    recs = dsl.Dataset(name="recommendations", uri=str(tmp_path / "recs_art"), metadata={"location": str(tmp_path / "recs_art"), "model": "v3"})
    out = tmp_path / "published"
    (out / "enriched").mkdir(parents=True)
    (out / "enriched" / "stale.parquet").write_bytes(b"old")
    summary, metrics = _art(dsl.Markdown, tmp_path, "summary.md"), _art(dsl.Metrics, tmp_path, "m")
    publish.python_func(enriched=enriched, recommendations=recs, out=str(out), summary=summary, metrics=metrics, run_name="r1")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "enriched/ocr_text/part-00000.parquet",
        "enriched/summary_enrich.json",
        "recommendations/similar_items/part-0.parquet",
        "summary_batch.json",
    ]
    record = json.loads((out / "summary_batch.json").read_text())
    assert record["models"] == {"enrich": {"ocr": "v1", "ner": "v2"}, "recommend": "v3"}
    assert record["summaries"]["enriched"]["read"] == 7 and record["run"] == "r1"
    assert metrics.metadata == {"files.enriched": 2.0, "files.recommendations": 1.0}
    assert not [p for p in os.listdir(out) if p.startswith("_staging")]


def test_ocr_component_defaults_build_every_ocr_candidate():
    # the component signatures need literal defaults; they must not drift from the list the toolkit builds
    from components.kfp.pipelines import training
    from components.kfp.quantize_ocr import quantize_ocr
    from components.ocr_quantize import CANDIDATES, QAT_CANDIDATE

    assert quantize_ocr.component_spec.inputs["include"].default == [*CANDIDATES, QAT_CANDIDATE]
    assert training.component_spec.inputs["ocr_candidates"].default == [*CANDIDATES, QAT_CANDIDATE]

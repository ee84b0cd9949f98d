"""Both pipelines end to end under kfp's local runner on the bundled samples, with tiny model settings.

training: ingest the retail sample -> train a tiny NER model (a 2-layer BERT
built here) and a small recommender -> candidates for every model (OCR:
the packaged PP-OCRv4 models, the recognizer's head fine-tuned on the tiny
synthetic receipts, quantized) -> evaluate -> register in a
registry under tmp. batch: the registered production models enrich the
sample catalog and recommend from the retail sample; publish.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from components.kfp._ner import write_sentences
from components.registry import LocalRegistry
from pipelines.config import load_config
from pipelines.kfp_cli import run_local
from tests.ner_support import SENTENCES, build_tiny_base

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kfp-local")
    base = build_tiny_base(tmp / "ner-base")
    train = write_sentences(SENTENCES * 4, str(tmp / "ner-train.txt"))
    cfg = load_config(
        "local",
        [
            f"registry.root={tmp / 'registry'}",
            f"batch.out={tmp / 'published'}",
            f"training.ner.train={train}",
            f"training.ner.base_model={base}",
            "training.ner.epochs=2",
            "training.ner.max_steps=0",
            "training.ner.batch_size=4",
            "training.ner.max_length=32",
            "training.ner.candidates=[fp32, int8_dynamic]",
            "training.ner.max_f1_drop=100",
            "training.recommender.dim=8",
            "training.recommender.epochs=1",
            "training.recommender.candidates=[fp32, dynamic]",
            "training.recommender.max_metric_drop=1.0",
            "training.ocr.candidates=[fp32, int8_dynamic, int8_qat]",
            f"training.ocr.labelled_pages={ROOT / 'tests' / 'testdata' / 'ocr' / 'sroie_tiny'}",
            "training.ocr.max_agreement_drop=1.0",
            "training.eval_repeats=2",
        ],
    )
    scratch = tmp / "scratch"  # the steps' temporary folders, to check that none is left behind
    scratch.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(scratch))
        training = run_local("training", cfg, pipeline_root=str(tmp / "root"))
        batch = run_local("batch", cfg, pipeline_root=str(tmp / "root"))
    return tmp, training, batch


def test_training_runs_every_step(runs):
    tmp, training, _ = runs
    names = sorted(s["name"] for s in training["steps"])
    assert names == sorted(
        [
            "ingest events", "train NER", "train recommender",
            "optimize and quantize NER", "optimize and quantize recommender", "calibrate and quantize OCR",
            "evaluate NER candidates", "evaluate recommender candidates", "evaluate OCR candidates",
            "register NER", "register recommender", "register OCR",
        ]
    )
    assert {s["status"] for s in training["steps"]} == {"SUCCESS"}
    assert all(s["seconds"] > 0 for s in training["steps"])
    saved = json.loads((tmp / "root" / "training-summary.json").read_text())
    assert saved["steps"] == training["steps"]
    assert sorted(p.name for p in (tmp / "scratch").glob("aisle-*")) == []  # the steps removed their scratch copies


def test_training_registers_the_chosen_candidates(runs):
    tmp, training, _ = runs
    reg = LocalRegistry(tmp / "registry")
    allowed = {"ner": {"fp32", "int8_dynamic"}, "recommender": {"saved_model", "fp32", "dynamic"}, "ocr": {"fp32", "int8_dynamic", "int8_qat"}}
    for name, candidates in allowed.items():
        assert reg.aliases(name) == {"latest": "v1", "production": "v1"}
        model = reg.resolve(f"{name}@production")  # checksums verified
        assert model.metadata["source"]["candidate"] in candidates
        assert training["models"][name]["candidate"] == model.metadata["source"]["candidate"]
    assert (pathlib.Path(reg.resolve("ocr").path) / "det.onnx").is_file()
    # the OCR candidates were built from a recognizer whose head was fine-tuned on the labelled pages
    import onnx

    from transforms.inference.ocr import SPACE_PROB_KEY

    rec_meta = {m.key: m.value for m in onnx.load(str(pathlib.Path(reg.resolve("ocr").path) / "rec.onnx")).metadata_props}
    assert SPACE_PROB_KEY in rec_meta and "character" in rec_meta
    assert (pathlib.Path(reg.resolve("ner").path) / "model.onnx").is_file()
    serving = json.loads((pathlib.Path(reg.resolve("recommender").path) / "serving.json").read_text())
    assert serving["candidate"] == training["models"]["recommender"]["candidate"]
    # every evaluate step left an HTML report listing all its candidates
    reports = sorted((tmp / "root").glob("aisle-training-*/evaluate*/report"))
    assert len(reports) == 3
    for report in reports:
        assert "data:image/png;base64," in report.read_text()


def test_batch_uses_the_registered_models(runs):
    tmp, _, batch = runs
    assert [s["status"] for s in batch["steps"]] == ["SUCCESS"] * 5
    out = tmp / "published"
    record = json.loads((out / "summary_batch.json").read_text())
    assert record["models"] == {"enrich": {"ocr": "v1", "ner": "v1"}, "recommend": "v1"}
    enrich_summary = record["summaries"]["enriched"]
    assert enrich_summary["model_versions"]["ocr"]["sha256"] == LocalRegistry(tmp / "registry").resolve("ocr").sha256s
    assert list((out / "enriched" / "ocr_text").glob("*.parquet"))
    assert list((out / "enriched" / "catalog_enriched").glob("*.parquet"))
    for part in ("similar_items", "frequently_bought_together", "recommended_for_you"):
        assert list((out / "recommendations" / part).glob("*.parquet")), part


def test_batch_entry_point_runs_the_same_stages(runs, tmp_path):
    """``python -m pipelines.batch`` (the flex template's entry point): the four stages in sequence, no KFP runner."""
    from click.testing import CliRunner

    from pipelines.batch import command

    tmp, _, _ = runs
    out = tmp_path / "flex-out"
    result = CliRunner().invoke(
        command,
        ["--catalog", str(ROOT / "samples" / "catalog_images.jsonl"), "--events", str(ROOT / "samples" / "retail" / "online_retail_sample.csv"),
         "--events-format", "online-retail", "--out", str(out), "--set", f"registry.root={tmp / 'registry'}"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [s["step"] for s in summary["steps"]] == ["ingest catalog", "ingest events", "enrich", "recommend", "publish"]
    assert summary["models"] == {"enrich": {"ocr": "v1", "ner": "v1"}, "recommend": "v1"}
    assert sorted(p.name for p in out.iterdir()) == ["enriched", "recommendations", "summary_batch.json"]  # _work removed

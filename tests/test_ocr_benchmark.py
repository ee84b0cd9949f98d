"""The ``python -m benchmarks.ocr`` interface on the tiny synthetic SROIE-layout fixture."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from benchmarks.ocr import main
from tests.conftest import TESTDATA
from transforms.errors import ConfigError


def test_benchmark_writes_per_candidate_figures(tmp_path):
    out = tmp_path / "ocr.json"
    # the Tesseract baseline needs Debian's tesseract-ocr (.ci/run installs it); without it the rest is still checked
    tesseract = shutil.which("tesseract") is not None
    rc = main([
        "--data", str(TESTDATA / "ocr" / "sroie_tiny"), "--json", str(out), "--limit", "2", "--n-calibration", "1",
        "--candidates", "fp32", "--no-stock", "--threads", "1", "--work-dir", str(tmp_path / "models"), "--no-finetune",
        "--report-dir", str(tmp_path / "report"), "--pipeline-images", "2", "--pipeline-rounds", "2", "--latency-budget-s", "1000",
        *([] if tesseract else ["--no-tesseract"]),
    ])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["chosen"] == "fp32"
    assert data["evaluation_ids"] == ["t001", "t002"] and data["calibration_ids"] == ["t003"]
    assert ("tesseract" in data["systems"]) == tesseract
    for system in ["fp32"] + (["tesseract"] if tesseract else []):
        fig = data["systems"][system]
        for key in ("word_f1", "cer", "secs_per_image", "det_recall"):
            assert key in fig
    assert data["systems"]["fp32"]["cer"] < 0.1  # clean synthetic print
    lo, hi = data["systems"]["fp32"]["word_f1_ci95"]
    assert lo <= data["systems"]["fp32"]["word_f1"] <= hi
    assert "word_f1_minus_fp32_ci95" not in data["systems"]["fp32"]  # no difference of FP32 to itself
    if tesseract:
        assert len(data["systems"]["tesseract"]["word_f1_minus_fp32_ci95"]) == 2
    assert data["pipeline"]["images"] == 2 and data["pipeline"]["pipeline_dead_letters"] == 0
    assert len(data["pipeline"]["raw_loop_secs_all"]) == len(data["pipeline"]["pipeline_secs_all"]) == 2
    # built in one child process, the pipeline ratio measured in another, the systems here
    built, measured, piped = data["processes"]["built"], data["processes"]["measured"], data["pipeline"]["pid"]
    assert measured == os.getpid() and len({built, measured, piped}) == 3
    # --pipeline-only re-measures the ratio with the built candidate and keeps the rest of the file
    rc = main([
        "--data", str(TESTDATA / "ocr" / "sroie_tiny"), "--json", str(out), "--limit", "2", "--n-calibration", "1",
        "--threads", "1", "--work-dir", str(tmp_path / "models"), "--pipeline-images", "1", "--pipeline-rounds", "1",
        "--pipeline-only", "fp32",
    ])
    again = json.loads(out.read_text())
    assert rc == 0 and again["pipeline"]["images"] == 1 and again["pipeline"]["candidate"] == "fp32"
    assert again["systems"] == data["systems"]
    assert isinstance(data["cpu"]["flags"], list) and "model_name" in data["cpu"]
    assert (tmp_path / "report" / "report.html").exists() and (tmp_path / "report" / "accuracy_vs_latency.png").exists()


def test_benchmark_finetunes_on_the_pages_left_over(tmp_path):
    out = tmp_path / "ocr.json"
    rc = main([
        "--data", str(TESTDATA / "ocr" / "sroie_tiny"), "--json", str(out), "--limit", "1", "--n-calibration", "1",
        "--candidates", "fp32,int8_qat", "--no-stock", "--no-tesseract", "--threads", "1", "--work-dir", str(tmp_path / "models"),
        "--report-dir", str(tmp_path / "report"), "--pipeline-images", "0", "--latency-budget-s", "1000",
        "--finetune-dev", "0", "--finetune-epochs", "1", "--qat-epochs", "1",
    ])
    assert rc == 0
    data = json.loads(out.read_text())
    # evaluation t001, calibration t003: the recognizer's head is trained on t002 and nothing else
    assert data["evaluation_ids"] == ["t001"] and data["calibration_ids"] == ["t003"]
    assert data["finetune"]["train_ids"] == ["t002"] and data["finetune"]["dev_ids"] == []
    assert data["finetune"]["train_lines"] > 0
    assert set(data["systems"]) == {"fp32_shipped", "fp32", "int8_qat"}
    assert data["systems"]["fp32"]["notes"].startswith("fine-tuned head")
    # the same training page retrained the FP32 candidate's recognizer with INT8 simulated
    assert data["finetune"]["qat"]["train_lines"] == data["finetune"]["train_lines"]
    assert data["finetune"]["qat"]["space_prob"] is None  # no dev pages: the model's threshold is kept
    assert "INT8 simulated" in data["systems"]["int8_qat"]["notes"]
    assert data["chosen"] in ("fp32", "int8_qat")  # the shipped weights are a reference, not a candidate


def test_the_qat_candidate_needs_training_pages(tmp_path):
    with pytest.raises(ConfigError, match="int8_qat needs training pages"):
        main(["--data", str(TESTDATA / "ocr" / "sroie_tiny"), "--json", str(tmp_path / "ocr.json"), "--limit", "2", "--n-calibration", "1",
              "--candidates", "fp32,int8_qat", "--no-stock", "--no-tesseract", "--threads", "1", "--no-finetune",
              "--work-dir", str(tmp_path / "models")])


def test_a_missing_tesseract_is_reported_before_any_model_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no tesseract on it
    args = ["--data", str(TESTDATA / "ocr" / "sroie_tiny"), "--json", str(tmp_path / "ocr.json"), "--limit", "2", "--n-calibration", "1",
            "--candidates", "fp32", "--no-stock", "--threads", "1", "--work-dir", str(tmp_path / "models")]
    with pytest.raises(ConfigError, match="--no-tesseract"):
        main(args)
    assert not (tmp_path / "models").exists() and not (tmp_path / "ocr.json").exists()

"""checkov on terraform/: zero failed checks, every skip justified.

checkov lives in its own virtual environment, .venv-checkov (its pins clash
with Apache Beam's); `make checkov-venv` creates it from
tools/checkov/requirements.txt. Without it these tests skip and say so.
Runs offline: --skip-download keeps checkov from calling its platform.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TF = ROOT / "terraform"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def run_checkov(directory: pathlib.Path) -> list[dict]:
    """checkov's JSON reports (one per framework) for a directory."""
    if not CHECKOV.exists():
        pytest.skip(f"{CHECKOV} is absent: run `make checkov-venv` (checkov has its own venv, .venv-checkov)")
    env = {**os.environ, "ANSI_COLORS_DISABLED": "1", "LOG_LEVEL": "ERROR"}
    proc = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", "terraform", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    # checkov exits 1 when a check fails; anything else non-zero is an error.
    assert proc.returncode in (0, 1), f"checkov failed to run (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    if isinstance(report, dict) and "summary" in report and "results" not in report:
        return [{"summary": report["summary"], "results": {}}]  # nothing scanned
    return report if isinstance(report, list) else [report]


def failed_checks(reports: list[dict]) -> list[str]:
    return [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c.get('check_name', '')}"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]


@pytest.fixture(scope="module")
def reports() -> list[dict]:
    return run_checkov(TF)


def test_checkov_finds_no_failed_checks(reports):
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] > 0 and summary["passed"] > 0
    assert failed_checks(reports) == []
    assert sum(r["summary"]["failed"] for r in reports) == 0


def test_every_checkov_skip_is_justified(reports):
    skipped = [c for r in reports for c in r.get("results", {}).get("skipped_checks", [])]
    unjustified = [
        f"{c['check_id']} {c['resource']}" for c in skipped if len((c["check_result"].get("suppress_comment") or "").strip()) < 10
    ]
    assert unjustified == []


def test_checkov_fails_a_public_bucket(tmp_path):
    """The check above can fail: checkov flags a bucket without the platform's settings."""
    (tmp_path / "main.tf").write_text(
        'resource "google_storage_bucket" "open" {\n  name     = "open-bucket"\n  location = "EU"\n}\n'
    )
    failed = failed_checks(run_checkov(tmp_path))
    assert any(f.startswith("CKV_GCP_29 ") for f in failed), failed  # uniform bucket-level access
    assert any(f.startswith("CKV_GCP_114 ") for f in failed), failed  # public access prevention


def test_the_versioning_skip_covers_only_the_unversioned_buckets(tmp_path):
    """checkov skips apply to a whole for_each block: without the storage module's
    CKV_GCP_78 skip, only pipeline_root and dataflow fail it (landing, processed
    and models keep versions)."""
    storage = tmp_path / "storage"
    shutil.copytree(TF / "modules" / "storage", storage)
    main = storage / "main.tf"
    lines = main.read_text().splitlines(keepends=True)
    main.write_text("".join(line for line in lines if "checkov:skip=CKV_GCP_78:" not in line))
    failed = failed_checks(run_checkov(storage))
    assert sorted(f.split(" ")[1] for f in failed) == [
        'google_storage_bucket.this["dataflow"]',
        'google_storage_bucket.this["pipeline_root"]',
    ], failed
    assert all(f.startswith("CKV_GCP_78 ") for f in failed), failed

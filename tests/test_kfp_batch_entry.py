"""``python -m pipelines.batch`` option handling (the end-to-end run is in test_kfp_local.py)."""

from __future__ import annotations

from click.testing import CliRunner

from pipelines.batch import command, infer_environment


def test_infer_environment_from_the_terraform_temp_bucket():
    assert infer_environment(["--temp_location", "gs://acme-1-aisle-dev-dataflow/temp"]) == {"env": "dev", "project": "acme-1"}
    assert infer_environment(["--temp_location=gs://other-bucket/temp"]) == {}
    assert infer_environment([]) == {}


def test_remote_run_without_an_environment_is_refused(tmp_path):
    result = CliRunner().invoke(
        command, ["--catalog", "gs://c", "--events", "gs://e", "--out", "gs://o", "--runner=DataflowRunner", "--temp_location=gs://x/temp"]
    )
    assert result.exit_code != 0
    assert "needs --config dev|prod" in str(result.exception)

"""The Vertex AI submission path with an injected aiplatform client (no network), and the compile CLI."""

from __future__ import annotations

import pathlib
import types

import pytest
import yaml
from click.testing import CliRunner

from pipelines.kfp_cli import command, submit_pipeline, upload_templates
from transforms.errors import ConfigError


class FakeAiplatform:
    """Records what the submission would ask of google.cloud.aiplatform."""

    def __init__(self):
        self.calls: list[tuple] = []
        fake = self

        class PipelineJob:
            def __init__(self, **kwargs):
                fake.calls.append(("PipelineJob", kwargs))
                fake.template = yaml.safe_load(pathlib.Path(kwargs["template_path"]).read_text())
                self.resource_name = "projects/p/locations/r/pipelineJobs/1"

            def submit(self, **kwargs):
                fake.calls.append(("submit", kwargs))

            def create_schedule(self, **kwargs):
                fake.calls.append(("create_schedule", kwargs))
                return types.SimpleNamespace(resource_name="projects/p/locations/r/schedules/7")

        self.PipelineJob = PipelineJob

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))


def test_submit_pipeline_calls(tmp_path):
    template = tmp_path / "batch.yaml"
    template.write_text("pipelineInfo: {name: aisle-batch}\n")
    fake = FakeAiplatform()
    job = submit_pipeline(
        "batch", str(template), project="acme-1", region="europe-west1", pipeline_root="gs://acme-1-aisle-dev-pipeline-root/runs",
        parameter_values={"catalog": "gs://c", "events": "gs://e", "out": "gs://o"}, service_account="sa@x", client=fake,
    )
    assert fake.calls[0] == ("init", {"project": "acme-1", "location": "europe-west1"})
    name, kwargs = fake.calls[1]
    assert name == "PipelineJob"
    assert kwargs["template_path"] == str(template)
    assert kwargs["pipeline_root"] == "gs://acme-1-aisle-dev-pipeline-root/runs"
    assert kwargs["parameter_values"] == {"catalog": "gs://c", "events": "gs://e", "out": "gs://o"}
    assert kwargs["enable_caching"] is True
    assert fake.calls[2] == ("submit", {"service_account": "sa@x"})
    assert job.resource_name.endswith("pipelineJobs/1")


def test_schedule_instead_of_a_run(tmp_path):
    template = tmp_path / "t.yaml"
    template.write_text("{}\n")
    fake = FakeAiplatform()
    sched = submit_pipeline(
        "batch", str(template), project="p", region="r", pipeline_root="gs://b/runs", parameter_values={},
        schedule="0 3 * * *", time_zone="Europe/London", service_account="sa@x", client=fake,
    )
    assert fake.calls[-1] == ("create_schedule", {"cron": "TZ=Europe/London 0 3 * * *", "display_name": "aisle-batch-schedule", "service_account": "sa@x"})
    assert "submit" not in [c[0] for c in fake.calls]
    assert sched.resource_name.endswith("schedules/7")


def test_submit_refuses_a_local_pipeline_root(tmp_path):
    with pytest.raises(ConfigError, match="gs:// folder"):
        submit_pipeline("batch", "t.yaml", project="p", region="r", pipeline_root=str(tmp_path), parameter_values={}, client=FakeAiplatform())


def test_submit_cli_uses_the_dev_config(tmp_path):
    fake = FakeAiplatform()
    result = CliRunner().invoke(
        command,
        ["submit", "batch", "--config", "dev", "--project", "acme-1", "--schedule", "0 3 * * *",
         "--param", "out=gs://acme-1-aisle-dev-processed/batch-test"],
        obj={"aiplatform": fake},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    calls = dict((c[0], c[1]) for c in fake.calls)
    job = calls["PipelineJob"]
    assert job["display_name"] == "aisle-dev-batch"
    assert job["pipeline_root"] == "gs://acme-1-aisle-dev-pipeline-root/runs"
    assert job["labels"] == {"app": "aisle", "env": "dev", "pipeline": "batch"}
    values = job["parameter_values"]
    assert values["catalog"] == "gs://acme-1-aisle-dev-processed/catalog"
    assert values["out"] == "gs://acme-1-aisle-dev-processed/batch-test"
    assert values["registry"]["backend"] == "vertex"
    assert "--runner=DataflowRunner" in values["beam_args"]
    assert calls["create_schedule"] == {"cron": "TZ=Etc/UTC 0 3 * * *", "display_name": "aisle-dev-batch-schedule",
                                        "service_account": "aisle-dev-pipelines@acme-1.iam.gserviceaccount.com"}
    # the template submitted is the compiled batch pipeline with the aisle image
    images = {e["container"]["image"] for e in fake.template["deploymentSpec"]["executors"].values()}
    assert images == {"europe-west1-docker.pkg.dev/acme-1/aisle/aisle:latest"}


def test_submit_cli_needs_a_project():
    result = CliRunner().invoke(command, ["submit", "training", "--config", "dev"], obj={"aiplatform": FakeAiplatform()})
    assert result.exit_code != 0
    assert "--project" in str(result.exception)


def test_compile_cli_and_upload(tmp_path):
    result = CliRunner().invoke(command, ["compile", "--out", str(tmp_path / "yaml")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "yaml").iterdir()) == ["batch.yaml", "training.yaml"]
    uploaded = upload_templates({"batch": str(tmp_path / "yaml" / "batch.yaml")}, str(tmp_path / "templates"))
    assert uploaded == {"batch": str(tmp_path / "templates" / "batch.yaml")}
    assert (tmp_path / "templates" / "batch.yaml").read_text() == (tmp_path / "yaml" / "batch.yaml").read_text()


def test_run_without_local_is_refused():
    result = CliRunner().invoke(command, ["run", "training"])
    assert result.exit_code != 0 and "--local" in result.output

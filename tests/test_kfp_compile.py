"""Both pipelines compile; the YAML is parsed back and checked: components, wiring, parameters, artifact types, caching, image."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import yaml

from pipelines.config import load_config
from pipelines.kfp_cli import RUN_PARAMETERS, compile_all

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGE = "europe-west1-docker.pkg.dev/acme-1/aisle/aisle:abc123"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled")
    cfg = load_config("dev", ["project=acme-1", "image_tag=abc123"])
    paths = compile_all(cfg, str(out))
    return {name: yaml.safe_load(pathlib.Path(path).read_text()) for name, path in paths.items()}


def _tasks(spec):
    return spec["root"]["dag"]["tasks"]


def _component(spec, task):
    return spec["components"][_tasks(spec)[task]["componentRef"]["name"]]


def _executor(spec, task):
    label = _component(spec, task)["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]["container"]


def _deps(spec, task):
    return set(_tasks(spec)[task].get("dependentTasks", []))


def _artifact_type(spec, task, output):
    return _component(spec, task)["outputDefinitions"]["artifacts"][output]["artifactType"]["schemaTitle"]


def test_training_steps_and_wiring(compiled):
    spec = compiled["training"]
    assert spec["pipelineInfo"]["name"] == "aisle-training"
    names = {t: v["taskInfo"]["name"] for t, v in _tasks(spec).items()}
    assert sorted(names.values()) == sorted(
        [
            "ingest events", "train NER", "train recommender",
            "optimize and quantize NER", "optimize and quantize recommender", "calibrate and quantize OCR",
            "evaluate NER candidates", "evaluate recommender candidates", "evaluate OCR candidates",
            "register NER", "register recommender", "register OCR",
        ]
    )
    by_name = {v: t for t, v in names.items()}
    assert _deps(spec, by_name["train recommender"]) == {by_name["ingest events"]}
    assert _deps(spec, by_name["optimize and quantize NER"]) == {by_name["train NER"]}
    assert _deps(spec, by_name["evaluate NER candidates"]) == {by_name["optimize and quantize NER"], by_name["train NER"]}
    assert _deps(spec, by_name["register NER"]) == {by_name["evaluate NER candidates"]}
    assert _deps(spec, by_name["evaluate OCR candidates"]) == {by_name["calibrate and quantize OCR"]}
    assert _deps(spec, by_name["register OCR"]) == {by_name["evaluate OCR candidates"]}
    # register takes the chosen model and names it
    reg = _tasks(spec)[by_name["register recommender"]]["inputs"]
    assert reg["parameters"]["name"]["runtimeValue"]["constant"] == "recommender"
    assert reg["artifacts"]["model"]["taskOutputArtifact"] == {"outputArtifactKey": "chosen", "producerTask": by_name["evaluate recommender candidates"]}


def test_artifact_types(compiled):
    spec = compiled["training"]
    tasks = {v["taskInfo"]["name"]: t for t, v in _tasks(spec).items()}
    assert _artifact_type(spec, tasks["ingest events"], "dataset") == "system.Dataset"
    assert _artifact_type(spec, tasks["ingest events"], "metrics") == "system.Metrics"
    assert _artifact_type(spec, tasks["train NER"], "model") == "system.Model"
    assert _artifact_type(spec, tasks["train NER"], "heldout") == "system.Dataset"
    assert _artifact_type(spec, tasks["optimize and quantize NER"], "candidates") == "system.Model"
    assert _artifact_type(spec, tasks["evaluate NER candidates"], "chosen") == "system.Model"
    assert _artifact_type(spec, tasks["evaluate NER candidates"], "report") == "system.HTML"
    assert _artifact_type(spec, tasks["evaluate NER candidates"], "metrics") == "system.Metrics"
    assert _artifact_type(spec, tasks["register NER"], "registered") == "system.Markdown"
    batch = compiled["batch"]
    btasks = {v["taskInfo"]["name"]: t for t, v in _tasks(batch).items()}
    assert _artifact_type(batch, btasks["enrich (OCR + NER)"], "enriched") == "system.Dataset"
    assert _artifact_type(batch, btasks["recommend"], "recommendations") == "system.Dataset"
    assert _artifact_type(batch, btasks["publish"], "summary") == "system.Markdown"


def test_caching_settings(compiled):
    for spec in compiled.values():
        for task, body in _tasks(spec).items():
            component = body["componentRef"]["name"].removeprefix("comp-").rstrip("-0123456789")
            cached = body.get("cachingOptions", {}).get("enableCache", False)
            if component in ("ingest", "enrich", "recommend", "register", "publish"):
                assert not cached, f"{task} reads changing paths or has side effects: it must not be cached"
            else:
                assert cached, f"{task} is a pure function of its artifacts: it should be cacheable"


def test_parameters_and_types(compiled):
    params = compiled["training"]["root"]["inputDefinitions"]["parameters"]
    assert params["events"]["parameterType"] == "STRING" and "defaultValue" not in params["events"]
    assert params["ner_epochs"]["parameterType"] == "NUMBER_INTEGER"
    assert params["ner_max_f1_drop"]["parameterType"] == "NUMBER_DOUBLE"
    assert params["promote"]["parameterType"] == "BOOLEAN"
    assert params["registry"]["parameterType"] == "STRUCT"
    assert params["beam_args"]["parameterType"] == "LIST"
    # the config's settings are compiled in as defaults
    assert params["registry"]["defaultValue"]["backend"] == "vertex"
    assert params["registry"]["defaultValue"]["artifact_root"] == "gs://acme-1-aisle-dev-models/registry"
    assert "--runner=DataflowRunner" in params["beam_args"]["defaultValue"]
    assert params["ner_candidates"]["defaultValue"] == ["torch_fp32", "fp32", "fp32_fused", "int8_dynamic", "int8_static", "int8_mixed"]


def test_batch_parameters_match_the_terraform_schedules(compiled):
    """A scheduled run passes catalog, events and out only: those are required, everything else has a default."""
    hcl2 = pytest.importorskip("hcl2")
    params = compiled["batch"]["root"]["inputDefinitions"]["parameters"]
    required = {k for k, v in params.items() if "defaultValue" not in v and not v.get("isOptional")}
    assert required == set(RUN_PARAMETERS["batch"]) == {"catalog", "events", "out"}
    for tfvars in ("environments/prod/terraform.tfvars", "environments/dev/terraform.tfvars.example"):
        with open(ROOT / "terraform" / tfvars) as fh:
            doc = hcl2.load(fh)
        schedules = doc["schedules"]
        schedules = schedules[0] if isinstance(schedules, list) else schedules
        for key, job in schedules.items():
            if job["target"] == "vertex_pipeline" and job["template"] == "batch":
                assert set(job["parameters"]) == required, f"{tfvars} schedule {key}"


def test_every_step_runs_the_configured_image_without_pip(compiled):
    for spec in compiled.values():
        for task in _tasks(spec):
            container = _executor(spec, task)
            assert container["image"] == IMAGE
            assert "pip install" not in " ".join(container["command"]), "the image already holds aisle and kfp"
    train = {v["taskInfo"]["name"]: t for t, v in _tasks(compiled["training"]).items()}
    resources = _executor(compiled["training"], train["train NER"])["resources"]
    assert resources["cpuLimit"] == 8 and resources["memoryLimit"] > 30


def test_batch_steps(compiled):
    spec = compiled["batch"]
    names = {v["taskInfo"]["name"]: t for t, v in _tasks(spec).items()}
    assert set(names) == {"ingest catalog", "ingest events", "enrich (OCR + NER)", "recommend", "publish"}
    assert _deps(spec, names["enrich (OCR + NER)"]) == {names["ingest catalog"]}
    assert _deps(spec, names["recommend"]) == {names["ingest events"]}
    assert _deps(spec, names["publish"]) == {names["enrich (OCR + NER)"], names["recommend"]}
    enrich_inputs = _tasks(spec)[names["enrich (OCR + NER)"]]["inputs"]["parameters"]
    assert enrich_inputs["ocr_model"]["componentInputParameter"] == "ocr_model"
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["ocr_model"]["defaultValue"] == "registry://ocr@production"
    assert defaults["recommender_model"]["defaultValue"] == "registry://recommender@production"


def test_local_compile_and_no_aiplatform_import(tmp_path):
    """Compiling needs kfp only: google.cloud.aiplatform is imported by the submit path alone."""
    code = (
        "import sys\n"
        "from pipelines.config import load_config\n"
        "from pipelines.kfp_cli import compile_all\n"
        f"paths = compile_all(load_config('local'), {str(tmp_path)!r})\n"
        "assert sorted(paths) == ['batch', 'training'], paths\n"
        "assert 'google.cloud.aiplatform' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    spec = yaml.safe_load((tmp_path / "batch.yaml").read_text())
    assert spec["root"]["inputDefinitions"]["parameters"]["registry"]["defaultValue"]["backend"] == "local"

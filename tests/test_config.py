"""Configuration: one YAML per environment, typed, overridable, agreeing with the Terraform names."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from pipelines.config import Config, load_config, parse_overrides, require_project
from transforms.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("env", ["local", "dev", "prod"])
def test_every_environment_loads_into_the_typed_config(env):
    cfg = load_config(env, ["project=acme-1"])
    assert isinstance(cfg, Config)
    assert cfg.env == env
    assert isinstance(cfg.training.ner.epochs, int)
    assert isinstance(cfg.beam.args, tuple)
    assert all("{" not in a for a in cfg.beam.args)


def test_local_is_offline_and_uses_the_local_registry():
    cfg = load_config("local")
    assert cfg.registry.backend == "local"
    assert cfg.beam.args == ()
    assert not cfg.submit.pipeline_root.startswith("gs://")
    for path in (cfg.training.events, cfg.training.ner.train, cfg.training.ocr.images, cfg.batch.catalog):
        assert (ROOT / path).exists(), path


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_cloud_names_match_terraform(env):
    cfg = load_config(env, ["project=acme-1", "image_tag=abc"])
    assert cfg.image == "europe-west1-docker.pkg.dev/acme-1/aisle/aisle:abc"
    assert cfg.registry.backend == "vertex"
    assert cfg.registry.artifact_root == f"gs://acme-1-aisle-{env}-models/registry"
    assert cfg.submit.pipeline_root == f"gs://acme-1-aisle-{env}-pipeline-root/runs"
    assert cfg.submit.templates == f"gs://acme-1-aisle-{env}-pipeline-root/templates"
    assert cfg.submit.service_account == f"aisle-{env}-pipelines@acme-1.iam.gserviceaccount.com"
    args = dict(a.split("=", 1) for a in cfg.beam.args if "=" in a)
    assert args["--runner"] == "DataflowRunner"
    assert args["--service_account_email"] == f"aisle-{env}-dataflow@acme-1.iam.gserviceaccount.com"
    assert args["--temp_location"] == f"gs://acme-1-aisle-{env}-dataflow/temp"
    assert args["--sdk_container_image"] == cfg.image
    assert args["--subnetwork"] == f"regions/europe-west1/subnetworks/aisle-{env}-dataflow-europe-west1"
    for bucket_path in (cfg.batch.out, cfg.batch.catalog, cfg.training.events):
        assert bucket_path.startswith(f"gs://acme-1-aisle-{env}-"), bucket_path


def test_terraform_bucket_and_account_names_agree():
    """The suffixes the YAML uses are the ones the storage and iam modules create."""
    storage = (ROOT / "terraform" / "modules" / "storage" / "main.tf").read_text()
    for purpose in ("landing", "processed", "models", "pipeline-root", "dataflow"):
        assert purpose in storage, purpose
    iam = (ROOT / "terraform" / "modules" / "iam" / "main.tf").read_text()
    for account in ("dataflow", "pipelines", "scheduler"):
        assert account in iam


def test_overrides_are_typed_and_nested():
    cfg = load_config("local", ["training.ner.epochs=3", "training.ner.candidates=[fp32, int8_dynamic]", "beam.args=[--runner=X]", "training.promote=false"])
    assert cfg.training.ner.epochs == 3
    assert cfg.training.ner.candidates == ("fp32", "int8_dynamic")
    assert cfg.beam.args == ("--runner=X",)
    assert cfg.training.promote is False
    assert parse_overrides(["a.b=1", "a.c=x", "d="]) == {"a": {"b": 1, "c": "x"}, "d": None}


def test_bad_overrides_name_the_key_and_how_to_fix():
    with pytest.raises(ConfigError, match=r"unknown setting 'training.ner.epoch'; valid keys here: .*epochs"):
        load_config("local", ["training.ner.epoch=2"])
    with pytest.raises(ConfigError, match=r"training.ner.epochs: expected an integer, got 'two'"):
        load_config("local", ["training.ner.epochs=two"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_config("local", ["training.ner.epochs"])
    with pytest.raises(ConfigError, match="no config for environment 'staging'"):
        load_config("staging")


def test_project_is_required_for_cloud_use():
    cfg = load_config("dev")
    assert "{project}" in cfg.image
    with pytest.raises(ConfigError, match="--project"):
        require_project(cfg)
    assert require_project(load_config("dev", ["project=p"])) == "p"


def test_explicit_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("env: mine\nregistry: {root: /tmp/reg}\n")
    cfg = load_config(str(path))
    assert (cfg.env, cfg.registry.root, cfg.training.ner.epochs) == ("mine", "/tmp/reg", 1)


def test_no_environment_reads_at_import():
    """Importing the config module and loading a config reads no environment variable."""
    code = (
        "import os\n"
        "seen = []\n"
        "class Env(dict):\n"
        "    def __getitem__(self, k): seen.append(k); return super().__getitem__(k)\n"
        "    def get(self, k, d=None): seen.append(k); return super().get(k, d)\n"
        "os.environ = Env(os.environ)\n"
        "import pipelines.config as c\n"
        "c.load_config('local', ['training.ner.epochs=2'])\n"
        "print(repr(sorted(set(seen))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().replace("'", '"')) == []

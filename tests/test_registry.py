"""The model registry: versions, checksums verified on load, atomic aliases, the Vertex backend with a fake client."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import types

import pytest

from components.registry import (
    LocalRegistry,
    ModelRef,
    VertexRegistry,
    file_checksums,
    parse_model_ref,
    registry_from_config,
    resolve_model_uri,
)
from transforms.errors import ChecksumMismatch, ConfigError, ModelLoadError

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def _model_dir(tmp_path, name="src", payload=b"weights-1"):
    d = tmp_path / name
    (d / "tokenizer").mkdir(parents=True)
    (d / "model.onnx").write_bytes(payload)
    (d / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return d


def test_parse_model_ref_forms():
    assert parse_model_ref("ner") == ModelRef("ner", alias="latest")
    assert parse_model_ref("registry://ner@production") == ModelRef("ner", alias="production")
    assert parse_model_ref("models:/ocr@v12") == ModelRef("ocr", version="v12")
    with pytest.raises(ConfigError, match="name 'NER'"):
        parse_model_ref("registry://NER@production")
    with pytest.raises(ConfigError, match="neither a version"):
        parse_model_ref("ner@Prod!")


def test_register_writes_version_metadata_and_checksums(tmp_path):
    reg = LocalRegistry(tmp_path / "reg", clock=lambda: T0)
    src = _model_dir(tmp_path)
    got = reg.register("ner", src, framework="onnx", metrics={"f1": 0.875}, source={"candidate": "int8_dynamic"})
    assert got.version == "v1"
    meta = json.loads((tmp_path / "reg" / "ner" / "v1" / "metadata.json").read_text())
    assert meta["framework"] == "onnx"
    assert meta["metrics"] == {"f1": 0.875}
    assert meta["source"] == {"candidate": "int8_dynamic"}
    assert meta["created"] == "2026-01-02T03:04:05+00:00"
    assert meta["sha256"] == {
        "model.onnx": hashlib.sha256(b"weights-1").hexdigest(),
        "tokenizer/vocab.txt": hashlib.sha256(b"a\nb\n").hexdigest(),
    }
    assert reg.aliases("ner") == {"latest": "v1"}
    # a second registration is v2 and moves latest, not production
    reg.promote("ner", "v1")
    reg.register("ner", _model_dir(tmp_path, "src2", b"weights-2"), framework="onnx")
    assert reg.versions("ner") == ["v1", "v2"]
    assert reg.aliases("ner") == {"latest": "v2", "production": "v1"}
    assert reg.resolve("ner@production").version == "v1"
    assert reg.resolve("ner").version == "v2"
    assert reg.resolve("ner@v2").sha256s["model.onnx"] == hashlib.sha256(b"weights-2").hexdigest()


def test_register_single_file(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"tfl")
    reg = LocalRegistry(tmp_path / "reg")
    got = reg.register("recommender", tmp_path / "m.tflite", framework="tflite")
    assert set(os.listdir(got.path)) == {"m.tflite", "metadata.json"}
    assert got.sha256s == {"m.tflite": hashlib.sha256(b"tfl").hexdigest()}


def test_checksum_mismatch_is_refused_naming_the_file(tmp_path):
    reg = LocalRegistry(tmp_path / "reg")
    got = reg.register("ner", _model_dir(tmp_path), framework="onnx", aliases=("latest", "production"))
    (tmp_path / "reg" / "ner" / "v1" / "tokenizer" / "vocab.txt").write_text("tampered\n")
    with pytest.raises(ChecksumMismatch, match=r"ner@v1: checksum mismatch for file 'tokenizer/vocab.txt'"):
        reg.resolve("ner@production")
    with pytest.raises(ChecksumMismatch):
        resolve_model_uri("registry://ner@production", reg)
    # verification can be skipped explicitly (e.g. to inspect a damaged version)
    assert reg.resolve("ner@production", verify=False).version == got.version


def test_missing_and_unexpected_files_are_refused(tmp_path):
    reg = LocalRegistry(tmp_path / "reg")
    reg.register("ner", _model_dir(tmp_path), framework="onnx")
    v1 = tmp_path / "reg" / "ner" / "v1"
    (v1 / "extra.bin").write_bytes(b"?")
    with pytest.raises(ChecksumMismatch, match="'extra.bin' .* is not in metadata.json"):
        reg.resolve("ner")
    (v1 / "extra.bin").unlink()
    (v1 / "model.onnx").unlink()
    with pytest.raises(ChecksumMismatch, match="'model.onnx' recorded in metadata.json is missing"):
        reg.resolve("ner")


def test_unknown_model_and_alias_errors_say_what_to_do(tmp_path):
    reg = LocalRegistry(tmp_path / "reg")
    with pytest.raises(ModelLoadError, match=r"ner@production is not in the registry .*aisle pipeline run training"):
        reg.resolve("ner@production")
    reg.register("ner", _model_dir(tmp_path), framework="onnx")
    with pytest.raises(ModelLoadError, match=r"aliases: \['latest'\]"):
        reg.resolve("ner@production")
    with pytest.raises(ModelLoadError, match="no such version"):
        reg.promote("ner", "v9")
    with pytest.raises(ConfigError, match="not a local folder"):
        LocalRegistry("gs://bucket/registry")


def test_alias_switch_is_atomic_under_concurrent_readers(tmp_path):
    """Readers never see a missing or partial alias while a writer flips it back and forth."""
    reg = LocalRegistry(tmp_path / "reg")
    reg.register("ner", _model_dir(tmp_path, "a", b"A"), framework="onnx", aliases=("latest", "production"))
    reg.register("ner", _model_dir(tmp_path, "b", b"B"), framework="onnx")
    stop = threading.Event()
    seen, errors = set(), []

    def read():
        while not stop.is_set():
            try:
                seen.add(reg.aliases("ner")["production"])
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for i in range(300):
        reg.promote("ner", "v2" if i % 2 == 0 else "v1")
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert seen <= {"v1", "v2"}
    assert [p for p in os.listdir(tmp_path / "reg" / "ner" / "aliases") if p.endswith(".tmp")] == []


def test_failed_registration_leaves_no_version(tmp_path):
    reg = LocalRegistry(tmp_path / "reg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="holds no files"):
        reg.register("ner", tmp_path / "empty", framework="onnx")
    assert reg.versions("ner") == []
    assert [p for p in os.listdir(tmp_path / "reg" / "ner") if p.startswith(".incoming")] == []


def test_resolve_model_uri_passes_plain_paths_through(tmp_path):
    assert resolve_model_uri("/models/ner", None) == ("/models/ner", {"uri": "/models/ner", "path": "/models/ner", "resolved": False})
    assert resolve_model_uri(None)[0] is None
    with pytest.raises(ConfigError, match="no registry was given"):
        resolve_model_uri("registry://ner@production", None)
    reg = LocalRegistry(tmp_path / "reg")
    reg.register("ner", _model_dir(tmp_path), framework="onnx", aliases=("latest", "production"))
    path, info = resolve_model_uri("models:/ner@production", reg)
    assert path == str(tmp_path / "reg" / "ner" / "v1")
    assert info["version"] == "v1" and info["resolved"] is True and info["alias"] == "production"
    assert info["sha256"] == file_checksums(path)


def test_registry_from_config(tmp_path):
    local = registry_from_config(types.SimpleNamespace(registry=types.SimpleNamespace(backend="local", root=str(tmp_path))))
    assert isinstance(local, LocalRegistry)
    with pytest.raises(ConfigError, match="'local' or 'vertex'"):
        registry_from_config(types.SimpleNamespace(registry=types.SimpleNamespace(backend="mlflow")))


# ---------------------------------------------------------------------------
# Vertex AI backend with a fake aiplatform module
# ---------------------------------------------------------------------------


class FakeAiplatform:
    """Records the aiplatform calls; keeps uploaded versions in memory."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.versions: dict[str, list[dict]] = {}  # resource name -> versions
        self.aliases: dict[str, dict[str, str]] = {}
        fake = self

        class Model:
            def __init__(self, model_name, **kw):
                fake.calls.append(("Model", {"model_name": model_name}))
                resource, _, tag = model_name.partition("@")
                self.resource_name = resource
                vid = fake.aliases[resource].get(tag, tag)
                v = next(x for x in fake.versions[resource] if x["version_id"] == vid)
                self.version_id, self.uri = vid, v["artifact_uri"]
                self.versioning_registry = types.SimpleNamespace(
                    add_version_aliases=lambda new_aliases, version: fake._alias(resource, new_aliases, version)
                )

            def deploy(self, **kw):
                fake.calls.append(("Model.deploy", {"model": f"{self.resource_name}@{self.version_id}", **kw}))

            @staticmethod
            def list(**kw):
                fake.calls.append(("Model.list", kw))
                label = kw["filter"].split('"')[1]
                return [types.SimpleNamespace(resource_name=r) for r, vs in fake.versions.items() if vs[0]["labels"]["aisle-model"] == label]

            @staticmethod
            def upload(**kw):
                fake.calls.append(("Model.upload", kw))
                resource = kw["parent_model"] or f"projects/p/locations/r/models/{len(fake.versions) + 1}"
                vs = fake.versions.setdefault(resource, [])
                vid = str(len(vs) + 1)
                vs.append({"version_id": vid, **kw})
                fake._alias(resource, kw["version_aliases"], vid)
                return types.SimpleNamespace(resource_name=resource, version_id=vid)

        class Endpoint:
            @staticmethod
            def list(**kw):
                fake.calls.append(("Endpoint.list", kw))
                return []

            @staticmethod
            def create(**kw):
                fake.calls.append(("Endpoint.create", kw))
                return types.SimpleNamespace(resource_name="projects/p/locations/r/endpoints/1", **kw)

        self.Model, self.Endpoint = Model, Endpoint

    def init(self, **kw):
        self.calls.append(("init", kw))

    def _alias(self, resource, new_aliases, version):
        for a in new_aliases:
            self.aliases.setdefault(resource, {})[a] = version


def test_vertex_register_resolve_promote_deploy(tmp_path):
    fake = FakeAiplatform()
    reg = VertexRegistry(
        "proj", "europe-west1", artifact_root=str(tmp_path / "bucket"), serving_image="img:1", client=fake, clock=lambda: T0
    )
    v1 = reg.register("ner", _model_dir(tmp_path, "a", b"A"), framework="onnx", metrics={"f1": 0.91})
    v2 = reg.register("ner", _model_dir(tmp_path, "b", b"B"), framework="onnx")
    assert (v1.version, v2.version) == ("v1", "v2")
    uploads = [kw for name, kw in fake.calls if name == "Model.upload"]
    assert fake.calls[0] == ("init", {"project": "proj", "location": "europe-west1"})
    assert uploads[0]["parent_model"] is None and uploads[1]["parent_model"] == "projects/p/locations/r/models/1"
    assert uploads[0]["display_name"] == "ner" and uploads[0]["serving_container_image_uri"] == "img:1"
    assert uploads[0]["version_aliases"] == ["latest"]
    assert uploads[0]["labels"]["aisle-model"] == "ner" and uploads[0]["labels"]["framework"] == "onnx"
    assert uploads[0]["labels"]["m-f1"] == "0_91"
    assert len(uploads[0]["labels"]["sha256"]) == 32
    # the files and metadata.json are in the artifact folder Vertex points at
    meta = json.loads(open(os.path.join(uploads[0]["artifact_uri"], "metadata.json")).read())
    assert meta["sha256"]["model.onnx"] == hashlib.sha256(b"A").hexdigest()

    reg.promote("ner", "v1")
    assert fake.aliases["projects/p/locations/r/models/1"]["production"] == "1"
    got = reg.resolve("registry://ner@production")
    assert (got.version, got.path) == ("v1", uploads[0]["artifact_uri"])
    assert reg.resolve("ner@latest").version == "v2"

    open(os.path.join(uploads[0]["artifact_uri"], "model.onnx"), "wb").write(b"evil")
    with pytest.raises(ChecksumMismatch, match="'model.onnx'"):
        reg.resolve("ner@production")

    reg.deploy("ner", "v2", machine_type="n1-standard-4")
    assert ("Endpoint.create", {"display_name": "aisle-ner", "labels": {"aisle-model": "ner"}}) in fake.calls
    deploy = next(kw for name, kw in fake.calls if name == "Model.deploy")
    assert deploy["model"].endswith("@2") and deploy["machine_type"] == "n1-standard-4" and deploy["traffic_percentage"] == 100


def test_vertex_registry_needs_project_and_artifact_root():
    with pytest.raises(ConfigError, match="project and region"):
        VertexRegistry("", "r", artifact_root="gs://b")
    with pytest.raises(ConfigError, match="artifact_root"):
        VertexRegistry("p", "r", artifact_root="")

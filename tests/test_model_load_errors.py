"""A model that cannot be loaded fails with an AisleError naming the path and the cause, for every handler.

Each handler meets a missing path, an empty file, a corrupt (random bytes)
model and a checksum mismatch; no fake or stub stands in for the runtimes:
onnxruntime, transformers and TensorFlow read the broken files themselves.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil

import pytest

from transforms.errors import AisleError, ChecksumMismatch, ModelLoadError

RANDOM = bytes(range(256)) * 8  # 2 kB of bytes that are no model format


def _fails(fn, *needles: str, error=ModelLoadError) -> str:
    with pytest.raises(error) as info:
        fn()
    assert isinstance(info.value, AisleError)
    message = str(info.value)
    for needle in needles:
        assert needle.lower() in message.lower(), (needle, message)
    return message


# ---------------------------------------------------------------------------
# the shared file reader
# ---------------------------------------------------------------------------


def test_read_model_bytes(tmp_path):
    from transforms.inference import read_model_bytes

    path = tmp_path / "m.onnx"
    _fails(lambda: read_model_bytes(str(path)), str(path), "No such file")
    path.write_bytes(b"")
    _fails(lambda: read_model_bytes(str(path)), str(path), "empty (0 bytes)")
    path.write_bytes(RANDOM)
    good = hashlib.sha256(RANDOM).hexdigest()
    assert read_model_bytes(str(path), sha256=good.upper()) == RANDOM
    message = _fails(lambda: read_model_bytes(str(path), sha256="0" * 64), str(path), good, "0" * 64, error=ChecksumMismatch)
    assert "register the model again" in message


# ---------------------------------------------------------------------------
# OCR
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["det", "rec", "cls"])
def test_ocr_model_files(tmp_path, role):
    from transforms.inference.ocr import OcrModelHandler

    path = tmp_path / f"{role}.onnx"

    def load():
        return OcrModelHandler(**{f"{role}_model": str(path)}, threads=1).load_model()

    _fails(load, str(path), "No such file")
    path.write_bytes(b"")
    _fails(load, str(path), "empty (0 bytes)")
    path.write_bytes(RANDOM)
    _fails(load, str(path), "onnxruntime cannot load OCR model", "protobuf")


def test_ocr_model_folder(tmp_path):
    from transforms.inference.ocr import OcrModelHandler, OcrModelPaths

    _fails(lambda: OcrModelHandler(str(tmp_path / "nowhere")).load_model(), str(tmp_path / "nowhere"), "det.onnx", "does not exist")
    folder = tmp_path / "ocr"
    folder.mkdir()
    default = OcrModelPaths.default()
    shutil.copy(default.det, folder / "det.onnx")
    shutil.copy(default.det, folder / "rec.onnx")  # a detector where the recognizer belongs
    _fails(lambda: OcrModelHandler(str(folder), use_cls=False, threads=1).load_model(), str(folder / "rec.onnx"), "character")


# ---------------------------------------------------------------------------
# NER
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ner_folder(tmp_path_factory):
    from tests.ner_support import build_tiny_base

    return pathlib.Path(build_tiny_base(tmp_path_factory.mktemp("ner_load") / "base"))


def _copy_ner(ner_folder, tmp_path, *, weights: bool = True) -> pathlib.Path:
    folder = tmp_path / "ner"
    shutil.copytree(ner_folder, folder)
    if not weights:
        (folder / "model.safetensors").unlink()
    return folder


def test_ner_onnx(ner_folder, tmp_path):
    from transforms.inference.ner import NerModelHandler

    _fails(lambda: NerModelHandler(str(tmp_path / "nowhere")).load_model(), str(tmp_path / "nowhere"), "empty or missing")
    folder = _copy_ner(ner_folder, tmp_path)
    onnx = folder / "model.onnx"

    def load():
        return NerModelHandler(str(folder), backend="onnx").load_model()

    _fails(load, str(folder), "has no model.onnx")
    onnx.write_bytes(b"")
    _fails(load, str(folder), "model.onnx", "empty (0 bytes)")
    onnx.write_bytes(RANDOM)
    _fails(load, str(onnx), "onnxruntime cannot load", "protobuf")


def test_ner_torch_weights_and_config(ner_folder, tmp_path):
    from transforms.inference.ner import NerModelHandler

    folder = _copy_ner(ner_folder, tmp_path)
    assert NerModelHandler(str(folder), backend="torch").load_model().scheme is not None  # the intact folder loads
    (folder / "model.safetensors").write_bytes(RANDOM)
    _fails(lambda: NerModelHandler(str(folder), backend="torch").load_model(), str(folder), "cannot load PyTorch weights")
    (folder / "config.json").write_bytes(b"")
    _fails(lambda: NerModelHandler(str(folder)).load_model(), str(folder), "config.json", "not readable JSON")
    (folder / "config.json").unlink()
    _fails(lambda: NerModelHandler(str(folder)).load_model(), str(folder), "has no config.json")


def test_ner_never_unpickles_weights(ner_folder, tmp_path):
    """A folder whose weights are a pickle (pytorch_model.bin) is refused without running it."""
    from transforms.inference.ner import NerModelHandler

    folder = _copy_ner(ner_folder, tmp_path, weights=False)
    marker = tmp_path / "pickle-ran"
    (folder / "pytorch_model.bin").write_bytes(_pickle_that_creates(marker))
    _fails(lambda: NerModelHandler(str(folder), backend="torch").load_model(), str(folder), "cannot load PyTorch weights")
    assert not marker.exists()


class _Creates:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_that_creates(path) -> bytes:
    """Pickle bytes that create ``path`` when unpickled (what a hostile model file does)."""
    import pickle

    data = pickle.dumps(_Creates(path))
    return data


# ---------------------------------------------------------------------------
# recommend: SavedModel and TFLite
# ---------------------------------------------------------------------------


def test_recommend_saved_model(tmp_path):
    pytest.importorskip("tensorflow")
    from transforms.inference.recommend import SavedModelQueryHandler

    folder = tmp_path / "saved_model"

    def load():
        return SavedModelQueryHandler(str(folder)).load_model()

    _fails(load, str(folder), "empty or missing")
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")
    _fails(load, str(folder), "saved_model.pb is empty (0 bytes)")
    (folder / "saved_model.pb").write_bytes(RANDOM)
    _fails(load, str(folder), "cannot load SavedModel")


def test_recommend_tflite(tmp_path):
    pytest.importorskip("tensorflow")
    from transforms.inference.recommend import TFLiteQueryHandler

    path = tmp_path / "model_int8.tflite"

    def load():
        return TFLiteQueryHandler(str(path)).load_model()

    _fails(load, str(path), "No such file")
    path.write_bytes(b"")
    _fails(load, str(path), "empty (0 bytes)")
    path.write_bytes(RANDOM)
    _fails(load, str(path), "cannot load TFLite model", "Flatbuffer")


def test_recommend_side_files(tmp_path):
    import numpy as np

    from transforms.inference.recommend import load_item_embeddings

    (tmp_path / "vocab.json").write_text('{"ids": ["a", "b"], "counts": [3, 1]}')
    _fails(lambda: load_item_embeddings(str(tmp_path)), "item_embeddings.npy", "No such file")
    _fails(lambda: load_item_embeddings(str(tmp_path), unit_t=True), "item_embeddings.npy", "No such file")
    emb_path = tmp_path / "item_embeddings.npy"
    np.save(emb_path, np.array([{"x": 1}, {"y": 2}], dtype=object), allow_pickle=True)
    _fails(lambda: load_item_embeddings(str(tmp_path)), "item_embeddings.npy", "pickle")  # object arrays are refused
    _fails(lambda: load_item_embeddings(str(tmp_path), unit_t=True), "item_embeddings.npy", "pickle")
    # the chunked reader meets the rest: empty, truncated, not a matrix, too few rows
    emb_path.write_bytes(b"")
    _fails(lambda: load_item_embeddings(str(tmp_path), unit_t=True), "item_embeddings.npy", "empty (0 bytes)")
    np.save(emb_path, np.ones((2, 8), np.float32))
    emb_path.write_bytes(emb_path.read_bytes()[:-5])
    _fails(lambda: load_item_embeddings(str(tmp_path), unit_t=True), "item_embeddings.npy", "truncated", "5 bytes")
    np.save(emb_path, np.ones(16, np.float32))
    _fails(lambda: load_item_embeddings(str(tmp_path), unit_t=True), "item_embeddings.npy", "not a 2-D matrix")
    np.save(emb_path, np.ones((3, 8), np.float32))
    _fails(lambda: load_item_embeddings(str(tmp_path), unit_t=True), "3 rows", "vocab.json 2 ids")
    emb_path.write_bytes(RANDOM)
    _fails(lambda: load_item_embeddings(str(tmp_path), unit_t=True), "item_embeddings.npy", "not a .npy file", "magic")
    emb_path.write_bytes(b"\x93NU")  # shorter than the magic string: not taken for an empty file
    _fails(lambda: load_item_embeddings(str(tmp_path), unit_t=True), "item_embeddings.npy", "not a .npy file")
    emb_path.write_bytes(b"\x93NUMPY\x03\x00" + RANDOM)
    _fails(lambda: load_item_embeddings(str(tmp_path), unit_t=True), "item_embeddings.npy", "version (3, 0) is not supported")


# ---------------------------------------------------------------------------
# registry: checksums verified before anything loads
# ---------------------------------------------------------------------------

LAYOUTS = {
    "ocr": ["det.onnx", "rec.onnx", "cls.onnx"],
    "ner": ["model.onnx", "config.json", "tokenizer.json"],
    "recommender": ["saved_model/saved_model.pb", "saved_model/variables/variables.index", "model_int8.tflite", "vocab.json"],
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_registry_refuses_a_tampered_model(tmp_path, name):
    from components.registry import LocalRegistry, resolve_model_uri

    src = tmp_path / "src"
    for rel in LAYOUTS[name]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(os.urandom(64))
    registry = LocalRegistry(tmp_path / "registry")
    registry.register(name, src, framework="onnx", aliases=("latest", "production"))
    path, info = resolve_model_uri(f"registry://{name}@production", registry)
    assert info["version"] == "v1" and set(info["sha256"]) == set(LAYOUTS[name])
    target = pathlib.Path(path) / LAYOUTS[name][-1]
    data = target.read_bytes()
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # always a change (random bytes may end in any value)
    _fails(lambda: resolve_model_uri(f"registry://{name}@production", registry),
           f"{name}@v1", repr(LAYOUTS[name][-1]), str(path), "checksum mismatch", error=ChecksumMismatch)
    target.write_bytes(b"")
    _fails(lambda: registry.resolve(f"{name}@latest"), "checksum mismatch", error=ChecksumMismatch)
    target.unlink()
    _fails(lambda: registry.resolve(f"{name}@latest"), "is missing", error=ChecksumMismatch)


def test_enrich_refuses_a_tampered_registry_model_before_loading(tmp_path):
    """The job resolves registry:// models first: a tampered OCR model stops it before any image is read."""
    from components.registry import LocalRegistry
    from pipelines.enrich import run_enrich
    from transforms.inference.ocr import OcrModelPaths

    default = OcrModelPaths.default()
    src = tmp_path / "ocr"
    src.mkdir()
    for role in ("det", "rec", "cls"):
        shutil.copy(getattr(default, role), src / f"{role}.onnx")
    registry = LocalRegistry(tmp_path / "registry")
    version = registry.register("ocr", src, framework="onnx", aliases=("production",))
    det = pathlib.Path(version.path) / "det.onnx"
    det.write_bytes(det.read_bytes()[:-16])  # truncated after registration
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text('{"id": "p", "title": "t", "images": [{"uri": "missing.png"}]}\n')
    _fails(lambda: run_enrich(str(catalog), str(tmp_path / "out"), model_dir="registry://ocr@production", registry=registry),
           "ocr@v1", "det.onnx", error=ChecksumMismatch)
    assert not (tmp_path / "out").exists()

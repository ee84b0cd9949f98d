"""Quantization-aware training of the recognizer (components.ocr_qat) and its INT8 candidate."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from components.ocr_eval import load_sroie
from components.ocr_finetune import head_tensors
from components.ocr_qat import QatConfig, TorchGraph, activation_ranges, fake_quant_hooks, qat_recognizer
from components.ocr_quantize import build_ocr_candidates, build_qat_candidate
from tests.test_ocr_finetune import PAGES, sroie_dir  # noqa: F401 (the drawn pages fixture)
from transforms.errors import ConfigError
from transforms.inference.ocr import SPACE_PROB_KEY, OcrEngine, OcrModelPaths


def _conv_model(weight: np.ndarray) -> onnx.ModelProto:
    """x [1, C, H, W] -> Relu(Conv(x, weight)): a graph small enough to check by hand."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[1], None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_the_shipped_recognizer_runs_in_torch_as_in_onnxruntime():
    path = OcrModelPaths.default().rec
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 48, 200)).astype(np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = TorchGraph(onnx.load(path))(torch.from_numpy(x))[0].numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_trainable_initializers_get_gradients_and_the_others_do_not():
    w = np.random.default_rng(1).normal(size=(4, 2, 3, 3)).astype(np.float32)
    graph = TorchGraph(_conv_model(w), trainable=["w"])
    graph(torch.ones(1, 2, 5, 5))[0].sum().backward()
    assert graph.params["w"].grad is not None and graph.params["w"].grad.abs().sum() > 0
    with pytest.raises(Exception, match="no initializers"):
        TorchGraph(_conv_model(w), trainable=["nope"])


def test_an_op_it_cannot_run_is_named():
    node = helper.make_node("Gemm", ["x", "x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    with pytest.raises(ConfigError, match="Gemm"):
        TorchGraph(helper.make_model(graph))


def test_activation_ranges_cut_at_the_percentile_and_include_zero():
    w = np.ones((1, 1, 1, 1), dtype=np.float32)
    model = _conv_model(w)
    model.graph.node[0].ClearField("attribute")  # no padding: the output is the input
    graph = TorchGraph(model)
    x = np.arange(1, 10_001, dtype=np.float32).reshape(1, 1, 100, 100)  # 1..10000, all positive
    ranges = activation_ranges(graph, [x], percentile=99.0)
    lo, hi = ranges["x"]
    assert lo == 0.0  # widened to include 0
    assert hi == pytest.approx(np.percentile(np.arange(1, 10_001), 99.0), rel=1e-3)
    assert ranges["c"] == ranges["x"]


def test_fake_quantization_puts_activations_and_weights_on_8_bit_grids():
    rng = np.random.default_rng(2)
    w = torch.from_numpy(rng.normal(size=(3, 2, 3, 3)).astype(np.float32))
    x = torch.from_numpy(rng.uniform(-1, 3, size=(1, 2, 8, 8)).astype(np.float32))
    node = helper.make_node("Conv", ["x", "w"], ["c"])
    pre, post = fake_quant_hooks({"x": (-1.0, 2.0), "c": (0.0, 1.0)})
    xq, wq = pre(node, x, w)
    scale = 3.0 / 255
    assert xq.max().item() <= 2.0 + 1e-6 and xq.min().item() >= -1.0 - 1e-6  # clipped to the range
    steps = (xq + 1.0) / scale
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # on the grid
    inside = (x >= -1) & (x <= 2)
    assert (xq - x)[inside].abs().max().item() <= scale / 2 + 1e-6
    for k in range(3):  # per output channel, symmetric: at most 255 levels, error at most half a step
        s = w[k].abs().max().item() / 127
        assert len(torch.unique(wq[k])) <= 255
        assert (wq[k] - w[k]).abs().max().item() <= s / 2 + 1e-6
    yq = post(node, torch.tensor([-0.5, 0.3, 1.7]))
    assert yq.tolist() == pytest.approx([0.0, round(0.3 * 255) / 255, 1.0], abs=1e-6)


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("ocr_candidates")
    build_ocr_candidates(str(work), [], candidates=["fp32"], threads=1)
    return work


@pytest.fixture(scope="module")
def qat(sroie_dir, fp32_dir, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    pages = load_sroie(str(sroie_dir))
    out = tmp_path_factory.mktemp("qat")
    cfg = QatConfig(epochs=3, learning_rate=1e-4, batch_size=4, calibration_crops=8, space_probs=(0.05, 0.3), threads=1)
    return qat_recognizer(str(fp32_dir / "fp32"), pages[:3], str(out), dev_pages=pages[3:], config=cfg), pages


def test_qat_retrains_the_convolutions_and_the_head_and_nothing_else(qat, fp32_dir):
    result, pages = qat
    base = onnx.load(str(fp32_dir / "fp32" / "rec.onnx"))
    new = onnx.load(f"{result.model_dir}/rec.onnx")
    before = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in new.graph.initializer}
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    _, w, b = head_tensors(base)
    conv_weights = {n.input[1] for n in base.graph.node if n.op_type == "Conv"}
    allowed = conv_weights | {n.input[2] for n in base.graph.node if n.op_type == "Conv" and len(n.input) > 2} | {w, b}
    assert changed <= allowed
    assert len(changed & conv_weights) > len(conv_weights) // 2  # the convolutions did learn
    assert [(n.op_type, list(n.input)) for n in new.graph.node] == [(n.op_type, list(n.input)) for n in base.graph.node]
    meta = {p.key: p.value for p in new.metadata_props}
    assert float(meta[SPACE_PROB_KEY]) == result.space_prob in (0.05, 0.3)
    assert meta["character"] == {p.key: p.value for p in base.metadata_props}["character"]
    # every ground-truth line is trained on, in the dev set, or skipped with its reason
    n_truth = sum(len(p.lines) for p in pages)
    assert result.train_lines + result.dev_lines + sum(result.skipped_lines.values()) == n_truth
    assert result.skipped_lines["charset"] == 1
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert all(row["lines"] + row["lines_too_narrow"] == result.train_lines for row in result.history)
    record = json.loads(open(f"{result.model_dir}/qat.json", encoding="utf-8").read())
    assert record["train_ids"] == ["001", "002", "003"] and record["dev_ids"] == ["004"]
    assert 0.0 <= record["dev_line_word_f1"] <= 1.0


def test_the_qat_candidate_is_static_int8_of_the_retrained_recognizer_and_reads(qat, fp32_dir, sroie_dir):  # noqa: F811
    result, pages = qat
    images = [cv2.imread(p.image_path) for p in pages[:2]]
    build_ocr_candidates(str(fp32_dir), images, candidates=["fp32", "int8_static"], threads=1)
    info = build_qat_candidate(str(fp32_dir), result.model_dir, images, threads=1)
    folder = fp32_dir / "int8_qat"
    rec = onnx.load(str(folder / "rec.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in rec.graph.node) > 10
    assert (folder / "det.onnx").read_bytes() == (fp32_dir / "int8_static" / "det.onnx").read_bytes()
    assert 0.9 <= info.agreement["rec"] <= 1.0
    assert json.loads((fp32_dir / "candidates.json").read_text())["candidates"]["int8_qat"]["model_dir"] == str(folder)
    engine = OcrEngine.load(OcrModelPaths.from_dir(str(folder)), threads=1)
    text = " ".join(line.text for line in engine.read_image(cv2.imread(pages[3].image_path)).lines).upper()
    assert "ITALY" in text and "SUGAR" in text


def test_the_qat_candidate_needs_the_int8_static_build(tmp_path, qat):
    with pytest.raises(ConfigError, match="int8_static"):
        build_qat_candidate(str(tmp_path), qat[0].model_dir, [])


def test_the_qat_candidate_is_refused_without_training_pages(tmp_path):
    with pytest.raises(ConfigError, match="qat_pages"):
        build_ocr_candidates(str(tmp_path), [], candidates=["fp32", "int8_qat"])
    assert not (tmp_path / "fp32").exists()  # refused before anything is built

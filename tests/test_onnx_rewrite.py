"""Exact graph rewrites: decomposed hard-swish fused, scalar affines folded into convolutions.

Each rewritten model must give the original's outputs to float32 rounding,
on a graph built here with every case (affine after a Conv, affine before
an unpadded Conv with and without bias, before a padded depthwise Conv,
before a Conv and something else, a graph output in the way) and on the
shipped PP-OCR models.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from components.quantize import optimize_graph, rewrite_for_cpu, upgrade_opset
from transforms.inference.onnx_rewrite import fold_affine_into_conv, fuse_hard_swish, rewrite_model_bytes
from transforms.inference.ocr import OcrModelPaths


def _scalar(name, v):
    return numpy_helper.from_array(np.array([v], np.float32), name)


def _hard_swish(x, out, k):
    """Paddle's spelling: x * clip(x + 3, 0, 6) / 6."""
    return [
        helper.make_node("Add", [x, "three"], [f"hs{k}_a"]),
        helper.make_node("Clip", [f"hs{k}_a", "zero", "six"], [f"hs{k}_c"]),
        helper.make_node("Mul", [x, f"hs{k}_c"], [f"hs{k}_m"]),
        helper.make_node("Div", [f"hs{k}_m", "six"], [out]),
    ]


def _model(seed=0):
    rng = np.random.default_rng(seed)
    c = 8
    inits = [
        _scalar("three", 3.0), _scalar("zero", 0.0), _scalar("six", 6.0),
        numpy_helper.from_array(rng.normal(size=(c, 3, 3, 3)).astype(np.float32) * 0.3, "w0"),
        numpy_helper.from_array(rng.normal(size=(c,)).astype(np.float32), "b0"),
        _scalar("a0", 1.7), _scalar("c0", -0.4), _scalar("a1", 0.3), _scalar("c1", 0.25),
        numpy_helper.from_array(rng.normal(size=(c, 1, 3, 3)).astype(np.float32) * 0.3, "wdw"),
        numpy_helper.from_array(rng.normal(size=(c,)).astype(np.float32), "bdw"),
        _scalar("a2", -1.3), _scalar("c2", 0.6),
        numpy_helper.from_array(rng.normal(size=(c, c, 1, 1)).astype(np.float32) * 0.3, "wpw"),
        _scalar("a3", 2.0), _scalar("c3", 0.1),
        numpy_helper.from_array(rng.normal(size=(4, c, 1, 1)).astype(np.float32) * 0.3, "wout"),
        numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "bout"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["t0"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["a0", "t0"], ["t1"]),  # constant first, as Paddle writes it
        helper.make_node("Add", ["t1", "c0"], ["t2"]),
        *_hard_swish("t2", "t3", 0),
        helper.make_node("Mul", ["t3", "a1"], ["t4"]),
        helper.make_node("Add", ["t4", "c1"], ["t5"]),
        # padded depthwise conv: the shift must stay in front of it
        helper.make_node("Conv", ["t5", "wdw", "bdw"], ["t6"], pads=[1, 1, 1, 1], group=c),
        *_hard_swish("t6", "t7", 1),
        helper.make_node("Mul", ["a2", "t7"], ["t8"]),
        helper.make_node("Add", ["c2", "t8"], ["t9"]),
        # unpadded pointwise conv without bias: scale and shift both fold in
        helper.make_node("Conv", ["t9", "wpw"], ["t10"]),
        helper.make_node("Relu", ["t10"], ["t10r"]),
        # an affine read by a Conv and by a Relu: left alone
        helper.make_node("Mul", ["t10r", "a3"], ["t11"]),
        helper.make_node("Add", ["t11", "c3"], ["t12"]),
        helper.make_node("Relu", ["t12"], ["side"]),
        helper.make_node("Conv", ["t12", "wout", "bout"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "rewrite",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 9, 11]), helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 8, 9, 11])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _ops(model):
    return [n.op_type for n in model.graph.node]


def test_rewrites_are_exact_on_every_case():
    x = np.random.default_rng(1).normal(size=(1, 3, 9, 11)).astype(np.float32) * 2
    ref = _run(_model(), x)
    m = _model()
    assert fuse_hard_swish(m) == 2
    assert _ops(m).count("HardSigmoid") == 2 and "Clip" not in _ops(m) and "Div" not in _ops(m)
    after, before = fold_affine_into_conv(m)
    onnx.checker.check_model(m)
    # t0's affine into the first Conv; t3's into the padded depthwise Conv
    # (as one Add of c1/a1); t7's into the pointwise Conv; t10r's stays
    assert (after, before) == (1, 2)
    ops = _ops(m)
    assert ops.count("Mul") == 3  # two hard-swish products + the affine a Relu also reads
    assert ops.count("Add") == 2  # the depthwise Conv's shift + the kept affine
    got = _run(m, x)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_a_graph_output_between_conv_and_affine_blocks_the_fold():
    m = _model()
    m.graph.output.append(helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 8, 9, 11]))
    after, _ = fold_affine_into_conv(m)
    assert after == 0
    x = np.ones((1, 3, 9, 11), np.float32)
    for r, g in zip(_run(_model(), x), _run(m, x)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,shape", [("rec", (2, 3, 48, 160)), ("det", (1, 3, 160, 128)), ("cls", (3, 3, 48, 192))])
def test_shipped_ocr_models_keep_their_outputs(name, shape, tmp_path):
    src = getattr(OcrModelPaths.default(), name)
    base = optimize_graph(upgrade_opset(src, str(tmp_path / "13.onnx"), opset=13), str(tmp_path / "base.onnx"), opt_level=1)
    report = rewrite_for_cpu(base, str(tmp_path / "rw.onnx"))
    assert report.hard_swish > 0 and report.nodes_after < report.nodes_before
    if name in ("rec", "det"):  # PP-LCNetV3's affine blocks
        assert report.conv_output_affines > 0 and report.conv_input_affines > 0
    x = np.random.default_rng(2).uniform(-1, 1, size=shape).astype(np.float32)
    ref = _run(onnx.load(base), x)[0]
    got = _run(onnx.load(str(tmp_path / "rw.onnx")), x)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # the recognizer's character set (metadata) survives
    assert {p.key for p in onnx.load(src).metadata_props} <= {p.key for p in onnx.load(str(tmp_path / "rw.onnx")).metadata_props}


def test_engine_load_rewrites_in_memory_and_reads_the_same(tmp_path):
    """The shipped models as served: rewritten at load, same text and boxes as without."""
    from tests.test_ocr import bgr, text_image
    from transforms.inference.ocr import OcrEngine

    img = bgr(text_image(["PRODUCT OF ITALY", "NET WT 500G"], size=30))
    plain = OcrEngine.load(threads=1, rewrite=False)
    fast = OcrEngine.load(threads=1)
    a, b = plain.read_image(img).lines, fast.read_image(img).lines
    assert [l.text for l in a] == [l.text for l in b] and [l.box for l in a] == [l.box for l in b]
    # the served recognizer is the rewritten graph: no Clip/Div hard-swish left
    data, report = rewrite_model_bytes(open(OcrModelPaths.default().rec, "rb").read())
    assert report.hard_swish == 28 and report.nodes_after < report.nodes_before
    assert "Clip" not in {n.op_type for n in onnx.load_from_string(data).graph.node}


def test_a_model_without_the_patterns_comes_back_unchanged():
    m = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])], "plain",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    data = m.SerializeToString()
    out, report = rewrite_model_bytes(data)
    assert out == data and report.nodes_before == report.nodes_after == 1


def test_an_unsorted_graph_without_the_patterns_is_served_as_it_is():
    # float16 converters append the input Cast at the end of the node list
    m = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["xc"], ["y"]), helper.make_node("Cast", ["x"], ["xc"], to=TensorProto.FLOAT)],
            "unsorted",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    data = m.SerializeToString()
    assert rewrite_model_bytes(data)[0] == data

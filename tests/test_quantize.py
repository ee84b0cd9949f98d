"""The shared ONNX quantization toolkit on a tiny CNN built in the test.

Tolerances: FP16 and graph optimization agree with FP32 to 1e-2 / 1e-5 of
the output's range; INT8 (dynamic and static) to 5% of the output's range.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from components.quantize import (
    FeedsCalibrationReader,
    compare_outputs,
    make_session,
    mixed_precision,
    model_opset,
    optimize_graph,
    quantizable_nodes,
    quantize_int8_dynamic,
    quantize_int8_static,
    to_fp16,
    upgrade_opset,
)
from transforms.errors import ConfigError, ModelLoadError


def _tiny_cnn(path, *, opset=12, seed=0):
    """x[N,3,8,8] -> conv1 -> relu -> conv2 -> relu -> GAP -> flatten -> matmul -> add -> y[N,5]."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b2"),
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 5)).astype(np.float32), "w3"),
        numpy_helper.from_array(rng.normal(0, 0.1, (5,)).astype(np.float32), "b3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w3"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "b3"], ["y"], name="fc_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _feeds(n, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _run(path, feed):
    return make_session(path, threads=1).run(None, feed)[0]


def _range(path, feeds):
    ys = np.concatenate([_run(path, f) for f in feeds])
    return float(ys.max() - ys.min())


@pytest.fixture
def cnn(tmp_path):
    return _tiny_cnn(tmp_path / "tiny.onnx")


def _quantized_weights(path) -> set[str]:
    """Names of Conv/MatMul nodes whose weight input comes from a DequantizeLinear."""
    model = onnx.load(path)
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if n.op_type in ("Conv", "MatMul") and n.input[1] in dq_outputs}


def test_optimize_graph_keeps_outputs(cnn, tmp_path):
    out = optimize_graph(cnn, str(tmp_path / "opt.onnx"))
    onnx.checker.check_model(onnx.load(out))
    stats = compare_outputs(cnn, out, _feeds(3))
    assert stats["y"]["max_abs"] <= 1e-5 * max(_range(cnn, _feeds(3)), 1.0)


def test_optimize_graph_rejects_bad_level(cnn, tmp_path):
    with pytest.raises(ConfigError, match="opt_level=5"):
        optimize_graph(cnn, str(tmp_path / "o.onnx"), opt_level=5)


def test_missing_model_is_a_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        to_fp16(str(tmp_path / "nope.onnx"), str(tmp_path / "o.onnx"))


def test_fp16_halves_size_and_agrees(cnn, tmp_path):
    out = to_fp16(cnn, str(tmp_path / "fp16.onnx"))
    model = onnx.load(out)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # keep_io_types
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    stats = compare_outputs(cnn, out, _feeds(3))
    assert stats["y"]["max_abs"] <= 1e-2 * _range(cnn, _feeds(3))


def test_upgrade_opset(cnn, tmp_path):
    assert model_opset(cnn) == 12
    out = upgrade_opset(cnn, str(tmp_path / "o13.onnx"), opset=13)
    assert model_opset(out) == 13
    assert compare_outputs(cnn, out, _feeds(1))["y"]["max_abs"] < 1e-6


def test_int8_dynamic_valid_and_close(cnn, tmp_path):
    out = quantize_int8_dynamic(cnn, str(tmp_path / "dyn.onnx"))
    model = onnx.load(out)
    onnx.checker.check_model(model)
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul") for n in model.graph.node)
    stats = compare_outputs(cnn, out, _feeds(4))
    assert stats["y"]["max_abs"] <= 0.05 * _range(cnn, _feeds(4))


def test_int8_static_qdq_per_channel_upgrades_opset_and_agrees(cnn, tmp_path):
    out = quantize_int8_static(cnn, str(tmp_path / "static.onnx"), FeedsCalibrationReader(_feeds(8, seed=2)))
    assert model_opset(out) >= 13
    assert _quantized_weights(out) == {"conv1", "conv2", "fc"}
    model = onnx.load(out)
    per_channel_scales = [
        i for i in model.graph.initializer if i.name.endswith("_scale") and len(i.dims) == 1 and i.dims[0] == 8
    ]
    assert per_channel_scales, "per-channel quantization should give one scale per output channel"
    stats = compare_outputs(cnn, out, _feeds(4, seed=3))  # held-out feeds, not the calibration ones
    assert stats["y"]["max_abs"] <= 0.05 * _range(cnn, _feeds(4, seed=3))


def test_int8_static_respects_exclusions(cnn, tmp_path):
    out = quantize_int8_static(cnn, str(tmp_path / "s.onnx"), _feeds(4), nodes_to_exclude=["conv1"])
    assert _quantized_weights(out) == {"conv2", "fc"}


def test_calibration_reader_rewinds_and_rejects_empty():
    reader = FeedsCalibrationReader(_feeds(2))
    assert reader.get_next() is not None and reader.get_next() is not None and reader.get_next() is None
    reader.rewind()
    assert reader.get_next() is not None
    with pytest.raises(ConfigError, match="no feeds"):
        FeedsCalibrationReader([])


def test_quantizable_nodes(cnn):
    assert quantizable_nodes(cnn) == ["conv1", "conv2", "fc"]


# Sensitivity the fake score assigns to each quantized node: conv1 is the fragile one.
_PENALTY = {"conv1": 0.10, "conv2": 0.01, "fc": 0.004}


def _fake_score(path):
    return 1.0 - sum(_PENALTY[n] for n in _quantized_weights(path))


@pytest.mark.parametrize("method", ["exclude_one", "quantize_one"])
@pytest.mark.parametrize("search", ["binary", "linear"])
def test_mixed_precision_keeps_most_sensitive_in_fp32(cnn, tmp_path, method, search):
    calib = _feeds(4)
    result = mixed_precision(
        cnn,
        str(tmp_path / "mixed.onnx"),
        quantize=lambda excl, out: quantize_int8_static(cnn, out, calib, nodes_to_exclude=excl),
        score=_fake_score,
        candidate_nodes=quantizable_nodes(cnn),
        reference_score=1.0,
        max_drop=0.02,
        method=method,
        search=search,
    )
    assert result.met_budget
    assert result.excluded_nodes == ["conv1"]
    assert result.quantized_score == pytest.approx(1 - sum(_PENALTY.values()))
    assert result.score == pytest.approx(1 - 0.014)
    assert [r["group"] for r in result.sensitivity] == ["conv1", "conv2", "fc"]
    assert _quantized_weights(result.model_path) == {"conv2", "fc"}
    assert np.allclose(_run(result.model_path, _feeds(1)[0]).shape, (2, 5))


def test_mixed_precision_tight_budget_and_groups(cnn, tmp_path):
    calib = _feeds(4)
    result = mixed_precision(
        cnn,
        str(tmp_path / "mixed.onnx"),
        quantize=lambda excl, out: quantize_int8_static(cnn, out, calib, nodes_to_exclude=excl),
        score=_fake_score,
        candidate_nodes=quantizable_nodes(cnn),
        groups={"backbone": ["conv1", "conv2"], "head": ["fc"]},
        reference_score=1.0,
        max_drop=0.005,
    )
    assert result.met_budget and sorted(result.excluded_nodes) == ["conv1", "conv2"]
    assert _quantized_weights(result.model_path) == {"fc"}


def test_metadata_survives_every_candidate(tmp_path):
    src = _tiny_cnn(tmp_path / "meta.onnx")
    model = onnx.load(src)
    model.metadata_props.add(key="character", value="a\nb\nc")
    onnx.save(model, src)
    outs = [
        optimize_graph(src, str(tmp_path / "o.onnx")),
        to_fp16(src, str(tmp_path / "h.onnx")),
        quantize_int8_dynamic(src, str(tmp_path / "d.onnx")),
        quantize_int8_static(src, str(tmp_path / "s.onnx"), _feeds(2)),
    ]
    for out in outs:
        meta = {p.key: p.value for p in onnx.load(out).metadata_props}
        assert meta.get("character") == "a\nb\nc", out


def test_static_calibration_cache_is_reused(cnn, tmp_path):
    cache = str(tmp_path / "ranges.json")
    first = quantize_int8_static(cnn, str(tmp_path / "a.onnx"), _feeds(4), calibration_cache_path=cache)
    again = quantize_int8_static(cnn, str(tmp_path / "b.onnx"), None, calibration_cache_path=cache, nodes_to_exclude=["fc"])
    assert _quantized_weights(first) == {"conv1", "conv2", "fc"}
    assert _quantized_weights(again) == {"conv1", "conv2"}
    with pytest.raises(ConfigError, match="calibration_reader"):
        quantize_int8_static(cnn, str(tmp_path / "c.onnx"), None)

"""Quantizing the shipped PP-OCR orientation classifier: valid models that agree with FP32.

Stated tolerance, on drawn upright and upside-down text lines held out from
the calibration lines: INT8 probabilities within 0.4 of FP32 at worst and
0.15 on average. The classifier is sensitive (FP32 itself is unsure on some
drawn lines, and INT8 moves those by up to ~0.3), which is why the mixed
candidate keeps it in FP32 unless its decisions agree with FP32 on the
calibration crops.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from components.ocr_quantize import DET_OP_TYPES, REC_OP_TYPES, REC_PERCENTILE, _layer_groups, build_ocr_candidates, rec_calibration_feeds
from components.ocr_eval import box_iou, box_rect
from components.quantize import compare_outputs, optimize_graph, quantize_int8_dynamic, quantize_int8_static, upgrade_opset
from tests.test_ocr import bgr, text_image
from transforms.errors import ConfigError
from transforms.inference.ocr import OcrEngine, OcrModelPaths

WORDS = ["MILK", "ORGANIC OATS", "BEST BEFORE 12.05", "NET WT 500G", "PRODUCT OF ITALY", "SUGAR FREE", "TOTAL 9.90", "SALT"]


def _crops(words):
    out = []
    for w in words:
        up = bgr(text_image([w], size=28))
        out += [up, np.ascontiguousarray(np.rot90(up, 2))]
    return out


@pytest.fixture(scope="module")
def fp32_cls(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    up = upgrade_opset(OcrModelPaths.default().cls, str(d / "cls13.onnx"), opset=13)
    return optimize_graph(up, str(d / "cls.onnx"))


@pytest.fixture(scope="module")
def engine():
    return OcrEngine.load(threads=1)


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_int8_classifier_agrees_with_fp32(fp32_cls, engine, tmp_path, kind):
    calib = engine.cls_feeds(_crops(WORDS[:4]), batch_size=4)  # upright + inverted lines
    held_out = engine.cls_feeds(_crops(WORDS[4:]), batch_size=8)
    if kind == "static":
        q = quantize_int8_static(fp32_cls, str(tmp_path / "cls.int8.onnx"), calib)
    else:
        q = quantize_int8_dynamic(fp32_cls, str(tmp_path / "cls.int8.onnx"), per_channel=True)
    onnx.checker.check_model(onnx.load(q))
    assert any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger") for n in onnx.load(q).graph.node)
    diff = compare_outputs(fp32_cls, q, held_out)
    (stats,) = diff.values()
    assert stats["max_abs"] <= 0.4
    assert stats["mean_abs"] <= 0.15
    assert stats["max_abs"] > 0  # it did change the model


def test_layer_groups_cover_nodes_in_order():
    nodes = [f"n{i}" for i in range(10)]
    groups = _layer_groups(nodes, 4)
    assert [n for g in groups.values() for n in g] == nodes
    assert len(groups) == 4


def test_recognizer_calibration_feeds_share_one_shape(engine):
    crops = _crops(WORDS) + [bgr(text_image(["A LONG LINE OF SMALL PRINT THAT IS WIDER THAN THE INPUT"], size=20))]
    feeds = rec_calibration_feeds(engine, crops, width=320, batch_size=4)
    assert len(feeds) == len(crops) // 4  # whole batches only: the histogram calibrators stack them
    assert {f["x"].shape for f in feeds} == {(4, 3, 48, 320)}
    # the engine's own preprocessing: values in [-1, 1], padding at 0
    assert all(f["x"].min() >= -1.0 and f["x"].max() <= 1.0 for f in feeds)


def test_percentile_int8_recognizer_quantizes_convolutions_only_and_reads_as_fp32(engine, tmp_path):
    up = upgrade_opset(OcrModelPaths.default().rec, str(tmp_path / "rec13.onnx"), opset=13)
    fp32 = optimize_graph(up, str(tmp_path / "rec.onnx"))
    calib = rec_calibration_feeds(engine, _crops(WORDS[:4]) + _crops(WORDS[:4])[::2], batch_size=4)
    q = quantize_int8_static(fp32, str(tmp_path / "rec.int8.onnx"), calib, op_types=REC_OP_TYPES, activation_type="quint8",
                             calibrate_method="percentile", extra_options={"CalibPercentile": REC_PERCENTILE})
    model = onnx.load(q)
    onnx.checker.check_model(model)
    produced = {o: n for n in model.graph.node for o in n.output}
    quantized_inputs = lambda n: [produced.get(i) is not None and produced[i].op_type == "DequantizeLinear" for i in n.input[:2]]
    assert all(all(quantized_inputs(n)) for n in model.graph.node if n.op_type == "Conv")
    assert not any(any(quantized_inputs(n)) for n in model.graph.node if n.op_type == "MatMul")
    # held-out lines read the same as FP32 reads them
    crops = [bgr(text_image([w], size=28, gap=4))[8:-8] for w in WORDS[4:]]
    det = OcrModelPaths.default().det
    int8 = OcrEngine.load(OcrModelPaths(det, q, None), threads=1)
    ref = OcrEngine.load(OcrModelPaths(det, fp32, None), threads=1)
    assert [t for t, _ in int8.recognize(crops)] == [t for t, _ in ref.recognize(crops)]


def test_int8_detector_quantizes_its_residual_additions_and_products_and_finds_the_same_lines(engine, tmp_path):
    up = upgrade_opset(OcrModelPaths.default().det, str(tmp_path / "det13.onnx"), opset=13)
    fp32 = optimize_graph(up, str(tmp_path / "det.onnx"))
    page = bgr(text_image(["TOTAL 12.50", "CASH 20.00", "NET WT 500G"], size=28))
    held_out = bgr(text_image(["PRODUCT OF ITALY", "BEST BEFORE 12.05"], size=30))
    q = quantize_int8_static(fp32, str(tmp_path / "det.int8.onnx"), [engine.det_feed(page)], op_types=DET_OP_TYPES, activation_type="quint8")
    model = onnx.load(q)
    onnx.checker.check_model(model)
    produced = {o: n for n in model.graph.node for o in n.output}
    dequantized = lambda n: all(produced.get(i) is not None and produced[i].op_type == "DequantizeLinear" for i in n.input[:2])
    for op in ("Add", "Mul"):
        nodes = [n for n in model.graph.node if n.op_type == op and len(n.input) == 2]
        assert nodes and all(dequantized(n) for n in nodes), op
    int8 = OcrEngine.load(OcrModelPaths(q, OcrModelPaths.default().rec, None), threads=1)
    ref = OcrEngine.load(OcrModelPaths(fp32, OcrModelPaths.default().rec, None), threads=1)

    def rows(boxes):  # the union rectangle of each text row (a line may come as one box or split at a word gap)
        out = []
        for x0, y0, x1, y1 in sorted(box_rect(b) for b in boxes):
            row = next((r for r in out if min(r[3], y1) - max(r[1], y0) > 0.5 * (y1 - y0)), None)
            if row is None:
                out.append([x0, y0, x1, y1])
            else:
                row[:] = [min(row[0], x0), min(row[1], y0), max(row[2], x1), max(row[3], y1)]
        return sorted(out, key=lambda r: r[1])

    got, want = rows(int8.detect(held_out)), rows(ref.detect(held_out))
    assert len(got) == len(want) == 2
    assert all(box_iou(g, w) > 0.8 for g, w in zip(got, want))


def test_a_build_calibrates_afresh_whatever_an_earlier_build_left(tmp_path):
    work = tmp_path / "candidates"
    (work / "_tmp").mkdir(parents=True)
    (work / "_tmp" / "rec.ranges.json").write_text("{}")  # ranges of another build: unusable here
    images = [bgr(text_image(["TOTAL 12.50", "CASH 20.00"], size=28)), bgr(text_image(["NET WT 500G", "MILK"], size=28))]
    built = build_ocr_candidates(str(work), images, candidates=["int8_static"], threads=2)
    assert set(built) == {"int8_static"}
    ranges = json.loads((work / "_tmp" / "rec.ranges.json").read_text()) if (work / "_tmp" / "rec.ranges.json").exists() else None
    assert ranges != {}  # calibrated again, not read from the stale file
    rec = onnx.load(str(work / "int8_static" / "rec.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in rec.graph.node)
    assert 0.0 < built["int8_static"].agreement["rec"] <= 1.0


def test_int8_detector_and_fp32_small_print_candidates_borrow_from_the_static_build(tmp_path):
    work = tmp_path / "candidates"
    images = [bgr(text_image(["TOTAL 12.50", "CASH 20.00"], size=28)), bgr(text_image(["NET WT 500G", "MILK"], size=28))]
    built = build_ocr_candidates(str(work), images, candidates=["fp32", "int8_detector", "int8_fp32_small"], threads=2)
    assert set(built) == {"fp32", "int8_detector", "int8_fp32_small"}  # the static build they borrow from is not left behind
    assert not (work / "int8_static").exists()

    def quantized(path) -> bool:
        return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)

    # int8_detector: the static INT8 detector with the FP32 recognizer and classifier
    folder = work / "int8_detector"
    assert quantized(folder / "det.onnx")
    assert not quantized(folder / "rec.onnx") and not quantized(folder / "cls.onnx")
    for m in ("rec", "cls"):
        assert (folder / f"{m}.onnx").read_bytes() == (work / "fp32" / f"{m}.onnx").read_bytes()
    assert built["int8_detector"].agreement["rec"] == 1.0 and 0.0 < built["int8_detector"].agreement["det"] <= 1.0
    # int8_fp32_small: INT8 detector and recognizer, and the FP32 recognizer for small print, which the engine loads
    small = work / "int8_fp32_small"
    assert quantized(small / "det.onnx") and quantized(small / "rec.onnx")
    assert (small / "rec_small.onnx").read_bytes() == (work / "fp32" / "rec.onnx").read_bytes()
    assert (small / "det.onnx").read_bytes() == (folder / "det.onnx").read_bytes()
    paths = OcrModelPaths.from_dir(str(small))
    assert paths.rec_small == str(small / "rec_small.onnx")
    engine = OcrEngine.load(paths, threads=1)
    assert engine.rec_small is not None
    assert 0.0 < built["int8_fp32_small"].agreement["rec"] <= 1.0
    assert " ".join(l.text for l in engine.read_image(images[0]).lines) == "TOTAL 12.50 CASH 20.00"  # (the detector may split a line)


def test_recognizer_calibration_feeds_from_fewer_crops_than_a_batch(engine):
    feeds = rec_calibration_feeds(engine, _crops(["MILK"]), batch_size=4)  # 2 crops
    assert [f["x"].shape for f in feeds] == [(2, 3, 48, 320)]
    with pytest.raises(ConfigError):
        rec_calibration_feeds(engine, [])

"""OCR model candidates: the three PP-OCR models in FP32, FP16, INT8 dynamic, INT8 static, INT8 detector, INT8 with FP32 small print, mixed, and quantization-aware INT8.

Each candidate is a folder with ``det.onnx``, ``rec.onnx`` and ``cls.onnx``
(and, for ``int8_fp32_small``, ``rec_small.onnx``): what
``OcrModelPaths.from_dir`` and ``aisle enrich --ocr-models`` read.
The three models are measured separately, because they react differently
to INT8: the detector's output is a probability map thresholded into
boxes, the classifier a two-way decision, the recognizer a per-column
softmax over 6,625 characters whose argmax is the text.

* ``fp32``: graph-optimized (basic level, portable) copies of the models,
  with the exact rewrites of :mod:`components.graph_rewrite` (1.4-1.7x
  faster per model on 2 cores, same outputs); every other candidate starts
  from these;
* ``fp16``: every model in float16 (inputs and outputs stay float32);
* ``int8_dynamic``: INT8 weights, activations quantized at run time;
* ``int8_static``: QDQ, per-channel weights, activations calibrated on
  real images (disjoint from the evaluation images): the detector (its
  convolutions, residual additions and hard-swish products) and the
  classifier on their ranges (min/max), the recognizer's convolutions at
  the 99.99th percentile of their absolute values (every line crop fitted
  into one 48 x 320 input, as the histogram calibrators need), its
  attention and output MatMuls left in FP32: on receipts 060-158 and
  160-258 (not the evaluation set) that lost 0.012 and 0.014 word F1
  against the FP32 recognizer, where min/max ranges over Conv and MatMul
  lost 0.022 and 0.022 (entropy calibration: 0.029 on 060-158);
* ``int8_detector``: the static INT8 detector with the FP32 recognizer and
  classifier: the recognizer's INT8 convolutions are where the word F1 goes
  (on the evaluation receipts, INT8 detector alone 0.8478, INT8 recognizer
  alone 0.8386, FP32 0.8468; see benchmarks/README.md), while the
  detector's cut detection by about 30% (0.26 against 0.37 s/img there);
* ``int8_fp32_small``: the static INT8 detector and recognizer (the
  classifier as in ``mixed``), plus the FP32 recognizer as ``rec_small.onnx``
  for lines under ``OcrConfig.rec_small_below`` pixels high: the INT8
  recognizer's loss is in small print, which it must enlarge to its 48-pixel
  input (receipts 060-158 and 160-258 made into full-page scans with lines
  18-24 px high: INT8 0.7481 and 0.7520 word F1, this candidate 0.7564 and
  0.7590, the FP32 recognizer 0.7555 and 0.7592), while on photos the
  INT8 recognizer reads nearly every line, at its speed;
* ``int8_qat`` (built apart, by :func:`build_qat_candidate`, because it
  needs labelled lines): the recognizer retrained with INT8 simulated
  (:mod:`components.ocr_qat`), then quantized as in ``int8_static``, with
  ``int8_static``'s detector and the classifier as in ``mixed``: on
  receipts 060-158 it read 0.8831 word F1 against 0.8799 for ``mixed`` and
  0.8822 for the FP32 recognizer, and as scans 0.7806 against 0.7481 and
  0.7555, at the INT8 recognizer's speed;
* ``mixed``: static INT8 where the model's own agreement with FP32 holds on
  the calibration images, and, for the recognizer, per-layer sensitivity
  with the most sensitive layers kept in FP32 until the agreement drop is
  within ``max_rec_drop``.

Agreement scores use no ground truth: the FP32 models' output on the
calibration images is the reference (character agreement of the
recognizer's text, box recall of the detector, label agreement of the
classifier).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from components.ocr_eval import box_iou, box_rect
from components.ocr_eval import levenshtein
from components.quantize import (
    FeedsCalibrationReader,
    mixed_precision,
    optimize_graph,
    quantizable_nodes,
    quantize_int8_dynamic,
    quantize_int8_static,
    rewrite_for_cpu,
    to_fp16,
    upgrade_opset,
)
from transforms.errors import ConfigError
from transforms.inference.ocr import OcrConfig, OcrEngine, OcrModelPaths, _session

__all__ = ["CANDIDATES", "DET_OP_TYPES", "QAT_CANDIDATE", "CalibrationSet", "OcrCandidateInfo", "build_ocr_candidates", "build_qat_candidate", "calibration_set"]

CANDIDATES = ("fp32", "fp16", "int8_dynamic", "int8_static", "int8_detector", "int8_fp32_small", "mixed")
# built apart (build_qat_candidate): it needs labelled training pages
QAT_CANDIDATE = "int8_qat"
MODELS = ("det", "rec", "cls")
STATIC_OP_TYPES = ("Conv", "MatMul")
# the detector: its residual Adds and hard-swish Muls as well, so onnxruntime
# fuses them into QLinearAdd / QLinearMul instead of dequantizing every
# feature map around them (1088 x 1536 input, 2 threads, AMD EPYC with VNNI:
# 147 ms a run against 181 ms with convolutions only and 235 ms in FP32;
# box recall against FP32 on receipts 060-158: 0.985 against 0.981)
DET_OP_TYPES = ("Conv", "Add", "Mul")
# the recognizer: convolutions only, ranges at this percentile of |activation| (see the module docstring)
REC_OP_TYPES = ("Conv",)
REC_PERCENTILE = 99.99
REC_CALIBRATION_WIDTH = 320
# Unsigned activations, signed weights (U8S8): on the rewritten recognizer
# (batch 4 x 48 x 320, 2 threads, this 2-core Xeon with VNNI) S8S8 QDQ ran at
# 0.36x FP32 and U8S8 at 0.93x; on the detector (1440 x 928) 0.52x and 0.89x.
STATIC_ACTIVATION = "quint8"


@dataclass
class CalibrationSet:
    """Model inputs built from real images by the FP32 engine, plus the FP32 reference outputs."""

    det_feeds: list[dict]
    rec_feeds: list[dict]  # the recognizer's calibration feeds, all of one shape (rec_calibration_feeds)
    cls_feeds: list[dict]
    crops: list[np.ndarray]
    images: list[np.ndarray]
    ref_texts: list[str] = field(default_factory=list)
    ref_boxes: list[list[np.ndarray]] = field(default_factory=list)
    ref_flips: list[int] = field(default_factory=list)


def calibration_set(images: Sequence[np.ndarray], *, engine: OcrEngine, max_crops: int = 256, max_det_images: int = 4) -> CalibrationSet:
    """Build calibration feeds (and FP32 references) from BGR images with the FP32 ``engine``."""
    if not images:
        raise ConfigError("calibration needs at least one image")
    crops: list[np.ndarray] = []
    boxes = []
    for img in images:
        boxes.append(engine.detect(img))
        crops.extend(engine.line_crops(img))
    rng = np.random.default_rng(0)
    if len(crops) > max_crops:
        keep = sorted(rng.choice(len(crops), size=max_crops, replace=False))
        crops = [crops[i] for i in keep]
    det_imgs = list(images[:max_det_images])
    cal = CalibrationSet(
        det_feeds=[engine.det_feed(img) for img in det_imgs],
        rec_feeds=rec_calibration_feeds(engine, crops),
        cls_feeds=engine.cls_feeds(crops) if engine.cls is not None else [],
        crops=crops,
        images=det_imgs,
    )
    cal.ref_texts = [t for t, _ in engine.recognize(crops)]
    cal.ref_boxes = boxes[: len(det_imgs)]
    if engine.cls is not None:
        cal.ref_flips = [int(f) for f, _ in engine._cls_batch(crops)]
    return cal


def rec_calibration_feeds(engine: OcrEngine, crops: Sequence[np.ndarray], *, width: int = REC_CALIBRATION_WIDTH, batch_size: int = 4) -> list[dict]:
    """Recognizer feeds of one shape: each crop through the engine's own preprocessing into a ``rec_height`` x ``width`` input.

    A crop narrower than ``width`` is padded as the engine pads it; a longer
    line is fitted into the width. The percentile and entropy calibrators of
    onnxruntime stack every feed's activations into one array, so every
    feed must have the same shape. (Cutting long lines into windows instead
    kept their print's scale but calibrated no better: word F1 0.847 and
    0.823 on receipts 060-158 and 160-258, against 0.857 and 0.824.)
    """
    name = engine.rec.get_inputs()[0].name
    if not crops:
        raise ConfigError("recognizer calibration needs at least one line crop (no text found on the calibration images)")
    batch_size = min(batch_size, len(crops))  # whole batches only: every feed of one shape
    feeds = []
    for s in range(0, len(crops) - batch_size + 1, batch_size):
        chunk = crops[s : s + batch_size]
        ratios = [min(c.shape[1] / max(c.shape[0], 1), width / engine.config.rec_height) for c in chunk]
        feeds.append({name: engine._rec_batch(chunk, np.arange(len(chunk)), ratios, min_width=width)[0]})
    return feeds


class _Scorer:
    """Agreement of one swapped-in model with the FP32 engine on the calibration set."""

    def __init__(self, base: OcrEngine, cal: CalibrationSet, threads: int | None):
        self.base, self.cal, self.threads = base, cal, threads

    def _engine(self, **paths) -> OcrEngine:
        b = self.base
        return OcrEngine(
            _session(paths["det"], self.threads) if "det" in paths else b.det,
            _session(paths["rec"], self.threads) if "rec" in paths else b.rec,
            _session(paths["cls"], self.threads) if "cls" in paths else b.cls,
            characters=b.characters[1:-1],
            config=b.config,
        )

    def rec(self, path: str) -> float:
        """1 - character disagreement rate with the FP32 recognizer's text."""
        texts = [t for t, _ in self._engine(rec=path).recognize(self.cal.crops)]
        edits = sum(levenshtein(t, r) for t, r in zip(texts, self.cal.ref_texts))
        return 1.0 - edits / max(1, sum(len(r) for r in self.cal.ref_texts))

    def det(self, path: str) -> float:
        """Recall of the FP32 detector's boxes (IoU >= 0.5) by the candidate's boxes."""
        eng = self._engine(det=path)
        found = total = 0
        for img, ref in zip(self.cal.images, self.cal.ref_boxes):
            got = [box_rect(b) for b in eng.detect(img)]
            for r in ref:
                total += 1
                found += any(box_iou(box_rect(r), g) >= 0.5 for g in got)
        return found / max(total, 1)

    def cls(self, path: str) -> float:
        """Agreement of the upside-down decisions with the FP32 classifier."""
        flips = [int(f) for f, _ in self._engine(cls=path)._cls_batch(self.cal.crops)]
        return float(np.mean([a == b for a, b in zip(flips, self.cal.ref_flips)])) if flips else 1.0


@dataclass
class OcrCandidateInfo:
    """What was built for one candidate: its model folder and per-model notes/scores."""

    name: str
    model_dir: str
    notes: str
    agreement: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # int8_qat: what components.ocr_qat reported


def _layer_groups(nodes: Sequence[str], n_groups: int) -> dict[str, list[str]]:
    """Consecutive runs of quantizable nodes (graph order) as layers."""
    size = max(1, int(np.ceil(len(nodes) / n_groups)))
    return {f"layers_{i:02d}_{nodes[i]}..{nodes[min(i + size, len(nodes)) - 1]}": list(nodes[i : i + size]) for i in range(0, len(nodes), size)}


def build_ocr_candidates(
    work_dir: str,
    calibration_images: Sequence[np.ndarray],
    *,
    base: OcrModelPaths | None = None,
    candidates: Sequence[str] = CANDIDATES,
    max_rec_drop: float = 0.01,
    min_det_recall: float = 0.98,
    min_cls_agreement: float = 0.99,
    rec_groups: int = 6,
    threads: int | None = 1,
    calibration_ids: Sequence[str] = (),
    qat_pages: tuple[Sequence, Sequence] | None = None,
    qat_config=None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, OcrCandidateInfo]:
    """Build each requested candidate under ``work_dir/<name>/`` and return what was built.

    ``calibration_images`` are BGR arrays, kept apart from evaluation images
    (``calibration_ids`` names them in ``work_dir/candidates.json``, which
    records what was built). ``int8_qat`` needs ``qat_pages`` (training pages, dev pages: labelled
    pages, see :func:`components.ocr_qat.qat_recognizer`, trained with ``qat_config``).
    """
    qat = QAT_CANDIDATE in candidates
    if qat and not (qat_pages and qat_pages[0]):
        raise ConfigError(f"{QAT_CANDIDATE} needs labelled training pages (qat_pages)")
    built = _build(
        work_dir, calibration_images, base=base, max_rec_drop=max_rec_drop,
        candidates=[c for c in candidates if c != QAT_CANDIDATE] + (["fp32", "int8_static"] if qat else []),
        min_det_recall=min_det_recall, min_cls_agreement=min_cls_agreement, rec_groups=rec_groups, threads=threads, log=log,
    )
    _record(work_dir, calibration_images, calibration_ids, built)
    if qat:
        from components.ocr_qat import QatConfig, qat_recognizer

        train, dev = qat_pages
        cfg = qat_config or QatConfig(threads=threads)
        trained = qat_recognizer(os.path.join(work_dir, "fp32"), train, os.path.join(work_dir, "_qat"), dev_pages=dev, config=cfg, log=log)
        info = build_qat_candidate(work_dir, trained.model_dir, calibration_images, min_cls_agreement=min_cls_agreement, threads=threads, log=log)
        info.training = dataclasses.asdict(trained)
        shutil.copyfile(os.path.join(trained.model_dir, "qat.json"), os.path.join(info.model_dir, "qat.json"))
        shutil.rmtree(trained.model_dir, ignore_errors=True)
        built[QAT_CANDIDATE] = info
        for extra in {"fp32", "int8_static"} - set(candidates):
            shutil.rmtree(built.pop(extra).model_dir, ignore_errors=True)
        _record(work_dir, calibration_images, calibration_ids, built)
    return built


def _record(work_dir, calibration_images, calibration_ids, built) -> None:
    record = {
        "calibration_ids": list(calibration_ids),
        "n_calibration_images": len(calibration_images),
        "candidates": {n: dataclasses.asdict(b) for n, b in built.items()},
    }
    with open(os.path.join(work_dir, "candidates.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)


def build_qat_candidate(
    work_dir: str,
    qat_dir: str,
    calibration_images: Sequence[np.ndarray],
    *,
    min_cls_agreement: float = 0.99,
    threads: int | None = 1,
    log: Callable[[str], None] = lambda msg: None,
) -> OcrCandidateInfo:
    """The ``int8_qat`` candidate under ``work_dir/int8_qat/``: the recognizer of ``qat_dir`` (written by
    :func:`components.ocr_qat.qat_recognizer` from ``work_dir/fp32``) quantized with the settings of
    ``int8_static`` (QDQ, per channel, convolutions only, percentile ranges on ``calibration_images``),
    with ``int8_static``'s detector and, as in ``mixed``, its classifier only where it agrees with FP32.

    ``work_dir`` must hold the ``fp32`` and ``int8_static`` candidates of :func:`build_ocr_candidates`.
    """
    record_path = os.path.join(work_dir, "candidates.json")
    static_dir = os.path.join(work_dir, "int8_static")
    if not (os.path.isfile(record_path) and os.path.isfile(os.path.join(static_dir, "det.onnx"))):
        raise ConfigError(f"{work_dir} has no int8_static candidate: build it with build_ocr_candidates first")
    with open(record_path, encoding="utf-8") as f:
        record = json.load(f)
    qat = OcrModelPaths.from_dir(qat_dir)
    log(f"int8_qat: calibrating on {len(calibration_images)} images")
    engine = OcrEngine.load(OcrModelPaths(det=os.path.join(work_dir, "fp32", "det.onnx"), rec=qat.rec, cls=None), threads=threads, config=OcrConfig())
    cal = calibration_set(calibration_images, engine=engine)
    out = os.path.join(work_dir, "int8_qat")
    os.makedirs(out, exist_ok=True)
    quantize_int8_static(
        qat.rec, os.path.join(out, "rec.onnx"), FeedsCalibrationReader(cal.rec_feeds), op_types=REC_OP_TYPES,
        activation_type=STATIC_ACTIVATION, calibrate_method="percentile", extra_options={"CalibPercentile": REC_PERCENTILE},
    )
    rec_agreement = _Scorer(engine, cal, threads).rec(os.path.join(out, "rec.onnx"))
    shutil.copyfile(os.path.join(static_dir, "det.onnx"), os.path.join(out, "det.onnx"))
    static_agreement = record["candidates"]["int8_static"]["agreement"] if "int8_static" in record["candidates"] else {}
    cls_int8 = static_agreement.get("cls", 0.0) >= min_cls_agreement
    shutil.copyfile(os.path.join(static_dir if cls_int8 else os.path.join(work_dir, "fp32"), "cls.onnx"), os.path.join(out, "cls.onnx"))
    info = OcrCandidateInfo(
        "int8_qat", out,
        f"rec retrained with INT8 simulated, then static INT8 as int8_static (agreement with its FP32 {rec_agreement:.4f}); "
        f"det INT8; cls {'INT8' if cls_int8 else 'FP32'}",
        {"det": static_agreement.get("det", 1.0), "rec": rec_agreement, "cls": static_agreement.get("cls", 1.0) if cls_int8 else 1.0},
    )
    record["candidates"]["int8_qat"] = dataclasses.asdict(info)
    with open(record_path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    log(f"int8_qat: {info.notes}")
    return info


def _build(work_dir, calibration_images, *, base, candidates, max_rec_drop, min_det_recall, min_cls_agreement, rec_groups, threads, log):
    unknown = set(candidates) - set(CANDIDATES)
    if unknown:
        raise ConfigError(f"unknown OCR candidates {sorted(unknown)}; choose from {CANDIDATES}")
    base = base or OcrModelPaths.default()
    os.makedirs(work_dir, exist_ok=True)
    src = {"det": base.det, "rec": base.rec, "cls": base.cls}

    # FP32 reference: opset 13 (per-channel QDQ needs it), basic graph
    # optimization, then the exact rewrites onnxruntime does not make
    # (hard-swish as one op pair, affine blocks folded into convolutions).
    fp32_dir = os.path.join(work_dir, "fp32")
    os.makedirs(fp32_dir, exist_ok=True)
    fp32 = {}
    rewrites = []
    for m in MODELS:
        up = upgrade_opset(src[m], os.path.join(work_dir, "_tmp", f"{m}.opset13.onnx"), opset=13)
        opt = optimize_graph(up, os.path.join(work_dir, "_tmp", f"{m}.basic.onnx"), opt_level=1)
        fp32[m] = os.path.join(fp32_dir, f"{m}.onnx")
        r = rewrite_for_cpu(opt, fp32[m])
        rewrites.append(f"{m} {r.nodes_before}->{r.nodes_after} nodes")
    built: dict[str, OcrCandidateInfo] = {}
    if "fp32" in candidates:
        built["fp32"] = OcrCandidateInfo("fp32", fp32_dir, "opset 13, basic graph optimization, hard-swish fused and affines folded (" + ", ".join(rewrites) + ")")

    def folder(name: str) -> str:
        d = os.path.join(work_dir, name)
        os.makedirs(d, exist_ok=True)
        return d

    if "fp16" in candidates:
        d = folder("fp16")
        for m in MODELS:
            to_fp16(fp32[m], os.path.join(d, f"{m}.onnx"))
        built["fp16"] = OcrCandidateInfo("fp16", d, "all three models float16 (float32 I/O)")
    if "int8_dynamic" in candidates:
        d = folder("int8_dynamic")
        for m in MODELS:
            quantize_int8_dynamic(fp32[m], os.path.join(d, f"{m}.onnx"), per_channel=True)
        built["int8_dynamic"] = OcrCandidateInfo("int8_dynamic", d, "INT8 weights (per channel), dynamic activations")

    if not {"int8_static", "int8_detector", "int8_fp32_small", "mixed"} & set(candidates):
        shutil.rmtree(os.path.join(work_dir, "_tmp"), ignore_errors=True)
        return built

    log(f"calibrating on {len(calibration_images)} images")
    ref_engine = OcrEngine.load(OcrModelPaths(**{m: fp32[m] for m in MODELS}), threads=threads, config=OcrConfig())
    cal = calibration_set(calibration_images, engine=ref_engine)
    scorer = _Scorer(ref_engine, cal, threads)
    feeds = {"det": cal.det_feeds, "rec": cal.rec_feeds, "cls": cal.cls_feeds}
    caches = {m: os.path.join(work_dir, "_tmp", f"{m}.ranges.json") for m in MODELS}
    for path in caches.values():  # ranges left by an earlier build came from other images or another method
        if os.path.exists(path):
            os.remove(path)
    # (onnxruntime 1.31's CalibMaxIntermediateOutputs discards the collected
    # ranges instead of merging them: bound memory by the calibration size.)
    extra = {"det": {}, "rec": {}, "cls": {}}

    def static(m: str, out: str, exclude: Sequence[str] = ()) -> str:
        # Not every op type: quantizing the recognizer's decomposed
        # LayerNorm/attention arithmetic as well collapses its accuracy, and
        # with every op type in play, keeping a Conv in FP32 does not give
        # back FP32 behaviour (its neighbours stay quantized).
        reader = None if os.path.isfile(caches[m]) else FeedsCalibrationReader(feeds[m])
        rec = m == "rec"
        return quantize_int8_static(
            fp32[m], out, reader, nodes_to_exclude=exclude, op_types={"rec": REC_OP_TYPES, "det": DET_OP_TYPES}.get(m, STATIC_OP_TYPES),
            activation_type=STATIC_ACTIVATION, calibration_cache_path=caches[m],
            calibrate_method="percentile" if rec else "minmax",
            extra_options={**extra[m], **({"CalibPercentile": REC_PERCENTILE} if rec else {})},
        )

    d = folder("int8_static")
    agreement = {}
    for m in MODELS:
        static(m, os.path.join(d, f"{m}.onnx"))
        agreement[m] = getattr(scorer, m)(os.path.join(d, f"{m}.onnx"))
        log(f"int8_static {m}: agreement with fp32 {agreement[m]:.4f}")
    if "int8_static" in candidates:
        built["int8_static"] = OcrCandidateInfo(
            "int8_static", d, f"QDQ per-channel INT8, calibrated (recognizer: Conv only, {REC_PERCENTILE} percentile ranges)", dict(agreement)
        )

    if "int8_detector" in candidates:
        dd = folder("int8_detector")
        shutil.copyfile(os.path.join(d, "det.onnx"), os.path.join(dd, "det.onnx"))
        for m in ("rec", "cls"):
            shutil.copyfile(fp32[m], os.path.join(dd, f"{m}.onnx"))
        built["int8_detector"] = OcrCandidateInfo(
            "int8_detector", dd, f"det INT8 (agreement {agreement['det']:.3f}); rec and cls FP32", {"det": agreement["det"], "rec": 1.0, "cls": 1.0}
        )

    if "int8_fp32_small" in candidates:
        sd = folder("int8_fp32_small")
        cls_int8 = agreement["cls"] >= min_cls_agreement
        for m in ("det", "rec"):
            shutil.copyfile(os.path.join(d, f"{m}.onnx"), os.path.join(sd, f"{m}.onnx"))
        shutil.copyfile(os.path.join(d, "cls.onnx") if cls_int8 else fp32["cls"], os.path.join(sd, "cls.onnx"))
        shutil.copyfile(fp32["rec"], os.path.join(sd, "rec_small.onnx"))
        built["int8_fp32_small"] = OcrCandidateInfo(
            "int8_fp32_small", sd,
            f"det and rec INT8 (agreement {agreement['det']:.3f}, {agreement['rec']:.4f}), cls {'INT8' if cls_int8 else 'FP32'}; "
            f"lines under {OcrConfig().rec_small_below} px read by the FP32 recognizer (rec_small.onnx)",
            {"det": agreement["det"], "rec": agreement["rec"], "cls": agreement["cls"] if cls_int8 else 1.0},
        )

    if "mixed" in candidates:
        md = folder("mixed")
        notes = []
        # detector and classifier: whole-model decision by measured agreement
        for m, floor in (("det", min_det_recall), ("cls", min_cls_agreement)):
            if agreement[m] >= floor:
                shutil.copyfile(os.path.join(d, f"{m}.onnx"), os.path.join(md, f"{m}.onnx"))
                notes.append(f"{m} INT8 (agreement {agreement[m]:.3f})")
            else:
                shutil.copyfile(fp32[m], os.path.join(md, f"{m}.onnx"))
                notes.append(f"{m} FP32 (INT8 agreement {agreement[m]:.3f} < {floor})")
        # recognizer: per-layer sensitivity
        nodes = quantizable_nodes(fp32["rec"], REC_OP_TYPES)
        groups = _layer_groups(nodes, rec_groups)
        result = mixed_precision(
            fp32["rec"],
            os.path.join(md, "rec.onnx"),
            quantize=lambda excl, out: static("rec", out, excl),
            score=scorer.rec,
            candidate_nodes=nodes,
            groups=groups,
            reference_score=1.0,
            max_drop=max_rec_drop,
            work_dir=os.path.join(work_dir, "_tmp", "mixed_rec"),
        )
        notes.append(f"rec INT8 with {len(result.excluded_nodes)}/{len(nodes)} nodes kept FP32 (agreement {result.score:.4f})")
        with open(os.path.join(md, "mixed_precision_rec.json"), "w", encoding="utf-8") as f:
            json.dump(result.to_dict(), f, indent=2)
        agreement_mixed = {
            "det": agreement["det"] if agreement["det"] >= min_det_recall else 1.0,
            "cls": agreement["cls"] if agreement["cls"] >= min_cls_agreement else 1.0,
            "rec": result.score,
        }
        built["mixed"] = OcrCandidateInfo("mixed", md, "; ".join(notes), agreement_mixed)
        log(f"mixed: {'; '.join(notes)}")
    if "int8_static" not in candidates:
        shutil.rmtree(d, ignore_errors=True)
    return built

"""Text extraction (OCR): the PP-OCRv4 ONNX models of rapidocr-onnxruntime in RunInference.

Three models: a DB text detector, a text-line orientation classifier
(upright vs 180 degrees) and a CTC text recognizer. The package's own pre-
and post-processing (detector resize/normalise, DB box extraction) is
reused; the orchestration is ours because product photos and receipts need
what the stock engine does not do:

* vertical text: a crop at least ``vertical_ratio`` times taller than wide is
  read both rotated by 90 and by 270 degrees and the more confident reading
  is kept (the shipped classifier only tells 0 from 180);
* tall images (receipts) are cut into overlapping tiles so the detector keeps
  its resolution, and the boxes are merged back (at most ``max_tiles``: a
  sliver of an image, 1 x 3000 pixels, is detected whole rather than as
  thousands of upscaled tiles);
* recognition crops of every image in a batch are recognized together,
  sorted by aspect ratio, in batches of ``rec_batch_size``; with ``threads``
  > 1 the batches run ``threads`` at a time, each on one thread (the
  recognizer's and classifier's sessions get one intra-op thread each; the
  detector's, one big tensor a call, keeps ``threads``): measured on 2 cores,
  the INT8 recognizer ran 4.7 ms a crop this way against 6.6 ms with two
  intra-op threads (FP32: 7.9 either way), see ``benchmarks/README.md``;
* spaces the recognizer drops between words are restored where its space
  class peaks between two characters (``space_prob``); optionally a weak
  peak counts only across a gap wider than the line's usual character
  pitch, for letter-spaced print (``space_pitch_factor``); a decimal point
  lost in its gap at the end of a line is put back (:func:`fix_decimals`);
* models load from any path Beam's FileSystems reads (local, ``gs://``), so a
  quantized or retrained model is a path away.

``angle`` of an :class:`OcrLine` is the counter-clockwise rotation (0, 90,
180, 270 degrees) applied to the line's crop to read it.

>>> from transforms.inference.ocr import OcrEngine, OcrModelPaths
>>> engine = OcrEngine.load(OcrModelPaths.default(), threads=1)  # doctest: +SKIP
>>> [l.text for l in engine.read_image(image_bgr)]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import pathlib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import numpy as np

from transforms.beam_ml import ModelHandler, PredictionResult
from transforms.errors import AisleError, ConfigError, ModelLoadError
from transforms.inference import read_model_bytes, thread_budget

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ImageError",
    "OcrConfig",
    "OcrEngine",
    "OcrLine",
    "OcrModelHandler",
    "OcrModelPaths",
    "OcrResult",
    "REASONS",
    "decode_image",
    "failure_reason",
    "full_text",
    "reading_order",
]

METRICS_NAMESPACE = "aisle_ocr"
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # ~ 8000 x 5000; decompression bombs are far larger
DEFAULT_MAX_IMAGE_BYTES = 50 * 2**20

# Every reason code an OCR dead letter can carry, with what it means.
REASONS = {
    "IMAGE_NOT_FOUND": "no file exists at the image's uri (a wrong path, or the file was never uploaded)",
    "IMAGE_READ_ERROR": "the image file exists but could not be read (permissions, a storage error)",
    "IMAGE_TOO_LARGE": "the image is over the byte or pixel limit (max_image_bytes / max_image_pixels); decompression bombs land here",
    "IMAGE_DECODE_ERROR": "the bytes are not a decodable image (empty, truncated, corrupt, or another file type)",
    "OCR_INFERENCE_ERROR": "the OCR models failed on an image that decoded (the detail has the error)",
}


class ImageError(AisleError, ValueError):
    """An image that cannot become OCR input; ``reason`` is the dead-letter code.

    The message starts with the reason (``"IMAGE_TOO_LARGE: ..."``) so the
    code survives RunInference's failure output, which carries the
    exception as text.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


_REASON = re.compile(r"\b(IMAGE_[A-Z_]+): ")


def failure_reason(error) -> tuple[str, str]:
    """(reason code, detail) of an exception or of RunInference's ``(type, repr, traceback)`` failure."""
    if isinstance(error, BaseException):
        return getattr(error, "reason", "OCR_INFERENCE_ERROR"), f"{type(error).__name__}: {error}"
    if isinstance(error, tuple) and error:
        kind = error[0]
        text = str(error[1]) if len(error) > 1 else ""
        name = getattr(kind, "__name__", str(kind))
        m = _REASON.search(text)
        if m and isinstance(kind, type) and issubclass(kind, ImageError):
            return m.group(1), f"{name}: {text}"
        return "OCR_INFERENCE_ERROR", f"{name}: {text}"
    return "OCR_INFERENCE_ERROR", str(error)


class OcrLine(NamedTuple):
    """One recognized text line: its box is 4 ``(x, y)`` points (clockwise from top-left) in image pixels."""

    text: str
    confidence: float
    box: tuple[tuple[float, float], ...]
    angle: int = 0


class OcrResult(NamedTuple):
    """The lines of one image in reading order, and the image's size in pixels."""

    lines: tuple[OcrLine, ...]
    width: int
    height: int


SPACE_PROB_KEY = "aisle_space_prob"  # recognizer metadata: the space threshold its fine-tuning chose (components.ocr_finetune)
DEFAULT_SPACE_PROB = 0.02  # the shipped PP-OCRv4 recognizer's, tuned on receipts 100-158 and 360-398 (see benchmarks/README.md)


def read_columns(n_cols: int, width: int, batch_width: int) -> int:
    """The recognizer's output columns that read a crop ``width`` px wide in a batch padded to ``batch_width``
    (the columns past it only see padding)."""
    return min(n_cols, int(math.ceil(width * n_cols / batch_width)) + 1)


def model_space_prob(rec_session) -> float:
    """The space threshold a recognizer carries in its metadata, else :data:`DEFAULT_SPACE_PROB`."""
    try:
        meta = rec_session.get_modelmeta().custom_metadata_map
    except AttributeError:  # a session-like object without metadata
        return DEFAULT_SPACE_PROB
    value = meta.get(SPACE_PROB_KEY)
    if value is None:
        return DEFAULT_SPACE_PROB
    try:
        return float(value)
    except ValueError:
        raise ModelLoadError(f"recognizer metadata {SPACE_PROB_KEY}={value!r} is not a number") from None


@dataclass(frozen=True)
class OcrConfig:
    """Tuning of the OCR engine; every size is in pixels.

    Detection enlarges an image whose shorter side is below ``det_min_side``
    to that size (never above ``det_max_side_up`` on the longer side) and
    otherwise keeps its resolution, never above ``det_max_side`` on the
    longer side (sizes rounded to multiples of 32; 1600 rather than 2000:
    on receipts 060-158 the same word F1, 0.8842 against 0.8839 with the
    ``int8_qat`` candidate, for 17% less detection time, see
    benchmarks/README.md). Images taller than ``tile_aspect`` times their width, which
    whole-image detection would have to shrink (taller than
    ``det_max_side``), are tiled into windows of that aspect with
    ``tile_overlap`` (fraction) overlap, so detection sees them at full
    resolution; an image that would need more than ``max_tiles`` tiles is
    detected whole (each tile is enlarged to ``det_min_side``, so the work
    of a few-hundred-byte sliver would otherwise be unbounded).

    Two cores on one detection: an input of more than ``det_split_pixels``
    runs as two bands, one thread each, side by side, that share
    ``det_split_overlap`` rows on each side of the seam; the probability map
    is joined at the seam and searched for boxes once
    (``OcrEngine._det_prob``). onnxruntime runs the detector's elementwise
    and quantize ops on one thread, so one run on two threads was only
    1.33-1.42x one thread. On the evaluation receipts (``int8_qat``)
    detection took 0.169 s/img against 0.193, at 0.8485 word F1 against
    0.8483; on the dev sets the word F1 moved by +0.0002 (060-158), -0.0030
    (060-158 as scans) and +0.0022 (160-358, every second), with 2-12%
    less detection time. The bands' maps differ a little from the whole
    one everywhere, not only at the seam: the detector's squeeze-and-excite
    blocks pool over their whole input.

    Small print: when the median detected line is under ``det_small_text``
    pixels high as the detector saw it, the region that holds the lines (with
    a margin of two line heights) is scaled so that the median line is
    ``det_text_target`` pixels high, at most ``det_zoom_max_pixels`` pixels in
    all, and detected again; its boxes replace the first ones. The case is a
    scanned page with a small receipt on it (text 12-14 px high: lines merged
    or missed at that size); a huge photo that whole-image detection shrinks
    past legibility is the other (its region is scaled down less). The
    threshold of 26 px was chosen on receipts 060-158 made into scans with
    lines 18-24 px high (22 px: lines 21 px high as seen were zoomed, 22 px
    ones not; see benchmarks/README.md).

    Blank margins: an image whose frame is plain (a product on white, a
    receipt scanned on a full page) is detected on the part that holds print
    (``trim_tolerance``, ``trim_min_saving``; see ``OcrEngine._content_box``),
    at the scale the whole image would have had, so the print reaches the
    detector, and the small-print test, at the same size.

    Small print read by a second recognizer: with ``OcrModelPaths.rec_small``,
    line crops under ``rec_small_below`` pixels high (as cut from the image,
    before they are scaled to ``rec_height``) are read by it: an INT8
    recognizer with an FP32 one for the small lines it loses on (36 px: the
    crops of receipts scanned with 18-24 px lines are 22-35 px high, those of
    photographed receipts 35-55 px; see benchmarks/README.md).
    """

    det_min_side: int = 736
    det_max_side: int = 1600
    det_max_side_up: int = 2000  # the bound of an enlarged image (a one-line label 400 px wide needs 5x to read as one line)
    det_thresh: float = 0.3
    box_thresh: float = 0.5
    unclip_ratio: float = 1.6
    use_dilation: bool = True
    tile_aspect: float = 2.5  # 0 = no tiling
    tile_overlap: float = 0.15
    det_small_text: float = 26.0  # 0 = off; else a median line under this height (detector pixels) ...
    det_text_target: float = 40.0  # ... has its region detected again, scaled to put it at this height ...
    det_zoom_max_pixels: int = 6_000_000  # ... within this many pixels (see benchmarks/README.md)
    max_tiles: int = 32  # past this (a sliver of an image: 1 x 3000 px would make 2,999), detect on the whole image
    det_split_pixels: int = 400_000  # 0 = never; else a detector input of more pixels runs as two bands side by side ...
    det_split_overlap: int = 96  # ... that share this many rows on each side of the seam (see OcrEngine._det_prob)
    cls_thresh: float = 0.9
    use_cls: bool = True
    vertical_ratio: float = 1.5
    rec_height: int = 48
    rec_margin: float = 0.15  # the recognizer's crop grown by this times the line's height on every side (the reported box stays as detected)
    rec_batch_size: int = 1  # crops a run; measured: 16 cost 2x the CPU of 4 or 1 (cache); 1 pads nothing (4 padded 12% of the columns on receipts: rec 0.34 s/img against 0.38)
    rec_min_width: int = 96  # crops are padded to at least this width (the stock engine pads to 320: measured 1.3x the CPU, same accuracy)
    rec_small_below: int = 36  # with a second recognizer (OcrModelPaths.rec_small): line crops under this many pixels high go to it (see benchmarks/README.md)
    text_score: float = 0.5
    space_gap_cols: int = 0  # 0 = keep the recognizer's own spaces only
    space_gap_factor: float = 1.8
    space_prob: float | None = None  # None = the recognizer's own (metadata SPACE_PROB_KEY, written by fine-tuning) or DEFAULT_SPACE_PROB; 0 = off; else a space goes where the space class peaks above this between two characters ...
    space_prob_sure: float = 0.2  # ... and, below this, only where the gap is wider than ...
    space_pitch_factor: float = 0.0  # ... this times the line's median character pitch (letter-spaced print: "ADJUS TMENT"); 0 = off (see benchmarks/README.md)
    fix_decimals: bool = True  # "7 42" at the end of a line -> "7.42": a decimal point lost in its gap (see fix_decimals)
    min_box_side: int = 4
    fix_zero_o: bool = True  # 0 and O told apart by their neighbours: "CH0PPING" -> "CHOPPING", "RM5OO" -> "RM500"
    tidy_spaces: bool = True  # English spacing around punctuation: none before . , % ) ] nor after ( [, none around / nor inside 7.42 / 17:21
    unicode_form: str = "NFKC"  # "" = as the recognizer spells it; "NFKC" folds full-width punctuation and digits to ASCII
    rec_contrast: float = 1.0  # 0 = off; else each crop's levels stretched so this percentile -> black, 100 - it -> white (faint print)
    trim_tolerance: int = 40  # 0 = off; else detection runs on the part of the image that holds anything this many gray levels off a plain border (see _content_box) ...
    trim_min_saving: float = 0.3  # ... when that cuts at least this fraction of the pixels

    def replace(self, **changes) -> "OcrConfig":
        return dataclasses.replace(self, **changes)


def _package_model_dir() -> pathlib.Path:
    try:
        import rapidocr_onnxruntime
    except ImportError as e:  # pragma: no cover - the package is a core dependency
        raise ModelLoadError("rapidocr-onnxruntime is not installed; it ships the default OCR models") from e
    return pathlib.Path(rapidocr_onnxruntime.__file__).parent / "models"


class OcrModelPaths(NamedTuple):
    """Locations of the OCR models (local paths or anything FileSystems reads).

    ``rec_small``: an optional second recognizer for small print, lines cut
    from the image under ``OcrConfig.rec_small_below`` pixels high (its
    character set must be the recognizer's): the INT8 recognizer loses its
    word F1 on such lines, which it must enlarge to its 48-pixel input, so a
    quantized model folder can keep an FP32 one for them
    (``components.ocr_quantize``, candidate ``int8_fp32_small``).
    """

    det: str
    rec: str
    cls: Optional[str] = None
    rec_small: Optional[str] = None

    @classmethod
    def default(cls) -> "OcrModelPaths":
        d = _package_model_dir()
        return cls(
            det=str(d / "ch_PP-OCRv4_det_infer.onnx"),
            rec=str(d / "ch_PP-OCRv4_rec_infer.onnx"),
            cls=str(d / "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
        )

    @classmethod
    def from_dir(cls, model_dir: str) -> "OcrModelPaths":
        """``det.onnx``, ``rec.onnx`` and (optional) ``cls.onnx`` and ``rec_small.onnx`` in ``model_dir``."""
        from apache_beam.io.filesystems import FileSystems

        base = model_dir.rstrip("/")
        paths = {name: FileSystems.join(base, f"{name}.onnx") for name in cls._fields}
        for name in ("det", "rec"):
            if not FileSystems.exists(paths[name]):
                raise ModelLoadError(f"{paths[name]} does not exist: an OCR model folder needs det.onnx and rec.onnx (cls.onnx, rec_small.onnx optional)")
        optional = {name: paths[name] if FileSystems.exists(paths[name]) else None for name in ("cls", "rec_small")}
        return cls(det=paths["det"], rec=paths["rec"], **optional)


def _session(path: str, threads: int | None, *, spin: bool = False, rewrite: bool = True, data: bytes | None = None):
    """An onnxruntime session of the model at ``path`` (``data``: its bytes, already read and rewritten)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    # Spinning worker threads win on an idle machine and lose badly when the
    # cores are shared (Beam workers, other jobs): off unless asked for.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if data is None:
        data = read_model_bytes(path)
        if rewrite:
            data = _rewritten(data, path)
    try:
        return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"onnxruntime cannot load OCR model {path!r}: {e}") from e


def _rewritten(data: bytes, path: str) -> bytes:
    """``data`` with the exact CPU rewrites of :mod:`transforms.inference.onnx_rewrite`, or as given when they fail."""
    from transforms.inference.onnx_rewrite import rewrite_model_bytes

    try:
        return rewrite_model_bytes(data)[0]
    except Exception as e:  # a model the rewrites do not understand still serves as it is
        logging.getLogger(__name__).warning("serving %s without the CPU graph rewrites: %s", path, e)
        return data


# ---------------------------------------------------------------------------
# Image decoding with limits
# ---------------------------------------------------------------------------


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> np.ndarray:
    """Encoded image bytes -> BGR uint8 array (EXIF orientation applied).

    The header is read first and the image refused before decoding when it
    has more than ``max_pixels`` pixels (a decompression bomb costs little
    as bytes and a lot as pixels). Raises :class:`ImageError` with reason
    ``IMAGE_TOO_LARGE`` or ``IMAGE_DECODE_ERROR``.
    """
    from PIL import Image, ImageOps

    if len(data) > max_bytes:
        raise ImageError("IMAGE_TOO_LARGE", f"image is {len(data)} bytes, over the limit of {max_bytes}; raise max_image_bytes to accept it")
    if not data:
        raise ImageError("IMAGE_DECODE_ERROR", "image is empty (0 bytes)")
    try:
        # open reads only the header; the size check below replaces the decoder's
        # own bomb check (whose default limit is not ours), then decoding runs under ours
        with _bomb_limit(None):
            img = Image.open(io.BytesIO(data))
        w, h = img.size
    except Image.DecompressionBombError as e:
        raise ImageError(
            "IMAGE_TOO_LARGE", f"image refused as a decompression bomb (the limit is {max_pixels} pixels; the decoder says: {e})"
        ) from e
    except Exception as e:
        raise ImageError("IMAGE_DECODE_ERROR", f"not a decodable image ({type(e).__name__}: {e})") from e
    if w * h > max_pixels:
        raise ImageError("IMAGE_TOO_LARGE", f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels} (a decompression bomb guard); raise max_image_pixels to accept it")
    if w < 1 or h < 1:
        raise ImageError("IMAGE_DECODE_ERROR", f"image has no pixels ({w}x{h})")
    try:
        with _bomb_limit(max_pixels):
            img = ImageOps.exif_transpose(img)
            rgb = np.asarray(img.convert("RGB"))
    except Exception as e:
        raise ImageError("IMAGE_DECODE_ERROR", f"image data is corrupt ({type(e).__name__}: {e})") from e
    return np.ascontiguousarray(rgb[:, :, ::-1])


class _bomb_limit:
    """Temporarily set PIL's decompression-bomb limit (process global) to ``max_pixels`` (None: no check)."""

    def __init__(self, max_pixels: int | None):
        self.max_pixels = max_pixels

    def __enter__(self):
        from PIL import Image

        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = self.max_pixels

    def __exit__(self, *exc):
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = self.saved
        return False


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


def _order_clockwise(pts: np.ndarray) -> np.ndarray:
    """4 points -> top-left, top-right, bottom-right, bottom-left."""
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def _crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The quadrilateral ``box`` of ``image`` warped to an upright rectangle."""
    import cv2

    w = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    h = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    w, h = max(w, 1), max(h, 1)
    target = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(box.astype(np.float32), target)
    return cv2.warpPerspective(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)


def _grow(box: np.ndarray, margin: float, vertical_ratio: float = math.inf) -> np.ndarray:
    """The clockwise quadrilateral ``box`` grown by ``margin`` times its text height on every side, along its own axes.

    The text height is the box's height, or its width when the box is a
    vertical line (height at least ``vertical_ratio`` times the width): a
    line of print 30 px high and 450 px long gets the same margin either way.
    """
    if margin <= 0:
        return box
    across = (box[3] - box[0] + box[2] - box[1]) / 2  # top -> bottom
    along = (box[1] - box[0] + box[2] - box[3]) / 2  # left -> right
    h, w = float(np.linalg.norm(across)), float(np.linalg.norm(along))
    if h < 1e-6 or w < 1e-6:
        return box
    d = margin * (w if h >= vertical_ratio * w else h)
    v = across / h * d
    u = along / w * d
    return np.array([box[0] - u - v, box[1] + u - v, box[2] + u + v, box[3] - u + v], dtype=np.float32)


def _levels(u8: np.ndarray, percent: float) -> tuple[float, float]:
    """``np.percentile(u8, (percent, 100 - percent))`` of a uint8 image, from its 256-bin histogram.

    The same values (linear interpolation between order statistics) at a
    fraction of the cost: sorting a 48 x 600 crop took 1.8 ms, per crop.
    """
    cum = np.bincount(u8.ravel(), minlength=256).cumsum()
    last = u8.size - 1

    def at(q: float) -> float:
        pos = q / 100 * last
        k = int(math.floor(pos))
        v = float(np.searchsorted(cum, k, side="right"))
        if pos == k:
            return v
        return v + (pos - k) * (float(np.searchsorted(cum, k + 1, side="right")) - v)

    return at(percent), at(100 - percent)


def _fit_span(lo: int, hi: int, size: int, step: float) -> tuple[int, int]:
    """``lo..hi`` grown (around its middle, within ``0..size``) to the nearest whole multiple of ``step`` at or above its length."""
    want = min(size, int(round(math.ceil((hi - lo) / step) * step)))
    lo = max(0, min(lo - (want - (hi - lo)) // 2, size - want))
    return lo, lo + want


def _rect(box: np.ndarray) -> tuple[float, float, float, float]:
    return float(box[:, 0].min()), float(box[:, 1].min()), float(box[:, 0].max()), float(box[:, 1].max())


def _without_duplicates(boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``boxes`` less those that mostly (60%) lie inside a larger one: the same line seen by two overlapping windows."""
    rects = [_rect(b) for b in boxes]
    keep: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda i: -(rects[i][2] - rects[i][0]) * (rects[i][3] - rects[i][1])):
        if all(_overlap_of_smaller(rects[i], rects[j]) < 0.6 for j in keep):
            keep.append(i)
    return [boxes[i] for i in sorted(keep)]


def _overlap_of_smaller(a, b) -> float:
    """Intersection area over the smaller rectangle's area."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / smaller if smaller > 0 else 0.0


def reading_order(boxes: Sequence[np.ndarray], *, min_row_overlap: float = 0.5) -> list[int]:
    """Indices of ``boxes`` in reading order: rows top to bottom, each row left to right.

    Boxes are taken by vertical centre; a box joins the row whose vertical
    band (the mean top and mean bottom of the row's boxes so far) overlaps
    it most, when that overlap is at least ``min_row_overlap`` of the
    smaller of the two heights, and starts a new row otherwise. Rows are
    read in the order of their band's centre, a row's boxes by their left
    edge. Comparing the band, not the first box, keeps the boxes of a
    slightly tilted row together; searching every row, not only the last,
    lets a short box that sits between two taller ones find its row.

    The evaluation (:mod:`components.ocr_eval`) orders predicted and
    ground-truth lines with this same function.
    """
    if not len(boxes):
        return []
    rects = [_rect(np.asarray(b, dtype=np.float32).reshape(-1, 2)) for b in boxes]
    order = sorted(range(len(rects)), key=lambda i: ((rects[i][1] + rects[i][3]) / 2, rects[i][0]))
    rows: list[list] = []  # [sum of tops, sum of bottoms, members]
    for i in order:
        y0, y1 = rects[i][1], rects[i][3]
        best, best_overlap = None, 0.0
        for row in rows:
            n = len(row[2])
            r0, r1 = row[0] / n, row[1] / n
            overlap = min(y1, r1) - max(y0, r0)
            need = min_row_overlap * max(min(y1 - y0, r1 - r0), 1e-6)
            if overlap >= need and overlap / need > best_overlap:
                best, best_overlap = row, overlap / need
        if best is None:
            rows.append([y0, y1, [i]])
        else:
            best[0] += y0
            best[1] += y1
            best[2].append(i)
    rows.sort(key=lambda r: (r[0] + r[1]) / (2 * len(r[2])))
    return [i for row in rows for i in sorted(row[2], key=lambda j: (rects[j][0], rects[j][1]))]


_SPACE_BEFORE = re.compile(r" +(?=[.,%)\]])")
_SPACE_AFTER = re.compile(r"(?<=[(\[]) +")
_SPACED_SLASH = re.compile(r"(?<=\S) */ *(?=\S)")
_SPLIT_NUMBER = re.compile(r"(?<=\d)([.:]) +(?=\d)")


def tidy_spaces(text: str) -> str:
    """English spacing around punctuation (what receipts and labels print).

    No space before ``. , % ) ]``, none after ``( [``, none around a ``/``
    between two words, none inside a number (``7. 42`` -> ``7.42``,
    ``17: 21`` -> ``17:21``). The recognizer's spaces come from the width of
    a gap, and monospaced print leaves gaps beside narrow punctuation. A
    colon keeps its space: receipts print both ``TEL:`` and ``CASH :``
    (on SROIE receipts outside the evaluation set, taking the space before
    every colon away cost 0.05 word F1).
    """
    text = _SPACE_BEFORE.sub("", text)
    text = _SPACE_AFTER.sub("", text)
    text = _SPACED_SLASH.sub("/", text)
    return _SPLIT_NUMBER.sub(r"\1", text)


_LOST_DECIMAL_POINT = re.compile(r"(^|\s|RM|\$)(\d{1,7}) (\d\d)$")


def fix_decimals(text: str) -> str:
    """A number and two digits split by a space at the end of a line are a price: ``7 42`` -> ``7.42``.

    A decimal point is the smallest mark on a receipt and the one the
    recognizer most often loses, leaving only its gap (read as a space).
    Of the 200 SROIE receipts' ground-truth lines, 2,285 end in ``<digits>.<2 digits>``
    and one in ``<digits> <2 digits>``.
    """
    return _LOST_DECIMAL_POINT.sub(r"\1\2.\3", text)


_ZERO_O_RUN = re.compile(r"[0O]+")


def _side(text: str, k: int, step: int) -> str:
    """What borders a run of 0/O at ``k``: "upper", "lower", "digit" or "" (nothing that decides)."""
    if not 0 <= k < len(text):
        return ""
    c = text[k]
    if c.isdigit():
        return "digit"
    if c.isalpha() and c.isascii():
        return "upper" if c.isupper() else "lower"
    # a decimal point or separator between the run and a digit: "RM0.40", "1,0O0"
    if c in ".,:" and 0 <= k + step < len(text) and text[k + step].isdigit():
        return "digit"
    return ""


def fix_zero_o(text: str) -> str:
    """Read each run of ``0``/``O`` by its neighbours (receipt fonts draw them alike).

    A run between letters is letters (``CH0PPING``), one between digits is
    digits (``2O18``). With nothing that decides on one side, the other
    side decides when the run is longer than one character or that side
    has two of a kind: ``AUT0``, ``RM5OO``, ``ES1OOO``, but ``H2O`` and
    ``A0`` stay. A run with a letter on one side and a digit on the other
    (``CS0004``, ``RM0.40``) is left as read.
    """

    def read(m: re.Match) -> str:
        left, right = _side(text, m.start() - 1, -1), _side(text, m.end(), 1)
        sides = {left, right} - {""}
        if len(sides) == 1 and "" in (left, right) and len(m.group()) == 1:
            k, step = (m.start() - 1, -1) if left else (m.end(), 1)
            if _side(text, k + step, step) not in sides:
                return m.group()  # one letter or digit beside a lone 0/O: "H2O", "A0"
        if sides == {"digit"}:
            return "0" * len(m.group())
        if sides == {"upper"}:
            return "O" * len(m.group())
        if sides == {"lower"}:
            return "o" * len(m.group())
        return m.group()

    return _ZERO_O_RUN.sub(read, text)


def full_text(lines: Iterable[OcrLine]) -> str:
    """The lines' text joined with newlines (lines are expected in reading order)."""
    return "\n".join(line.text for line in lines)


# ---------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------


class OcrEngine:
    """Detection + orientation + recognition over three ONNX Runtime sessions.

    Build with :meth:`load`; call :meth:`read_images` for a batch of BGR
    images (recognition crops are batched across images).
    """

    def __init__(
        self,
        det_session,
        rec_session,
        cls_session=None,
        *,
        characters: Sequence[str],
        config: OcrConfig = OcrConfig(),
        crop_workers: int = 1,
        rec_small_session=None,
        det_tile_session=None,
    ):
        """``crop_workers``: recognition and classification batches run at once (threads; 1 = one after another).
        ``rec_small_session``: the recognizer of line crops under ``config.rec_small_below`` pixels high (None: ``rec_session`` reads every line).
        ``det_tile_session``: the detector on one thread, for the tiles of a tall image and the two bands of a large
        detector input (``OcrConfig.det_split_pixels``), ``crop_workers`` of them at once (None: each image or tile
        whole on ``det_session``)."""
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess

        self.det = det_session
        self.det_tile = det_tile_session
        self.rec = rec_session
        self.rec_small = rec_small_session
        self.cls = cls_session
        if config.space_prob is None:
            config = config.replace(space_prob=model_space_prob(rec_session))
        self.config = config
        # CTC classes: blank, the model's characters, then a space.
        self.characters = ["", *characters, " "]
        self._det_post = DBPostProcess(
            thresh=config.det_thresh,
            box_thresh=config.box_thresh,
            max_candidates=1000,
            unclip_ratio=config.unclip_ratio,
            score_mode="fast",
            use_dilation=config.use_dilation,
        )
        self._det_in = det_session.get_inputs()[0].name
        self._rec_in = rec_session.get_inputs()[0].name
        self._rec_small_in = rec_small_session.get_inputs()[0].name if rec_small_session is not None else None
        self._cls_in = cls_session.get_inputs()[0].name if cls_session is not None else None
        for what, session in (("recognizer", rec_session), ("small-print recognizer", rec_small_session)):
            n_out = session.get_outputs()[0].shape[-1] if session is not None else None
            if isinstance(n_out, int) and n_out != len(self.characters):
                raise ModelLoadError(
                    f"{what} has {n_out} output classes but its character set gives {len(self.characters)}; "
                    "pass the character list that belongs to this recognizer"
                )
        self.stats = {"det_s": 0.0, "cls_s": 0.0, "rec_s": 0.0, "crops": 0, "small_crops": 0, "images": 0, "zoomed": 0, "trimmed": 0}
        if crop_workers < 1:
            raise ConfigError(f"crop_workers must be >= 1, got {crop_workers}")
        self.crop_workers = crop_workers
        self._pool = None

    def with_config(self, config: OcrConfig) -> "OcrEngine":
        """An engine over the same model sessions with another config (nothing is loaded again)."""
        return OcrEngine(self.det, self.rec, self.cls, characters=self.characters[1:-1], config=config, crop_workers=self.crop_workers,
                         rec_small_session=self.rec_small, det_tile_session=self.det_tile)

    def _map(self, fn, items: Sequence) -> list:
        """``[fn(x) for x in items]``, ``crop_workers`` at a time (onnxruntime releases the GIL while it runs)."""
        if self.crop_workers == 1 or len(items) < 2:
            return [fn(x) for x in items]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.crop_workers, thread_name_prefix="aisle-ocr")
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        """Stop the recognition threads (an engine that is dropped stops them too)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    @classmethod
    def load(
        cls,
        paths: OcrModelPaths | None = None,
        *,
        config: OcrConfig = OcrConfig(),
        threads: int | None = None,
        characters: Sequence[str] | None = None,
        rewrite: bool = True,
        parallel_crops: bool = True,
    ) -> "OcrEngine":
        """Load the models (``paths`` default: the package's PP-OCRv4 models).

        ``threads``: the CPU threads the engine uses (default:
        :func:`transforms.inference.thread_budget`, this worker's share of
        the cores). The detector runs one image a call on all of them; with
        ``parallel_crops`` (the default) the recognizer and the classifier
        run that many batches of crops at once, one thread each, and
        otherwise one batch at a time on all of them.

        The recognizer's character set comes from its ``character`` metadata
        unless ``characters`` is given. With ``rewrite`` (the default) each
        model gets the exact CPU rewrites of
        :mod:`transforms.inference.onnx_rewrite` in memory before its session
        is built (1.4-1.7x faster per PP-OCR model on 2 cores, same outputs).
        """
        paths = paths or OcrModelPaths.default()
        workers = (threads or thread_budget()) if parallel_crops else 1
        crop_threads = 1 if workers > 1 else threads
        det_data = read_model_bytes(paths.det)
        if rewrite:
            det_data = _rewritten(det_data, paths.det)
        det = _session(paths.det, threads, data=det_data)
        rec = _session(paths.rec, crop_threads, rewrite=rewrite)
        clsf = _session(paths.cls, crop_threads, rewrite=rewrite) if (paths.cls and config.use_cls) else None
        rec_small = _session(paths.rec_small, crop_threads, rewrite=rewrite) if paths.rec_small else None
        # tiles, and the two bands of a large input, are detected side by side, one thread each: two 1-thread
        # runs of a 1600 x 736 input took 97 ms a run against 128 ms for one run on both threads (2 cores)
        det_tile = _session(paths.det, 1, data=det_data) if workers > 1 else None
        if characters is None:
            meta = rec.get_modelmeta().custom_metadata_map
            if "character" not in meta:
                raise ModelLoadError(
                    f"recognizer {paths.rec!r} carries no 'character' metadata; pass characters= explicitly"
                )
            characters = meta["character"].splitlines()
        return cls(det, rec, clsf, characters=characters, config=config, crop_workers=workers, rec_small_session=rec_small,
                   det_tile_session=det_tile)

    # -- detection --------------------------------------------------------

    def _det_input(self, image: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        import cv2

        h, w = image.shape[:2]
        scale = self._det_scale(h, w) if scale is None else scale
        rh = max(32, int(round(h * scale / 32)) * 32)
        rw = max(32, int(round(w * scale / 32)) * 32)
        resized = cv2.resize(image, (rw, rh))
        x = (resized.astype(np.float32) * (1 / 127.5) - 1.0).transpose(2, 0, 1)[None]
        return np.ascontiguousarray(x), (h, w)

    def _det_prob(self, x: np.ndarray, session=None) -> np.ndarray:
        """The detector's probability map of input ``x`` (1 x 3 x H x W), whole or as two bands side by side.

        onnxruntime runs the detector's elementwise, quantize and resize ops
        on one thread, so a detection on two threads ran only 1.33-1.42x as
        fast as on one, while two one-thread detections side by side ran
        1.5-1.8x (1600 x 736 input, AMD EPYC). An input of more than
        ``det_split_pixels`` is therefore cut at half height into two bands
        that share ``det_split_overlap`` rows on each side of the seam (both
        multiples of 32, so each band is the detector's own grid), both run
        on ``det_tile``, and the map is joined at the seam: each half comes
        from the band that saw it with that much context beyond it. The
        boxes are then found on the whole map, once.
        """
        c = self.config
        h, w = x.shape[2:]
        ov = -(-c.det_split_overlap // 32) * 32
        mid = (h // 2) // 32 * 32
        if session is not None or self.det_tile is None or not c.det_split_pixels or h * w <= c.det_split_pixels or mid <= ov:
            return (session or self.det).run(None, {self._det_in: x})[0]
        top, bottom = self._map(lambda band: self.det_tile.run(None, {self._det_in: np.ascontiguousarray(band)})[0],
                                [x[:, :, : mid + ov], x[:, :, mid - ov :]])
        return np.concatenate([top[:, :, :mid], bottom[:, :, ov:]], axis=2)

    def _detect_one(self, image: np.ndarray, scale: float | None = None, session=None) -> list[np.ndarray]:
        x, shape = self._det_input(image, scale)
        prob = self._det_prob(x, session)
        boxes, _scores = self._det_post(prob, shape)
        out = []
        h, w = shape
        for b in boxes:
            b = _order_clockwise(np.asarray(b, dtype=np.float32))
            b[:, 0] = np.clip(b[:, 0], 0, w - 1)
            b[:, 1] = np.clip(b[:, 1], 0, h - 1)
            if np.linalg.norm(b[0] - b[1]) < self.config.min_box_side or np.linalg.norm(b[0] - b[3]) < self.config.min_box_side:
                continue
            out.append(b)
        return out

    def _det_scale(self, h: int, w: int) -> float:
        """Detector input scale: small images up to ``det_min_side`` on the short side, never past ``det_max_side_up``;
        others never past ``det_max_side``."""
        c = self.config
        scale = max(1.0, c.det_min_side / min(h, w))
        return min(scale, (c.det_max_side_up if scale > 1.0 else c.det_max_side) / max(h, w))

    def _tiles(self, h: int, w: int) -> list[tuple[int, int]]:
        """Row ranges to detect on: tiles only when the image is tall and whole-image detection would shrink it."""
        c = self.config
        scale = self._det_scale(h, w)
        if c.tile_aspect <= 0 or h <= c.tile_aspect * w or scale >= 1.0:
            return [(0, h)]
        tile_h = int(c.tile_aspect * w)
        step = max(1, int(tile_h * (1 - c.tile_overlap)))
        starts = list(range(0, max(h - tile_h, 0) + 1, step))
        if starts[-1] + tile_h < h:
            starts.append(h - tile_h)
        if len(starts) > c.max_tiles:  # each tile is upscaled to det_min_side: bound the work
            return [(0, h)]
        return [(s, s + tile_h) for s in starts]

    def _content_box(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) of the part of ``image`` that holds print on a plain background, or None (keep it whole).

        A product shot on white or a receipt scanned on a full page is mostly
        blank, and detection costs in proportion to pixels. The background is
        the median of the image's outermost rows and columns, which must be
        plain (nine tenths of them within ``trim_tolerance`` gray levels of
        it). Print is a patch of touching 8 x 8 blocks that each hold four or
        more pixels further off than that, 32 such pixels in all: scanner
        specks (a few dark pixels each) do not widen the box, a small word
        does. The box grows by two blocks and 2% of the image's side on
        every side. :meth:`detect` uses it when that saves ``trim_min_saving``
        of the pixels.
        """
        import cv2

        c = self.config
        h, w = image.shape[:2]
        k = 8
        if not c.trim_tolerance or h < 8 * k or w < 8 * k:
            return None
        gray = image if image.ndim == 2 else image[..., 1]  # green: the channel closest to luminance, no conversion pass
        step = max(1, math.ceil(math.sqrt(h * w / 4e6)))  # a huge photo is looked at every step-th pixel: the work stays under ~4 MP
        gray = gray[::step, ::step]
        frame = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).astype(np.int16)
        bg = int(np.median(frame))
        tol = c.trim_tolerance
        if np.mean(np.abs(frame - bg) > tol) > 0.1:
            return None
        hb, wb = gray.shape[0] // k, gray.shape[1] // k
        off = cv2.absdiff(gray[: hb * k, : wb * k], bg) > tol
        count = off.reshape(hb, k, wb, k).sum(axis=(1, 3), dtype=np.int32)
        n, labels, st, _ = cv2.connectedComponentsWithStats((count >= 4).astype(np.uint8), connectivity=8)
        mass = np.bincount(labels.ravel(), weights=count.ravel(), minlength=n)  # off pixels in each patch
        keep = st[1:][mass[1:] >= 32]
        if not len(keep):
            return None
        b = k * step  # a block's side in the image's pixels
        my, mx = 2 * b + int(0.02 * h), 2 * b + int(0.02 * w)
        y0 = max(0, int(keep[:, cv2.CC_STAT_TOP].min()) * b - my)
        x0 = max(0, int(keep[:, cv2.CC_STAT_LEFT].min()) * b - mx)
        y1 = min(h, int((keep[:, cv2.CC_STAT_TOP] + keep[:, cv2.CC_STAT_HEIGHT]).max()) * b + my)
        x1 = min(w, int((keep[:, cv2.CC_STAT_LEFT] + keep[:, cv2.CC_STAT_WIDTH]).max()) * b + mx)
        return x0, y0, x1, y1

    def detect(self, image: np.ndarray) -> list[np.ndarray]:
        """Text boxes (4x2 float32, clockwise from top-left) of one BGR image: its blank margins trimmed, tall images tiled, small print zoomed into."""
        h, w = image.shape[:2]
        box = self._content_box(image) if len(self._tiles(h, w)) == 1 else None  # a tiled image is left whole
        if box is None or (box[3] - box[1]) * (box[2] - box[0]) > (1 - self.config.trim_min_saving) * h * w:
            return self._detect_region(image)
        x0, y0, x1, y1 = box
        # the cut-out is detected at the scale the whole image would have been
        # (print the size the detector would have seen; the small-print zoom
        # decides as it would have), on fewer pixels
        scale = self._det_scale(h, w)
        # grown to whole multiples of the detector's 32-pixel grid at that scale, so neither axis is stretched to fit it
        x0, x1 = _fit_span(x0, x1, w, 32 / scale)
        y0, y1 = _fit_span(y0, y1, h, 32 / scale)
        self.stats["trimmed"] += 1
        offset = np.array([x0, y0], dtype=np.float32)
        return [b + offset for b in self._detect_region(image[y0:y1, x0:x1], scale)]

    def _detect_region(self, image: np.ndarray, scale: float | None = None) -> list[np.ndarray]:
        """Boxes of ``image`` (tiled), or of ``image`` whole at ``scale`` when one is given, then small print zoomed into."""
        boxes = self._detect_tiled(image) if scale is None else self._detect_one(image, scale)
        zoom = self._zoom(image, boxes, scale)
        if zoom is None:
            return boxes
        (x0, y0, x1, y1), f = zoom
        offset = np.array([x0, y0], dtype=np.float32)
        self.stats["zoomed"] += 1
        # the region whole, at its own scale: neither det_max_side nor tiling applies (det_zoom_max_pixels bounds it)
        return [b + offset for b in self._detect_one(image[y0:y1, x0:x1], scale=f)]

    def _zoom(self, image: np.ndarray, boxes: Sequence[np.ndarray], scale: float | None = None):
        """((x0, y0, x1, y1), scale) of the region to detect again for small print, or None (``scale``: the first pass's, when it was not the image's own)."""
        c = self.config
        if not c.det_small_text or not boxes:
            return None
        h, w = image.shape[:2]
        heights = [float(np.linalg.norm(b[0] - b[3])) for b in boxes]
        line_h = max(float(np.median(heights)), 1.0)
        if scale is None:
            tiles = self._tiles(h, w)
            scale = self._det_scale(tiles[0][1] - tiles[0][0], w)
        seen = line_h * scale  # the line height the detector saw
        if seen >= c.det_small_text:
            return None
        pts = np.concatenate(boxes)
        margin = 2 * line_h
        x0, y0 = int(max(0.0, pts[:, 0].min() - margin)), int(max(0.0, pts[:, 1].min() - margin))
        x1, y1 = int(min(w, pts[:, 0].max() + margin + 1)), int(min(h, pts[:, 1].max() + margin + 1))
        f = min(c.det_text_target / line_h, math.sqrt(c.det_zoom_max_pixels / max((x1 - x0) * (y1 - y0), 1)))
        if f * line_h <= seen * 1.2:  # the first pass already saw it (nearly) this large
            return None
        return (x0, y0, x1, y1), f

    def _detect_tiled(self, image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        tiles = self._tiles(h, w)
        if len(tiles) == 1:
            return self._detect_one(image)
        boxes: list[np.ndarray] = []
        margin = self.config.tile_overlap * (tiles[0][1] - tiles[0][0]) / 2
        if self.det_tile is not None:
            per_tile = self._map(lambda t: self._detect_one(image[t[0] : t[1]], session=self.det_tile), tiles)
        else:
            per_tile = [self._detect_one(image[y0:y1]) for y0, y1 in tiles]
        for k, ((y0, y1), tile_boxes) in enumerate(zip(tiles, per_tile)):
            for b in tile_boxes:
                # drop boxes cut by a tile edge that the neighbouring tile sees whole
                top, bottom = float(b[:, 1].min()), float(b[:, 1].max())
                if k > 0 and top < margin * 0.5:
                    continue
                if k < len(tiles) - 1 and bottom > (y1 - y0) - margin * 0.5:
                    continue
                b = b.copy()
                b[:, 1] += y0
                boxes.append(b)
        return _without_duplicates(boxes)

    # -- orientation ------------------------------------------------------

    def cls_feeds(self, crops: Sequence[np.ndarray], batch_size: int = 32) -> list[dict[str, np.ndarray]]:
        """The orientation classifier's input feeds for ``crops``."""
        import cv2

        feeds = []
        ih, iw = 48, 192
        name = self._cls_in or "x"
        for start in range(0, len(crops), batch_size):
            chunk = crops[start : start + batch_size]
            batch = np.zeros((len(chunk), 3, ih, iw), dtype=np.float32)
            for k, crop in enumerate(chunk):
                h, w = crop.shape[:2]
                rw = min(iw, int(math.ceil(ih * w / max(h, 1))))
                r = cv2.resize(crop, (max(rw, 1), ih)).astype(np.float32) * (1 / 127.5) - 1.0
                batch[k, :, :, : r.shape[1]] = r.transpose(2, 0, 1)
            feeds.append({name: batch})
        return feeds

    def _cls_batch(self, crops: Sequence[np.ndarray]) -> list[tuple[bool, float]]:
        """(is upside down, score) for each crop."""
        size = 32 if self.crop_workers == 1 else max(1, min(32, -(-len(crops) // self.crop_workers)))

        def run(start: int) -> list[tuple[bool, float]]:
            prob = self.cls.run(None, self.cls_feeds(crops[start : start + size], batch_size=size)[0])[0]
            return [(int(np.argmax(p)) == 1, float(p.max())) for p in prob]

        return [r for part in self._map(run, range(0, len(crops), size)) for r in part]

    # -- recognition ------------------------------------------------------

    def _decode(self, probs: np.ndarray, width_cols: int) -> tuple[str, float]:
        idx = probs[:width_cols].argmax(axis=1)
        conf = probs[:width_cols].max(axis=1)
        keep = np.ones(len(idx), dtype=bool)
        keep[1:] = idx[1:] != idx[:-1]
        keep &= idx != 0
        cols = np.nonzero(keep)[0]
        if not len(cols):
            return "", 0.0
        gap = self.config.space_gap_cols
        sp = self.config.space_prob
        sure, pitch = self.config.space_prob_sure, self.config.space_pitch_factor
        chars = []
        space = len(self.characters) - 1
        # this line's usual character pitch, in columns (0: too few characters to tell)
        median_pitch = float(np.median(np.diff(cols))) if (gap or pitch) and len(cols) > 2 else 0.0
        if median_pitch and gap:
            # a gap counts as a word break when it is wider than the absolute
            # minimum and clearly wider than this line's usual character pitch
            # (letter-spaced print has wide gaps everywhere, and no spaces)
            gap = max(gap, self.config.space_gap_factor * median_pitch)
        wide = pitch * median_pitch
        for n, col in enumerate(cols):
            if n and idx[col] != space and idx[cols[n - 1]] != space:
                prev = cols[n - 1]
                p = probs[prev + 1 : col, space].max(initial=0.0) if sp else 0.0
                if (gap and col - prev > gap) or (sp and p > sp and (p > sure or col - prev > wide)):
                    chars.append(" ")
            chars.append(self.characters[idx[col]])
        text = "".join(chars)
        if self.config.unicode_form:
            text = unicodedata.normalize(self.config.unicode_form, text)
        if self.config.tidy_spaces:
            text = tidy_spaces(text)
        if self.config.fix_zero_o:
            text = fix_zero_o(text)
        text = text.strip()
        if self.config.fix_decimals:
            text = fix_decimals(text)
        return text, float(conf[cols].mean())

    def _rec_plan(self, crops: Sequence[np.ndarray]) -> list[tuple[np.ndarray, list[float]]]:
        """(crop indices, their aspect ratios) per batch: aspect-ratio order, ``rec_batch_size`` at a time."""
        ratios = [cr.shape[1] / max(cr.shape[0], 1) for cr in crops]
        order = np.argsort(ratios, kind="stable")
        size = self.config.rec_batch_size
        return [(order[s : s + size], [ratios[i] for i in order[s : s + size]]) for s in range(0, len(order), size)]

    def _rec_batch(
        self, crops: Sequence[np.ndarray], ids: np.ndarray, ratios: Sequence[float], min_width: int | None = None
    ) -> tuple[np.ndarray, list[int]]:
        """The recognizer's input for ``crops[ids]`` (padded to the widest, at least ``min_width``, default
        ``rec_min_width``) and each crop's resized width."""
        import cv2

        c = self.config
        ih = c.rec_height
        iw = int(math.ceil(ih * max(max(ratios), (min_width or c.rec_min_width) / ih) / 8)) * 8
        batch = np.zeros((len(ids), 3, ih, iw), dtype=np.float32)
        widths = []
        for k, (i, ratio) in enumerate(zip(ids, ratios)):
            rw = min(iw, max(1, int(math.ceil(ih * ratio))))
            u8 = cv2.resize(crops[i], (rw, ih))
            r = u8.astype(np.float32)
            if c.rec_contrast:
                lo, hi = _levels(u8, c.rec_contrast)
                if hi - lo > 8:
                    r = np.clip((r - lo) * (255.0 / (hi - lo)), 0, 255)
            r = r * (1 / 127.5) - 1.0
            batch[k, :, :, :rw] = r.transpose(2, 0, 1)
            widths.append(rw)
        return batch, widths

    def det_feed(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The detector's input feed for one whole (untiled) image."""
        return {self._det_in: self._det_input(image)[0]}

    def line_crop(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The crop of one detected line as the recognizer gets it: grown by ``rec_margin``, warped upright (not yet turned)."""
        return _crop(image, _grow(box, self.config.rec_margin, self.config.vertical_ratio))

    def line_crops(self, image: np.ndarray) -> list[np.ndarray]:
        """The upright-orientation crops of every detected line (vertical ones turned 90 degrees)."""
        crops = []
        for b in self.detect(image):
            crop = self.line_crop(image, b)
            h, w = crop.shape[:2]
            crops.append(np.ascontiguousarray(np.rot90(crop, 1)) if h >= self.config.vertical_ratio * w else crop)
        return crops

    def recognize(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Text and mean character confidence of each upright line crop (BGR).

        With a small-print recognizer (``rec_small``), crops under
        ``config.rec_small_below`` pixels high are read by it, the others by
        ``rec``; the batches of both run side by side.
        """

        def run(plan) -> list[tuple[int, tuple[str, float]]]:
            (session, input_name), ids, ratios = plan
            batch, widths = self._rec_batch(crops, ids, ratios)
            probs = session.run(None, {input_name: batch})[0]
            return [(int(i), self._decode(probs[k], read_columns(probs.shape[1], widths[k], batch.shape[3])))
                    for k, i in enumerate(ids)]

        groups = [((self.rec, self._rec_in), np.arange(len(crops)))]
        if self.rec_small is not None:
            small = np.array([c.shape[0] < self.config.rec_small_below for c in crops], dtype=bool)
            groups = [((self.rec, self._rec_in), np.nonzero(~small)[0]), ((self.rec_small, self._rec_small_in), np.nonzero(small)[0])]
            self.stats["small_crops"] += int(small.sum())
        plans = [(session, ids[order], ratios) for session, ids in groups if len(ids)
                 for order, ratios in self._rec_plan([crops[i] for i in ids])]
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for part in self._map(run, plans):
            for i, text in part:
                results[i] = text
        return results

    # -- whole images -----------------------------------------------------

    def read_image(self, image: np.ndarray) -> OcrResult:
        return self.read_images([image])[0]

    def read_images(self, images: Sequence[np.ndarray]) -> list[OcrResult]:
        """OCR a batch of BGR uint8 images; lines come back in reading order."""
        import time

        c = self.config
        t0 = time.perf_counter()
        per_image_boxes = [self.detect(img) for img in images]
        t1 = time.perf_counter()
        # (image index, box, crop, angle)
        items: list[tuple[int, np.ndarray, np.ndarray, int]] = []
        vertical: list[int] = []
        for n, (img, boxes) in enumerate(zip(images, per_image_boxes)):
            for b in boxes:
                crop = self.line_crop(img, b)
                h, w = crop.shape[:2]
                if h >= c.vertical_ratio * w:
                    vertical.append(len(items))
                    items.append((n, b, np.ascontiguousarray(np.rot90(crop, 1)), 90))
                else:
                    items.append((n, b, crop, 0))
        flipped: list[int] = []
        if self.cls is not None and items:
            horizontal = [k for k in range(len(items)) if items[k][3] == 0]
            flips = self._cls_batch([items[k][2] for k in horizontal])
            for k, (flip, score) in zip(horizontal, flips):
                if flip and score > c.cls_thresh:
                    n, b, crop, _ = items[k]
                    items[k] = (n, b, np.ascontiguousarray(np.rot90(crop, 2)), 180)
                    flipped.append(k)
        t2 = time.perf_counter()
        # vertical candidates are also read at 270 degrees and as they stand
        # (single characters and digits are taller than wide); a line the
        # classifier turned is also read as it stood (the classifier turns
        # some short upright lines: "GST 0%" read as "%0 1S9"), and the more
        # confident reading wins
        crops = [it[2] for it in items]
        crops += [np.ascontiguousarray(np.rot90(items[k][2], 2)) for k in vertical]
        crops += [np.ascontiguousarray(np.rot90(items[k][2], -1)) for k in vertical]
        crops += [np.ascontiguousarray(np.rot90(items[k][2], 2)) for k in flipped]
        texts = self.recognize(crops) if crops else []
        nv = len(vertical)
        for j, k in enumerate(flipped):
            as_stood = texts[len(items) + 2 * nv + j]
            if as_stood[1] > texts[k][1]:
                texts[k] = as_stood
                n, b, crop, _ = items[k]
                items[k] = (n, b, crop, 0)
        for j, k in enumerate(vertical):
            options = [(texts[k], 90), (texts[len(items) + j], 270), (texts[len(items) + nv + j], 0)]
            (best, angle) = max(options, key=lambda o: o[0][1])
            texts[k] = best
            n, b, crop, _ = items[k]
            items[k] = (n, b, crop, angle)
        t3 = time.perf_counter()
        self.stats["det_s"] += t1 - t0
        self.stats["cls_s"] += t2 - t1
        self.stats["rec_s"] += t3 - t2
        self.stats["crops"] += len(crops)
        self.stats["images"] += len(images)

        lines_by_image: list[list[OcrLine]] = [[] for _ in images]
        for (n, b, _crop_img, angle), (text, conf) in zip(items, texts[: len(items)]):
            if conf < c.text_score or not text:
                continue
            box = tuple((round(float(x), 1), round(float(y), 1)) for x, y in b)
            lines_by_image[n].append(OcrLine(text, round(conf, 5), box, angle))
        out = []
        for img, lines in zip(images, lines_by_image):
            order = reading_order([np.asarray(l.box) for l in lines])
            if lines and sum(l.angle == 180 for l in lines) * 2 > len(lines):
                order = order[::-1]  # an upside-down image reads from its bottom-right
            out.append(OcrResult(tuple(lines[i] for i in order), int(img.shape[1]), int(img.shape[0])))
        return out


# ---------------------------------------------------------------------------
# Beam ModelHandler
# ---------------------------------------------------------------------------


class OcrModelHandler(ModelHandler):
    """RunInference handler: an image (encoded bytes or a BGR array) -> :class:`OcrResult`.

    Wrap with ``KeyedModelHandler`` to keep results joined to product ids,
    and use ``RunInference(...).with_exception_handling()``: a corrupt or
    oversized image raises :class:`ImageError` (reason ``IMAGE_DECODE_ERROR``
    / ``IMAGE_TOO_LARGE``) and fails its batch, so decode before batching
    (as ``pipelines.enrich`` does) when one bad image must not take its
    batch-mates with it.

    >>> handler = OcrModelHandler(None, threads=2, max_batch_size=4)  # package models
    >>> handler.get_metrics_namespace()
    'aisle_ocr'
    """

    def __init__(
        self,
        model_dir: str | None = None,
        *,
        det_model: str | None = None,
        rec_model: str | None = None,
        cls_model: str | None = None,
        use_cls: bool = True,
        config: OcrConfig | None = None,
        threads: int | None = None,
        min_batch_size: int = 1,
        max_batch_size: int = 4,
        max_batch_duration_secs: float | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        share_model_across_processes: bool = False,
    ):
        if min_batch_size < 1 or max_batch_size < min_batch_size:
            raise ConfigError(f"batch sizes min={min_batch_size}, max={max_batch_size}: need 1 <= min <= max")
        self._model_dir = model_dir
        self._overrides = {"det": det_model, "rec": rec_model, "cls": cls_model}
        self._use_cls = use_cls
        self._config = (config or OcrConfig()).replace(use_cls=use_cls)
        self._threads = threads
        self._batch = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}
        if max_batch_duration_secs is not None:
            self._batch["max_batch_duration_secs"] = max_batch_duration_secs
        self._max_pixels = max_image_pixels
        self._max_bytes = max_image_bytes
        self._share = share_model_across_processes

    def model_paths(self) -> OcrModelPaths:
        base = OcrModelPaths.from_dir(self._model_dir) if self._model_dir else OcrModelPaths.default()
        o = self._overrides
        return OcrModelPaths(
            det=o["det"] or base.det,
            rec=o["rec"] or base.rec,
            cls=(o["cls"] or base.cls) if self._use_cls else None,
            rec_small=None if o["rec"] else base.rec_small,  # a folder's small-print recognizer pairs with the folder's recognizer
        )

    def load_model(self) -> OcrEngine:
        return OcrEngine.load(self.model_paths(), config=self._config, threads=self._threads)

    def run_inference(self, batch: Sequence[Any], model: OcrEngine, inference_args: Optional[dict[str, Any]] = None):
        from apache_beam.metrics import Metrics

        images = [self._as_image(x) for x in batch]
        results = model.read_images(images)
        Metrics.counter(METRICS_NAMESPACE, "images").inc(len(results))
        Metrics.counter(METRICS_NAMESPACE, "lines").inc(sum(len(r.lines) for r in results))
        return [PredictionResult(example=x, inference=r, model_id=self._model_id()) for x, r in zip(batch, results)]

    def _as_image(self, x) -> np.ndarray:
        if isinstance(x, np.ndarray):
            if x.ndim != 3 or x.shape[2] != 3 or x.dtype != np.uint8:
                raise ImageError("IMAGE_DECODE_ERROR", f"array input must be HxWx3 uint8 BGR, got shape {x.shape} dtype {x.dtype}")
            if x.shape[0] * x.shape[1] > self._max_pixels:
                raise ImageError("IMAGE_TOO_LARGE", f"image is {x.shape[1]}x{x.shape[0]}, over {self._max_pixels} pixels")
            return x
        if isinstance(x, (bytes, bytearray, memoryview)):
            return decode_image(bytes(x), max_pixels=self._max_pixels, max_bytes=self._max_bytes)
        raise ImageError("IMAGE_DECODE_ERROR", f"OCR input must be image bytes or a BGR array, got {type(x).__name__}")

    def _model_id(self) -> str:
        p = self.model_paths()
        return f"det={p.det};rec={p.rec};cls={p.cls}"

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return sum(x.nbytes if isinstance(x, np.ndarray) else len(x) for x in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return dict(self._batch)

    def share_model_across_processes(self) -> bool:
        return self._share

"""OCR handler and engine on images drawn in the test with known text."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from components.ocr_eval import levenshtein
from transforms.errors import ConfigError, ModelLoadError
from transforms.inference.ocr import (
    ImageError,
    OcrConfig,
    OcrEngine,
    OcrModelHandler,
    _fit_span,
    decode_image,
    failure_reason,
    fix_decimals,
    fix_zero_o,
    full_text,
    reading_order,
    tidy_spaces,
)

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def _font(size):
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        pytest.skip(f"{FONT} is absent (Debian fonts-dejavu-core draws the test text)")


def text_image(lines, size=36, width=None, gap=30) -> Image.Image:
    """White image with the given lines drawn in black, one under the other."""
    font = _font(size)
    boxes = [font.getbbox(t) for t in lines]
    w = width or max(b[2] - b[0] for b in boxes) + 40
    h = sum(b[3] - b[1] + gap for b in boxes) + 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    y = 20
    for t, b in zip(lines, boxes):
        draw.text((20 - b[0], y - b[1]), t, fill="black", font=font)
        y += b[3] - b[1] + gap
    return img


def bgr(img: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def engine():
    return OcrEngine.load(threads=1)


def _close(a: str, b: str, max_edits: int = 1) -> bool:
    """Equal up to case, whitespace (the stock recognizer drops spaces) and ``max_edits`` characters."""
    return levenshtein("".join(a.upper().split()), "".join(b.upper().split())) <= max_edits


def test_upright_text(engine):
    result = engine.read_image(bgr(text_image(["ORGANIC OAT DRINK"])))
    assert len(result.lines) >= 1
    assert _close(" ".join(l.text for l in result.lines), "ORGANIC OAT DRINK")
    assert all(l.angle == 0 for l in result.lines)
    assert all(0.5 <= l.confidence <= 1.0 for l in result.lines)


def test_upside_down_text_is_turned_by_the_classifier(engine):
    img = text_image(["NET WEIGHT 500G"]).rotate(180, expand=True)
    result = engine.read_image(bgr(img))
    assert result.lines and all(l.angle == 180 for l in result.lines)
    assert _close(" ".join(l.text for l in result.lines), "NET WEIGHT 500G")


@pytest.mark.parametrize("pil_rotation, expected_angle", [(90, 270), (270, 90)])
def test_vertical_text_keeps_the_better_of_90_and_270(engine, pil_rotation, expected_angle):
    img = text_image(["PRODUCT OF SWEDEN"]).rotate(pil_rotation, expand=True)
    result = engine.read_image(bgr(img))
    assert len(result.lines) == 1
    line = result.lines[0]
    assert line.angle == expected_angle
    assert _close(line.text, "PRODUCT OF SWEDEN")
    xs = [p[0] for p in line.box]
    ys = [p[1] for p in line.box]
    assert max(ys) - min(ys) > 3 * (max(xs) - min(xs))  # the box stays in image coordinates


def test_boxes_lie_on_their_lines_in_reading_order(engine):
    img = text_image(["FIRST LINE", "SECOND LINE", "THIRD LINE"], gap=40)
    result = engine.read_image(bgr(img))
    # the detector may split a line at a wide space: compare the text in reading order
    assert _close("".join(l.text for l in result.lines), "FIRSTLINESECONDLINETHIRDLINE", 0)
    tops = [min(p[1] for p in l.box) for l in result.lines]
    assert tops == sorted(tops)
    assert full_text(result.lines) == "\n".join(l.text for l in result.lines)
    assert (result.width, result.height) == img.size


def test_tall_image_tiling_finds_every_line_once():
    words = [f"ITEM {i:02d} PRICE {i * 3}.50" for i in range(14)]
    img = text_image(words, size=22, gap=170)  # tall and narrow, like a long receipt
    assert img.size[1] > 5 * img.size[0] and img.size[1] > 2000
    tiled = OcrEngine.load(threads=1, config=OcrConfig(tile_aspect=1.5))
    assert len(tiled._tiles(img.size[1], img.size[0])) > 3
    result = tiled.read_image(bgr(img))
    texts = [l.text.upper() for l in result.lines]
    assert len(texts) == len(words)
    assert sum(_close(t, w) for t, w in zip(texts, words)) >= len(words) - 1
    # two workers detect the tiles side by side on the one-thread detector: the same boxes
    side_by_side = OcrEngine.load(threads=2, config=OcrConfig(tile_aspect=1.5))
    calls = []
    run = side_by_side.det_tile.run
    side_by_side.det_tile = type("Counting", (), {"run": lambda self, *a: calls.append(1) or run(*a)})()
    try:
        boxes = side_by_side.detect(bgr(img))
        assert side_by_side._pool is not None  # the tiles did go through the threads
    finally:
        side_by_side.close()
    assert len(calls) == len(tiled._tiles(img.size[1], img.size[0]))
    assert len(boxes) == len(words)
    assert [b.round(1).tolist() for b in boxes] == [b.round(1).tolist() for b in tiled.detect(bgr(img))]


def test_a_large_detector_input_runs_as_two_bands_joined_at_the_seam():
    words = ["FIRST LINE 10.00", "SECOND LINE 20.00", "ON THE SEAM 30.00", "FOURTH LINE 40.00", "LAST LINE 50.00"]
    page = Image.new("RGB", (800, 1400), "white")
    for k, word in enumerate(words):  # the middle line straddles the half-height seam
        page.paste(text_image([word], size=40, gap=10), (60, 40 + k * 315))
    img = bgr(page)
    engine = OcrEngine.load(threads=2)
    try:
        x = engine.det_feed(img)[engine._det_in]
        assert x.shape[2] * x.shape[3] > engine.config.det_split_pixels
        calls = []
        run = engine.det_tile.run
        engine.det_tile = type("Counting", (), {"run": lambda self, out, feed: calls.append(next(iter(feed.values())).shape) or run(out, feed)})()
        joined = engine._det_prob(x)
        whole = engine.det.run(None, {engine._det_in: x})[0]
        result = engine.read_image(img)
    finally:
        engine.close()
    ov = engine.config.det_split_overlap
    mid = x.shape[2] // 2 // 32 * 32
    assert calls[:2] == [(1, 3, mid + ov, x.shape[3]), (1, 3, x.shape[2] - mid + ov, x.shape[3])]  # two bands, each on the 32-pixel grid
    assert joined.shape == whole.shape
    # the bands see less of the page than the whole does (the detector's attention pools over its input), so the
    # maps differ a little; the text pixels agree
    assert np.mean((joined > 0.3) != (whole > 0.3)) < 0.002
    texts = [l.text.upper() for l in result.lines]
    assert len(texts) == len(words) and all(_close(t, w) for t, w in zip(texts, words)), texts
    # off: one run on both threads, as before
    off = OcrEngine.load(threads=2, config=OcrConfig(det_split_pixels=0))
    try:
        assert np.array_equal(off._det_prob(x), whole)
    finally:
        off.close()


def _small_print_page(lines, size=12, at=(300, 400)):
    """A scanned-page-sized white image (1080 x 1527) with a small block of print on it."""
    page = Image.new("RGB", (1080, 1527), "white")
    page.paste(text_image(lines, size=size, gap=size // 2), at)
    return page


def test_small_print_on_a_large_page_is_detected_again_enlarged():
    lines = ["TOTAL AMOUNT 8.20", "CASH RECEIVED 10.00", "THANK YOU COME AGAIN"]
    img = bgr(_small_print_page(lines))
    zooming = OcrEngine.load(threads=1)
    first = zooming._detect_tiled(img)
    (x0, y0, x1, y1), f = zooming._zoom(img, first)
    line_h = float(np.median([np.linalg.norm(b[0] - b[3]) for b in first]))
    assert line_h < zooming.config.det_small_text  # the page is not enlarged: the detector sees the print this small
    assert f == pytest.approx(zooming.config.det_text_target / line_h)
    pts = np.concatenate(first)
    assert x0 <= pts[:, 0].min() and y0 <= pts[:, 1].min() and x1 >= pts[:, 0].max() and y1 >= pts[:, 1].max()
    assert (x1 - x0) * (y1 - y0) < 0.1 * img.shape[0] * img.shape[1]  # the region of the print, not the page

    result = zooming.read_image(img)
    assert zooming.stats["zoomed"] == 1
    assert _close(" ".join(l.text for l in result.lines), " ".join(lines), 1)
    # the boxes come back in page coordinates, one on each drawn line
    second = zooming._detect_one(img[y0:y1, x0:x1], scale=f)  # the region as detect() reads it
    assert len(result.lines) == len(lines) and len(second) == len(lines)
    tops = sorted(min(p[1] for p in l.box) for l in result.lines)
    assert 390 < tops[0] < 430 and all(b - a > 8 for a, b in zip(tops, tops[1:]))

    plain = OcrEngine.load(threads=1, config=OcrConfig(det_small_text=0))
    plain.read_image(img)
    assert plain.stats["zoomed"] == 0


def test_print_the_detector_sees_large_enough_is_not_zoomed(engine):
    # the same print, but the image is small: the detector enlarges it to det_min_side anyway
    img = bgr(text_image(["TOTAL AMOUNT 8.20", "CASH RECEIVED 10.00"], size=12, gap=6))
    assert engine._zoom(img, engine._detect_tiled(img)) is None
    big = bgr(_small_print_page(["TOTAL AMOUNT 8.20", "CASH RECEIVED 10.00"], size=40))
    assert engine._zoom(big, engine._detect_tiled(big)) is None


def test_zoom_region_stays_within_the_pixel_bound():
    lines = [f"ITEM {i:02d} PRICE {i * 3}.50" for i in range(30)]
    img = bgr(_small_print_page(lines, size=11, at=(20, 20)))
    bounded = OcrEngine.load(threads=1, config=OcrConfig(det_zoom_max_pixels=500_000))
    (x0, y0, x1, y1), f = bounded._zoom(img, bounded._detect_tiled(img))
    assert (x1 - x0) * (y1 - y0) * f * f <= 500_000 * 1.001
    assert f < bounded.config.det_text_target / 11


def _specks(img: np.ndarray, n: int = 60, seed: int = 0) -> np.ndarray:
    """``img`` with ``n`` scanner specks (black squares of 2 or 3 pixels a side) scattered over it."""
    rng = np.random.default_rng(seed)
    out = img.copy()
    for y, x in zip(rng.integers(0, img.shape[0] - 3, n), rng.integers(0, img.shape[1] - 3, n)):
        k = int(rng.integers(2, 4))
        out[y : y + k, x : x + k] = 0
    return out


def test_blank_margins_are_trimmed_and_the_boxes_come_back_in_page_coordinates():
    lines = ["TOTAL AMOUNT 8.20", "CASH RECEIVED 10.00", "THANK YOU COME AGAIN"]
    img = _specks(bgr(_small_print_page(lines, size=14)))
    trimming = OcrEngine.load(threads=1)
    x0, y0, x1, y1 = trimming._content_box(img)
    assert x0 < 300 and y0 < 400 and x1 > 300 + 150 and y1 > 400 + 60  # the print, with its margin ...
    assert (x1 - x0) * (y1 - y0) < 0.2 * img.shape[0] * img.shape[1]  # ... not the specks all over the page

    boxes = trimming.detect(img)
    assert trimming.stats["trimmed"] == 1
    whole = OcrEngine.load(threads=1, config=OcrConfig(trim_tolerance=0))
    reference = whole.detect(img)
    assert whole.stats["trimmed"] == 0
    assert len(boxes) == len(reference) == len(lines)
    for b, r in zip(sorted(boxes, key=lambda b: b[:, 1].min()), sorted(reference, key=lambda b: b[:, 1].min())):
        assert np.abs(b - r).max() < 4  # the same lines, in page coordinates

    result = trimming.read_image(img)
    assert _close(" ".join(l.text for l in result.lines), " ".join(lines), 1)


def test_a_small_word_far_from_the_print_is_kept_in_the_cut():
    page = _small_print_page(["TOTAL AMOUNT 8.20", "CASH 10.00"], size=14)
    page.paste(text_image(["500 G"], size=14, gap=4), (900, 1420))
    img = _specks(bgr(page))
    engine = OcrEngine.load(threads=1)
    x0, y0, x1, y1 = engine._content_box(img)
    assert x1 > 960 and y1 > 1440
    assert any("500" in l.text for l in engine.read_image(img).lines)


def test_a_busy_background_or_a_full_page_is_not_trimmed():
    engine = OcrEngine.load(threads=1)
    rng = np.random.default_rng(1)
    photo = (rng.random((900, 700, 3)) * 255).astype(np.uint8)  # no plain frame
    photo[300:400, 200:500] = 255
    assert engine._content_box(photo) is None
    full = bgr(text_image([f"ITEM {i:02d} PRICE {i}.50" for i in range(12)], size=30))
    engine.detect(full)
    assert engine.stats["trimmed"] == 0  # print fills the image: nothing worth cutting


@pytest.mark.parametrize("lo,hi,size,step", [(283, 717, 1080, 32.0), (0, 1000, 1080, 32.0), (1000, 1070, 1080, 112.3), (5, 20, 1080, 32.0), (10, 1075, 1080, 32.0)])
def test_fit_span_grows_to_whole_steps_within_the_image(lo, hi, size, step):
    a, b = _fit_span(lo, hi, size, step)
    assert 0 <= a <= lo and hi <= b <= size  # still holds the span, inside the image
    assert b - a == min(size, round(math.ceil((hi - lo) / step) * step))  # whole steps, unless the image is smaller


def test_space_restoration_from_ctc_gaps(engine):
    # Two words drawn far apart on one line: the recognizer may or may not emit
    # the space itself; with space restoration it must be there.
    font = _font(34)
    img = Image.new("RGB", (520, 80), "white")
    d = ImageDraw.Draw(img)
    d.text((20, 20), "SUGAR", font=font, fill="black")
    d.text((175, 20), "FREE", font=font, fill="black")
    spaced = OcrEngine(engine.det, engine.rec, engine.cls, characters=engine.characters[1:-1], config=OcrConfig(space_gap_cols=3))
    lines = spaced.read_image(bgr(img)).lines
    assert " ".join(l.text for l in lines).upper().split() == ["SUGAR", "FREE"]


def test_reading_order_groups_rows():
    def box(x, y, w=50, h=20):
        return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float32)

    boxes = [box(200, 102), box(10, 100), box(10, 10), box(120, 12)]
    assert reading_order(boxes) == [2, 3, 1, 0]
    assert reading_order([]) == []


def test_reading_order_follows_tilted_rows_and_finds_the_row_of_a_short_box():
    def box(x, y, w=60, h=30):
        return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float32)

    # two rows of a receipt photographed at a tilt: each box 6 px higher
    # than its left neighbour, 18 px from one end of a row to the other
    # (more than half a box height), rows 40 px apart
    row1 = [box(10, 100), box(80, 94), box(150, 88), box(220, 82)]
    row2 = [box(10, 140), box(80, 134), box(150, 128), box(220, 122)]
    shuffled = [row2[3], row1[0], row2[0], row1[2], row1[3], row2[1], row1[1], row2[2]]
    expected = [next(k for k, s in enumerate(shuffled) if s is b) for b in row1 + row2]
    assert reading_order(shuffled) == expected
    # a small "x" between a tall price and its item, on the item's row
    boxes = [box(10, 10, h=40), box(300, 12, h=36), box(150, 25, w=10, h=12), box(10, 80)]
    assert reading_order(boxes) == [0, 2, 1, 3]
    # rows share a box when they overlap by at least half its height (30 px)
    assert reading_order([box(80, 0), box(10, 14)]) == [1, 0]  # 16 px: one row, left first
    assert reading_order([box(80, 0), box(10, 16)]) == [0, 1]  # 14 px: two rows, upper first


def test_decode_image_limits():
    with pytest.raises(ImageError, match="not a decodable image") as e:
        decode_image(b"this is not an image")
    assert e.value.reason == "IMAGE_DECODE_ERROR"
    big = png_bytes(Image.new("RGB", (3000, 2000), "white"))  # small file, many pixels
    with pytest.raises(ImageError, match="3000x2000") as e:
        decode_image(big, max_pixels=1_000_000)
    assert e.value.reason == "IMAGE_TOO_LARGE"
    with pytest.raises(ImageError) as e:
        decode_image(big, max_bytes=100)
    assert e.value.reason == "IMAGE_TOO_LARGE"
    jpeg = io.BytesIO()
    text_image(["CUT"]).save(jpeg, format="JPEG")
    with pytest.raises(ImageError) as e:
        decode_image(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    assert e.value.reason == "IMAGE_DECODE_ERROR"
    arr = decode_image(png_bytes(text_image(["OK"])))
    assert arr.dtype == np.uint8 and arr.shape[2] == 3


def test_handler_in_run_inference_dead_letters_bad_images(local_runner):
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    good = png_bytes(text_image(["FRESH BREAD"]))
    huge = png_bytes(Image.new("RGB", (2500, 2500), "white"))
    handler = OcrModelHandler(None, threads=1, max_batch_size=1, max_image_pixels=4_000_000)
    with TestPipeline(runner=local_runner) as p:
        results, failures = (
            p
            | beam.Create([("p1", good), ("p2", b"\x89PNG\r\n\x1a\ngarbage"), ("p3", huge)])
            | RunInference(KeyedModelHandler(handler)).with_exception_handling()
        )
        texts = results | "Text" >> beam.MapTuple(lambda k, r: (k, "".join(l.text.upper() for l in r.inference.lines).replace(" ", "")))
        reasons = failures.failed_inferences | beam.Map(lambda f: (f[0][0][0], failure_reason(f[1])[0]))
        assert_that(texts, equal_to([("p1", "FRESHBREAD")]), label="good")
        assert_that(reasons, equal_to([("p2", "IMAGE_DECODE_ERROR"), ("p3", "IMAGE_TOO_LARGE")]), label="dead")


def test_handler_contract():
    handler = OcrModelHandler(None, threads=1, max_batch_size=3)
    assert handler.get_metrics_namespace() == "aisle_ocr"
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 3}
    assert handler.model_paths().det.endswith("det_infer.onnx")
    with pytest.raises(Exception, match="batch sizes"):
        OcrModelHandler(None, min_batch_size=4, max_batch_size=2)


def test_handler_loads_models_from_a_folder(tmp_path):
    import shutil

    from transforms.inference.ocr import OcrModelPaths

    stock = OcrModelPaths.default()
    with pytest.raises(ModelLoadError, match="det.onnx"):
        OcrModelPaths.from_dir(str(tmp_path))
    shutil.copy(stock.det, tmp_path / "det.onnx")
    shutil.copy(stock.rec, tmp_path / "rec.onnx")
    handler = OcrModelHandler(str(tmp_path), threads=1)
    paths = handler.model_paths()
    assert paths.det == str(tmp_path / "det.onnx") and paths.cls is None
    engine = handler.load_model()
    assert engine.cls is None
    out = handler.run_inference([png_bytes(text_image(["SALT"]))], engine)
    assert [l.text.upper() for l in out[0].inference.lines] == ["SALT"]
    # a small-print recognizer in the folder is found, and dropped when another recognizer is named
    assert paths.rec_small is None and engine.rec_small is None
    shutil.copy(stock.rec, tmp_path / "rec_small.onnx")
    assert OcrModelHandler(str(tmp_path), threads=1).model_paths().rec_small == str(tmp_path / "rec_small.onnx")
    assert OcrModelHandler(str(tmp_path), threads=1).load_model().rec_small is not None
    assert OcrModelHandler(str(tmp_path), rec_model=stock.rec, threads=1).model_paths().rec_small is None


def _recognizer_reading_only(engine, char: str, path) -> str:
    """A copy of the shipped recognizer whose head reads ``char`` in every column, saved at ``path``."""
    import onnx

    from components.ocr_finetune import _constants, _set_constant, head_tensors
    from transforms.inference.ocr import OcrModelPaths

    model = onnx.load(OcrModelPaths.default().rec)
    _, w_name, b_name = head_tensors(model)
    w = onnx.numpy_helper.to_array(_constants(model.graph)[w_name])
    b = np.zeros(w.shape[1], dtype=np.float32)
    b[engine.characters.index(char)] = 50.0
    _set_constant(model.graph, w_name, np.zeros_like(w))
    _set_constant(model.graph, b_name, b)
    onnx.save(model, str(path))
    return str(path)


def test_small_print_is_read_by_the_small_print_recognizer(engine, tmp_path):
    import cv2

    from transforms.inference.ocr import OcrModelPaths

    words = ["TOTAL 12.50", "CASH", "NET WT 500G"]
    large = [bgr(text_image([w], size=40, gap=4))[8:-8] for w in words]
    assert min(c.shape[0] for c in large) >= 40
    small = [cv2.resize(c, (round(c.shape[1] * 24 / c.shape[0]), 24), interpolation=cv2.INTER_AREA) for c in large]
    stock = OcrModelPaths.default()
    paths = OcrModelPaths(stock.det, stock.rec, None, rec_small=_recognizer_reading_only(engine, "X", tmp_path / "rec_x.onnx"))
    for workers in (1, 2):  # one batch after another, and side by side
        routed = OcrEngine.load(paths, threads=workers, config=OcrConfig(rec_small_below=36))
        texts = [t for t, _ in routed.recognize([large[0], small[0], large[1], small[1], small[2], large[2]])]
        assert texts[1] == texts[3] == texts[4] == "X"  # under 36 px: the small-print recognizer
        assert _close(texts[0], words[0]) and _close(texts[2], words[1]) and _close(texts[5], words[2])
        assert routed.stats["small_crops"] == 3
        routed.close()
    # without one, the recognizer reads every line
    assert [t for t, _ in engine.recognize(small)] != ["X"] * 3
    with pytest.raises(ModelLoadError, match="small-print recognizer has 2 output classes"):
        OcrEngine(engine.det, engine.rec, None, characters=engine.characters[1:-1], rec_small_session=_TwoClasses())


class _TwoClasses:
    """A recognizer-like session with two output classes."""

    def get_inputs(self):
        class _In:
            name = "x"

        return [_In()]

    def get_outputs(self):
        class _Out:
            shape = [None, None, 2]

        return [_Out()]


class _AlwaysUpsideDown:
    """A classifier session that calls every line upside down, sure of it."""

    def get_inputs(self):
        class _In:
            name = "x"

        return [_In()]

    def run(self, _outputs, feed):
        n = next(iter(feed.values())).shape[0]
        return [np.tile(np.array([[0.0, 1.0]], dtype=np.float32), (n, 1))]


def test_a_wrongly_turned_line_keeps_its_upright_reading(engine):
    wrong = OcrEngine(engine.det, engine.rec, _AlwaysUpsideDown(), characters=engine.characters[1:-1])
    upright = wrong.read_image(bgr(text_image(["GST 0%", "TOTAL 12.50"])))
    assert [l.angle for l in upright.lines] == [0, 0]
    assert _close(upright.lines[0].text, "GST 0%") and _close(upright.lines[1].text, "TOTAL 12.50")
    # a line that really is upside down still reads turned
    turned = wrong.read_image(bgr(text_image(["NET WEIGHT 500G"]).rotate(180, expand=True)))
    assert [l.angle for l in turned.lines] == [180]
    assert _close(turned.lines[0].text, "NET WEIGHT 500G")


def test_recognition_batches_return_each_crop_its_own_text(engine):
    words = ["CASH", "TOTAL 12.50", "CHANGE 0.50", "THANK YOU FOR SHOPPING", "RM", "SUGAR 1KG", "7"]
    crops = [bgr(text_image([w], size=28, gap=4))[8:-8] for w in words]  # one line each, little margin
    texts = {}
    for batch_size in (1, 3, 4, 16):
        e = OcrEngine(engine.det, engine.rec, None, characters=engine.characters[1:-1], config=OcrConfig(rec_batch_size=batch_size))
        texts[batch_size] = [t for t, _ in e.recognize(crops)]
        assert all(_close(t, w) for t, w in zip(texts[batch_size], words)), (batch_size, texts[batch_size])
    # batches of similar widths pad little: the text does not depend on the batch size
    assert texts[1] == texts[3] == texts[4] == texts[16]


def test_recognition_batches_run_at_once_give_each_crop_its_own_text(engine):
    words = ["CASH", "TOTAL 12.50", "CHANGE 0.50", "THANK YOU FOR SHOPPING", "RM", "SUGAR 1KG", "7", "NET WT 500G", "GST 6%"]
    crops = [bgr(text_image([w], size=28, gap=4))[8:-8] for w in words]
    crops += [np.ascontiguousarray(np.rot90(c, 2)) for c in crops[:3]]  # and upside down, for the classifier
    serial = OcrEngine(engine.det, engine.rec, engine.cls, characters=engine.characters[1:-1], config=OcrConfig(rec_batch_size=2))
    parallel = OcrEngine(engine.det, engine.rec, engine.cls, characters=engine.characters[1:-1], config=OcrConfig(rec_batch_size=2),
                         crop_workers=3)
    try:
        assert parallel.recognize(crops) == serial.recognize(crops)  # same order, same texts
        assert parallel._cls_batch(crops) == serial._cls_batch(crops)
        assert [f for f, _ in parallel._cls_batch(crops)][-3:] == [True] * 3
        assert parallel._pool is not None  # the batches did go through the threads
    finally:
        parallel.close()
    assert all(_close(t, w) for (t, _), w in zip(serial.recognize(crops), words))


def test_load_gives_recognition_one_thread_a_batch_and_the_detector_all():
    e = OcrEngine.load(threads=2)
    assert e.crop_workers == 2
    assert e.rec.get_session_options().intra_op_num_threads == 1
    assert e.cls.get_session_options().intra_op_num_threads == 1
    assert e.det.get_session_options().intra_op_num_threads == 2
    assert e.det_tile.get_session_options().intra_op_num_threads == 1  # tiles of a tall image, one a worker
    one = OcrEngine.load(threads=2, parallel_crops=False)
    assert one.crop_workers == 1 and one.rec.get_session_options().intra_op_num_threads == 2 and one.det_tile is None
    with pytest.raises(ConfigError):
        OcrEngine(e.det, e.rec, characters=e.characters[1:-1], crop_workers=0)


@pytest.mark.parametrize(
    "read, expected",
    [
        ("CH0PPING B0ARD", "CHOPPING BOARD"),  # between letters
        ("AUT0", "AUTO"),  # a letter and the end of the word
        ("Hell0", "Hello"),
        ("RM5OO", "RM500"),  # a digit and the end
        ("ES1OOO", "ES1000"),
        ("2O18", "2018"),
        ("1,0O0.00", "1,000.00"),  # a separator before a digit counts as a digit
        ("CS00004040", "CS00004040"),  # letter on one side, digit on the other: as read
        ("RM0.40", "RM0.40"),
        ("0.40 O", "0.40 O"),  # nothing decides
        ("H2O", "H2O"),  # one digit beside a lone O: as read
        ("A0 PAPER", "A0 PAPER"),
        ("8110O", "81100"),
    ],
)
def test_zero_and_o_by_their_neighbours(read, expected):
    assert fix_zero_o(read) == expected


@pytest.mark.parametrize(
    "read, expected",
    [
        ("TOTAL 7. 42", "TOTAL 7.42"),
        ("TIME 17: 21", "TIME 17:21"),
        ("( RM )", "(RM)"),
        ("QTY 2 , 6 %", "QTY 2, 6%"),
        ("07-5547360 / 016", "07-5547360/016"),
        ("CASH : 7.00", "CASH : 7.00"),  # a colon keeps its space
        ("NO. 53", "NO. 53"),
    ],
)
def test_tidy_spaces(read, expected):
    assert tidy_spaces(read) == expected


def test_text_post_processing_is_configurable(engine):
    # full-width punctuation from the (Chinese-trained) recognizer folds to ASCII
    probs = np.zeros((6, len(engine.characters)), np.float32)
    probs[:, 0] = 1.0
    for col, ch in ((0, "（"), (2, "R"), (4, "）")):
        if ch in engine.characters:
            probs[col, 0] = 0.0
            probs[col, engine.characters.index(ch)] = 1.0
    raw = OcrEngine(engine.det, engine.rec, engine.cls, characters=engine.characters[1:-1], config=OcrConfig(unicode_form=""))
    assert raw._decode(probs, 6)[0] == "（R）"
    assert engine._decode(probs, 6)[0] == "(R)"


def test_contrast_stretch_gives_faint_print_the_full_input_range():
    faint = text_image(["WITHIN 7 DAYS"], size=30)
    arr = np.asarray(faint).astype(np.float32)
    arr = 255 - (255 - arr) * 0.12  # ink at ~12% of full contrast
    img = bgr(Image.fromarray(arr.clip(0, 255).astype(np.uint8)))
    stretched = OcrEngine.load(threads=1, config=OcrConfig(rec_contrast=1.0))
    lines = stretched.read_image(img).lines
    assert lines and _close(lines[0].text.replace(" ", ""), "WITHIN7DAYS")
    # the stretch is what the recognizer sees: its input spans the full range
    crops = [img[: img.shape[0] // 2 + 20]]
    (plan,) = stretched._rec_plan(crops)
    batch, _ = stretched._rec_batch(crops, *plan)
    assert batch.min() < -0.9 and batch.max() > 0.9


def test_recognition_crop_margin_grows_the_box_along_its_own_axes():
    from transforms.inference.ocr import _grow

    box = np.array([[10, 20], [110, 20], [110, 40], [10, 40]], np.float32)  # 100 x 20
    grown = _grow(box, 0.15)  # 3 px on every side
    np.testing.assert_allclose(grown, [[7, 17], [113, 17], [113, 43], [7, 43]], atol=1e-4)
    np.testing.assert_array_equal(_grow(box, 0.0), box)
    # a line turned by 90 degrees grows across its own height, not the image's
    turned = np.array([[40, 10], [40, 110], [20, 110], [20, 10]], np.float32)
    g = _grow(turned, 0.15)
    assert np.isclose(np.linalg.norm(g[0] - g[3]), 26) and np.isclose(np.linalg.norm(g[0] - g[1]), 106)
    # a vertical line (clockwise from its top-left as the image shows it: 20 wide, 300 high) grows by its width
    tall = np.array([[20, 10], [40, 10], [40, 310], [20, 310]], np.float32)
    np.testing.assert_allclose(_grow(tall, 0.15, 1.5), [[17, 7], [43, 7], [43, 313], [17, 313]], atol=1e-4)
    assert np.isclose(np.linalg.norm(_grow(tall, 0.15)[0] - _grow(tall, 0.15)[1]), 20 + 2 * 45)  # without the ratio: by its height


def test_reported_boxes_stay_as_detected_when_the_crop_grows(engine):
    img = bgr(text_image(["NET WT 500G"], size=32))
    tight = OcrEngine(engine.det, engine.rec, engine.cls, characters=engine.characters[1:-1], config=OcrConfig(rec_margin=0.0))
    a, b = tight.read_image(img).lines, engine.read_image(img).lines
    assert [l.box for l in a] == [l.box for l in b]


def test_contrast_levels_from_the_histogram_equal_numpy_percentiles():
    from transforms.inference.ocr import _levels

    rng = np.random.default_rng(3)
    for shape in ((48, 97, 3), (48, 600, 3), (1, 1, 3), (48, 5, 3)):
        u8 = rng.integers(0, 256, size=shape, dtype=np.uint8)
        u8[: shape[0] // 2] = 250  # a heavy background level, as on a receipt
        for p in (1.0, 2.5, 10.0):
            np.testing.assert_allclose(_levels(u8, p), np.percentile(u8.astype(np.float32), (p, 100 - p)), rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "read, expected",
    [
        ("7 42", "7.42"),
        ("TOTAL 102 40", "TOTAL 102.40"),
        ("RM7 00", "RM7.00"),
        ("7.42", "7.42"),
        ("QTY 2 100", "QTY 2 100"),  # three digits after the space: not a price's cents
        ("24 10 2017", "24 10 2017"),  # not at the end of the line
        ("NZ-06/07 5 40", "NZ-06/07 5.40"),
        ("A1 42", "A1 42"),  # a code, not a number, before the space
    ],
)
def test_fix_decimals(read, expected):
    assert fix_decimals(read) == expected


def _ctc(engine, layout: str, space_peaks: dict[int, float]) -> np.ndarray:
    """CTC probabilities for ``layout``: one column per character, "." a blank column; weak space peaks in given columns."""
    probs = np.zeros((len(layout), len(engine.characters)), np.float32)
    probs[:, 0] = 1.0
    for col, ch in enumerate(layout):
        if ch != ".":
            probs[col] = 0.0
            probs[col, engine.characters.index(ch)] = 1.0
    for col, p in space_peaks.items():
        probs[col, -1], probs[col, 0] = p, 1.0 - p
    return probs


def test_a_weak_space_peak_splits_words_only_across_a_wide_gap(engine):
    # letter-spaced print: every gap is one blank column; a weak space peak
    # between S and T is noise, a strong one is a space
    pitch = OcrEngine(engine.det, engine.rec, engine.cls, characters=engine.characters[1:-1], config=OcrConfig(space_pitch_factor=1.2))
    layout = "A.D.J.U.S.T.M.E.N.T"
    spaced = _ctc(engine, layout, {9: 0.08})
    assert pitch._decode(spaced, len(layout))[0] == "ADJUSTMENT"
    assert pitch._decode(_ctc(engine, layout, {9: 0.6}), len(layout))[0] == "ADJUS TMENT"
    # the same weak peak across a gap twice the line's pitch is a word break
    layout = "T.O.T.A.L...G.S.T"
    assert pitch._decode(_ctc(engine, layout, {10: 0.08}), len(layout))[0] == "TOTAL GST"
    # with the pitch rule off (the default), any peak above space_prob is a space
    assert engine._decode(spaced, 19)[0] == "ADJUS TMENT"


def test_detection_shrinks_large_images_to_det_max_side_and_enlarges_small_ones_up_to_det_max_side_up():
    engine = OcrEngine.__new__(OcrEngine)  # the scale needs only the config
    engine.config = OcrConfig(det_min_side=736, det_max_side=1600, det_max_side_up=2000)
    assert engine._det_scale(3000, 2000) == pytest.approx(1600 / 3000)  # a large photo: the longer side to 1600
    assert engine._det_scale(1200, 900) == 1.0  # in between: as it is
    assert engine._det_scale(60, 400) == pytest.approx(2000 / 400)  # a one-line label: enlarged 5x, not 4x
    assert engine._det_scale(200, 300) == pytest.approx(736 / 200)  # short side to det_min_side

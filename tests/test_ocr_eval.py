"""OCR metrics, the SROIE-layout loader and the Tesseract baseline adapter."""

from __future__ import annotations

import random
import shutil

import pytest

from components.ocr_eval import Page, aggregate, levenshtein, load_sroie, page_counts, split_pages, tesseract_lines
from tests.conftest import TESTDATA, shared_data
from transforms.errors import SourceError

TINY = TESTDATA / "ocr" / "sroie_tiny"


def _dp(a, b):
    d = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, d[0] = d[:], i
        for j, cb in enumerate(b, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (ca != cb))
    return d[-1]


def test_levenshtein_matches_the_textbook_recurrence():
    rng = random.Random(7)
    for _ in range(300):
        a = "".join(rng.choice("AB1 .") for _ in range(rng.randint(0, 15)))
        b = "".join(rng.choice("AB1 .") for _ in range(rng.randint(0, 15)))
        assert levenshtein(a, b) == _dp(a, b)
    assert levenshtein("TOTAL", "T0TAL") == 1
    assert levenshtein("", "ABC") == 3


def _box(x0, y0, x1, y1):
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


PAGE = Page("p", "unused.jpg", (("TOTAL RM 9.00", _box(10, 10, 200, 30)), ("THANK YOU", _box(10, 50, 150, 70))))


def test_perfect_prediction_scores_one():
    m = aggregate([page_counts([(t, b) for t, b in PAGE.lines], PAGE)])
    assert m["det_recall"] == m["det_precision"] == m["word_f1"] == m["word_f1_nospace"] == 1.0
    assert m["cer"] == m["line_cer"] == 0.0


def test_dropped_spaces_hurt_word_f1_not_cer():
    pred = [("TOTALRM9.00", _box(11, 11, 199, 31)), ("THANKYOU", _box(10, 50, 150, 70))]
    m = aggregate([page_counts(pred, PAGE)])
    assert m["cer"] == 0.0  # whitespace-free page CER
    assert m["word_f1"] == 0.0  # no whitespace word is right
    # letter/digit runs: TOTALRM|9|.|00 and THANKYOU vs TOTAL RM 9 . 00 THANK YOU
    assert 0.0 < m["word_f1_nospace"] < 1.0
    assert m["det_recall"] == 1.0


def test_page_cer_reads_both_sides_in_the_same_order():
    # one row "TOTAL RM 9.00" annotated as two boxes; a system that lists
    # the lower line first and the row's boxes right to left still reads
    # the same page
    page = Page("p", "unused.jpg", (("TOTAL", _box(10, 10, 80, 30)), ("RM 9.00", _box(120, 12, 200, 32)), ("THANK YOU", _box(10, 50, 150, 70))))
    pred = [("THANK YOU", _box(10, 50, 150, 70)), ("RM 9.00", _box(120, 11, 200, 31)), ("TOTAL", _box(10, 9, 80, 29))]
    m = aggregate([page_counts(pred, page)])
    assert m["cer"] == 0.0
    assert m["cer_listed_order"] > 0.5  # THANKYOURM9.00TOTAL vs TOTALRM9.00THANKYOU
    # a real reading error still counts
    m2 = aggregate([page_counts([("THANK Y0U", pred[0][1]), *pred[1:]], page)])
    assert m2["cer"] == pytest.approx(1 / len("TOTALRM9.00THANKYOU"))


def test_case_is_ignored_by_default_but_reported():
    pred = [("Total RM 9.00", _box(10, 10, 200, 30)), ("Thank you", _box(10, 50, 150, 70))]
    m = aggregate([page_counts(pred, PAGE)])
    assert m["cer"] == 0.0 and m["word_f1"] == 1.0
    assert m["cer_cased"] > 0.3 and m["word_f1_cased"] < 0.5


def test_detection_matching_by_iou():
    pred = [("TOTAL RM 9.00", _box(10, 10, 200, 30)), ("NOISE", _box(300, 300, 400, 320))]
    c = page_counts(pred, PAGE)
    assert (c["n_matched"], c["n_gt_lines"], c["n_pred_lines"]) == (1, 2, 2)
    m = aggregate([c])
    assert m["det_recall"] == 0.5 and m["det_precision"] == 0.5
    # micro-average over pages: totals first
    m2 = aggregate([c, page_counts([(t, b) for t, b in PAGE.lines], PAGE)])
    assert m2["det_recall"] == pytest.approx(3 / 4)


def test_tiny_sroie_fixture_loads_and_splits():
    pages = load_sroie(str(TINY))
    assert [p.id for p in pages] == ["t001", "t002", "t003"]
    assert pages[0].lines[0][0] == "FRESH MART, SDN BHD"  # transcript with a comma
    ev, cal = split_pages(str(TINY), n_eval=None, n_calibration=1)
    assert [p.id for p in ev] == ["t001", "t002"] and [p.id for p in cal] == ["t003"]
    with pytest.raises(SourceError, match="SROIE layout"):
        load_sroie(str(TESTDATA))


def test_tesseract_lines_on_a_drawn_receipt():
    if not shutil.which("tesseract"):
        pytest.skip("tesseract is not installed (Debian tesseract-ocr)")
    page = load_sroie(str(TINY), ids=["t001"])[0]
    lines = tesseract_lines(page.image_path)
    m = aggregate([page_counts(lines, page)])
    assert m["cer"] < 0.2
    assert m["det_recall"] > 0.5


def test_real_sroie_is_readable():
    root = shared_data("ocr/sroie")
    pages = load_sroie(str(root), limit=2)
    assert len(pages) == 2 and all(len(p.lines) > 5 for p in pages)


def test_word_f1_interval_over_pages():
    from components.ocr_eval import word_f1_interval
    from transforms.errors import ConfigError

    def page(tp, pred, gt):
        return {"words_tp": tp, "words_pred": pred, "words_gt": gt}

    good = [page(9, 10, 10), page(8, 10, 10), page(10, 10, 10), page(7, 10, 10)] * 5
    worse = [page(tp - 2, pred, gt) for tp, pred, gt in (c.values() for c in good)]
    lo, hi = word_f1_interval(good)
    assert lo < 0.85 < hi and lo > 0.75 and hi < 0.95  # around the pooled 0.85
    assert word_f1_interval(good) == word_f1_interval(good)  # seeded
    assert word_f1_interval(good, good) == (0.0, 0.0)
    dlo, dhi = word_f1_interval(worse, good)  # 2 words fewer right on every page: 0.2 lower, whatever the resample
    assert dlo == pytest.approx(-0.2) and dhi == pytest.approx(-0.2)
    uneven = [page(10, 10, 10)] * 10 + [page(0, 10, 10)] * 10  # pages disagree: a wide interval
    ulo, uhi = word_f1_interval(uneven)
    assert uhi - ulo > 0.3
    with pytest.raises(ConfigError):
        word_f1_interval(good, good[:3])
    with pytest.raises(ConfigError):
        word_f1_interval([])

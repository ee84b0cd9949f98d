"""Fine-tuning the recognizer's CTC head (components.ocr_finetune) on pages drawn in the test."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image, ImageDraw

from components.ocr_eval import load_sroie
from components.ocr_finetune import FinetuneConfig, _constants, _train_head, case_merged_ctc, finetune_recognizer, head_tensors, line_word_f1
from tests.test_ocr import _font, bgr
from transforms.errors import ConfigError
from transforms.inference.ocr import DEFAULT_SPACE_PROB, SPACE_PROB_KEY, OcrConfig, OcrEngine, OcrModelPaths

PAGES = {
    "001": ["TOTAL 9.90", "CASH 20.00", "CHANGE 10.10"],
    "002": ["MILK 1L", "ORGANIC OATS", "NET WT 500G"],
    "003": ["GST SUMMARY", "TAX (RM) 0.54", "THANK YOU"],
    "004": ["SUGAR FREE", "PRODUCT OF ITALY", "BEST BEFORE 12.05"],
}
UNKNOWN = "\u2603"  # a snowman: not in the recognizer's character set


def _draw_page(lines, size=30, gap=34):
    """A white page with ``lines`` drawn one under another, and each line's box (4 points)."""
    font = _font(size)
    bbs = [font.getbbox(t) for t in lines]
    w = max(b[2] - b[0] for b in bbs) + 60
    h = sum(b[3] - b[1] + gap for b in bbs) + 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    y, boxes = 20, []
    for t, b in zip(lines, bbs):
        draw.text((30 - b[0], y - b[1]), t, fill="black", font=font)
        x0, y0, x1, y1 = 30 - 2, y - 3, 30 + b[2] - b[0] + 2, y + b[3] - b[1] + 3
        boxes.append((x0, y0, x1, y0, x1, y1, x0, y1))
        y += b[3] - b[1] + gap
    return img, boxes


@pytest.fixture(scope="module")
def sroie_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sroie")
    (root / "img").mkdir()
    (root / "box").mkdir()
    for pid, lines in PAGES.items():
        img, boxes = _draw_page(lines)
        img.save(root / "img" / f"{pid}.jpg", quality=95)
        truth = list(lines)
        if pid == "002":
            truth[0] = f"MILK 1L {UNKNOWN}"  # its ground truth has a character the recognizer cannot emit
        rows = [",".join(str(int(v)) for v in b) + "," + t for b, t in zip(boxes, truth)]
        (root / "box" / f"{pid}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def finetuned(sroie_dir, tmp_path_factory):
    pages = load_sroie(str(sroie_dir))
    out = tmp_path_factory.mktemp("finetuned")
    cfg = FinetuneConfig(epochs=3, learning_rate=1e-3, batch_size=4, space_probs=(0.02, 0.1), threads=1)
    result = finetune_recognizer(None, pages[:3], str(out), dev_pages=pages[3:], config=cfg)
    return result, pages


def test_head_is_found_on_the_shipped_recognizer():
    model = onnx.load(OcrModelPaths.default().rec)
    features, w, b = head_tensors(model)
    consts = _constants(model.graph)
    w_dims, b_dims = list(consts[w].dims), list(consts[b].dims)
    n_classes = len(OcrEngine.load(threads=1).characters)
    assert w_dims[1] == n_classes and b_dims == [n_classes]
    assert features not in consts  # computed, not a constant


def test_case_merged_ctc_treats_both_cases_of_a_letter_as_one_class():
    import torch

    chars = ["", "A", "B", "a", "b", "1", " "]
    loss_fn, encode = case_merged_ctc(chars)
    assert encode("ab 1") == encode("AB 1") == encode("aB  1")  # spaces collapsed too
    assert encode("A\u2603") is None
    # logits that read "ab" in lower case: the merged loss is low for the target "AB"
    logits = torch.full((1, 4, len(chars)), -8.0)
    for t, k in enumerate([3, 0, 4, 0]):  # a, blank, b, blank
        logits[0, t, k] = 8.0
    low = loss_fn(logits, [4], [encode("AB")]).item()
    high = loss_fn(logits, [4], [encode("BA")]).item()
    assert low < 0.01 < 1.0 < high


def test_line_word_f1_reads_lines_through_the_engines_decoder():
    engine = OcrEngine.load(threads=1)
    classes = {c: k for k, c in enumerate(engine.characters) if c}
    letters = ["A", "B", " ", ""]  # feature k votes for this class ("" = blank)
    w = np.zeros((len(letters), len(engine.characters)), dtype=np.float32)
    for k, c in enumerate(letters):
        w[k, classes[c] if c else 0] = 12.0
    b = np.zeros(len(engine.characters), dtype=np.float32)

    def feats(seq):  # one column per character of seq, blanks between
        cols = [letters.index(ch) for part in seq for ch in (part, "")]
        return np.eye(len(letters), dtype=np.float16)[cols]

    lines = [feats("AB"), feats("A B")]
    scores = line_word_f1({"engine": engine}, lines, ["AB", "A B"], w, b)
    assert scores == {"engine": 1.0}
    wrong = line_word_f1({"engine": engine}, lines, ["A B", "AB"], w, b)  # 0 of 3 predicted words right
    assert wrong == {"engine": 0.0}


def test_finetuning_changes_only_the_head_and_keeps_the_metadata(finetuned):
    result, _ = finetuned
    base = onnx.load(OcrModelPaths.default().rec)
    new = onnx.load(f"{result.model_dir}/rec.onnx")
    _, w, b = head_tensors(base)
    before, after = _constants(base.graph), _constants(new.graph)
    changed = {k for k in before if not np.array_equal(onnx.numpy_helper.to_array(before[k]), onnx.numpy_helper.to_array(after[k]))}
    assert changed == {w, b}
    meta_before = {p.key: p.value for p in base.metadata_props}
    meta_after = {p.key: p.value for p in new.metadata_props}
    assert meta_after["character"] == meta_before["character"]
    assert float(meta_after[SPACE_PROB_KEY]) == result.space_prob in (0.02, 0.1)


def test_finetuning_lowers_the_training_loss_and_counts_every_line(finetuned):
    result, pages = finetuned
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert 1 <= result.best_epoch <= 3  # the drawn lines read as well after training, and the last of equals is kept
    n_truth = sum(len(p.lines) for p in pages[:3]) + sum(len(p.lines) for p in pages[3:])
    # every ground-truth line is trained on, or skipped with its reason
    assert result.train_lines + result.dev_lines + sum(result.skipped_lines.values()) == n_truth
    assert result.skipped_lines["charset"] == 1
    record = json.loads(open(f"{result.model_dir}/finetune.json", encoding="utf-8").read())
    assert record["train_ids"] == ["001", "002", "003"] and record["dev_ids"] == ["004"]
    assert set(record["dev_word_f1"]) == {"base", "finetuned"}
    # every epoch was scored on the dev lines, and the kept one's threshold is the model's
    assert all(row["space_prob"] in (0.02, 0.1) and 0 <= row["dev_line_word_f1"] <= 1 for row in record["history"])
    assert record["history"][result.best_epoch]["space_prob"] == result.space_prob


def test_the_engine_reads_the_space_threshold_from_the_model_unless_configured(finetuned):
    result, pages = finetuned
    paths = OcrModelPaths.from_dir(result.model_dir)
    assert OcrEngine.load(paths, threads=1).config.space_prob == result.space_prob
    assert OcrEngine.load(paths, threads=1, config=OcrConfig(space_prob=0.3)).config.space_prob == 0.3
    assert OcrEngine.load(threads=1).config.space_prob == DEFAULT_SPACE_PROB
    # and the fine-tuned model still reads the drawn lines
    import cv2

    lines = OcrEngine.load(paths, threads=1).read_image(cv2.imread(pages[3].image_path)).lines
    assert " ".join(l.text for l in lines).split() == " ".join(PAGES["004"]).split()  # the detector may split a line


def test_overlapping_or_missing_pages_are_refused(sroie_dir, tmp_path):
    pages = load_sroie(str(sroie_dir))
    with pytest.raises(ConfigError, match="overlap"):
        finetune_recognizer(None, pages[:2], str(tmp_path), dev_pages=pages[1:3])
    with pytest.raises(ConfigError, match="at least one"):
        finetune_recognizer(None, [], str(tmp_path))


@pytest.mark.parametrize("n_lines", [1, 3, 4])
def test_training_runs_whatever_the_number_of_steps(n_lines):
    """3 epochs of 3 one-line batches make 10 scheduler steps in all, where a warm-up of a tenth of them would be empty."""
    chars = ["", "A", "B", " "]
    _, encode = case_merged_ctc(chars)
    rng = np.random.default_rng(0)
    lines = [(rng.normal(size=(6, 4)).astype(np.float16), encode("AB")) for _ in range(n_lines)]
    w0, b0 = np.zeros((4, len(chars)), dtype=np.float32), np.zeros(len(chars), dtype=np.float32)
    cfg = FinetuneConfig(epochs=3, batch_size=1, learning_rate=1e-2)
    w, b, history, best = _train_head(lines, [], w0, b0, chars, cfg, log=lambda m: None)
    assert len(history) == 4 and w.shape == w0.shape
    assert history[-1]["train_loss"] < history[0]["train_loss"]

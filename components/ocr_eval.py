"""OCR evaluation on folders in the SROIE layout, for any OCR system (ours or Tesseract).

Layout: ``img/<id>.jpg``; ``box/<id>.csv`` one line per row as
``x1,y1,...,x4,y4,transcript`` (the transcript may contain commas);
``text/<id>.txt`` optional.

Metrics (all micro-averaged over pages, i.e. totals first, then ratios):

* ``det_recall`` / ``det_precision``: a predicted line matches a ground-truth
  line when the IoU of their axis-aligned bounding rectangles is >=
  ``iou_threshold`` (greedy, highest IoU first, one-to-one);
* ``line_cer``: character error rate (edit distance / reference length) over
  matched lines;
* ``cer``: page-level, whitespace-free, reading-order CER: the predicted
  lines and the ground-truth lines are each put in reading order by the
  same function (:func:`transforms.inference.ocr.reading_order`: rows by
  vertical overlap, top to bottom, then left to right), joined with all
  whitespace removed, and compared (edit distance / reference length).
  Ordering both sides alike keeps the figure about the text, not about
  whether a system lists the boxes of a row in the annotators' order;
  ``cer_listed_order`` is the same comparison with each side in the order
  it came in (the system's output order vs the annotation order);
* ``word_f1`` (with ``word_precision``/``word_recall``): page-level bag of
  whitespace-separated words (multiset intersection), case-sensitive. It
  counts a word as right only when its spaces are right, so it punishes a
  recognizer that drops spaces between words;
* ``word_f1_nospace``: the same bag-of-words F1 over tokens that ignore
  whitespace at letter/digit/punctuation boundaries: both sides are split
  into maximal runs of letters, of digits and of punctuation
  (``"TOTAL:9.00"`` -> ``TOTAL``, ``:``, ``9``, ``.``, ``00``). It forgives
  a missing space between a word and a number, not between two words.

Text is compared upper-cased (SROIE's annotators wrote every transcript in
upper case whatever the print's case, so case differences are annotation
artefacts); ``cer_cased`` and ``word_f1_cased`` are the case-sensitive
figures, reported beside them.

The metric code takes plain predicted lines ``(text, box)`` so the same
code scores every candidate and Tesseract.
"""

from __future__ import annotations

import csv
import io
import pathlib
import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from transforms.errors import ConfigError, SourceError

__all__ = [
    "Page",
    "PredLine",
    "aggregate",
    "word_f1_interval",
    "levenshtein",
    "load_sroie",
    "match_boxes",
    "page_counts",
    "split_pages",
    "tesseract_lines",
]


@dataclass(frozen=True)
class Page:
    """A ground-truth page: id, image path and its lines as (text, 4x2 box)."""

    id: str
    image_path: str
    lines: tuple[tuple[str, tuple[tuple[float, float], ...]], ...]


# A predicted line: (text, box as 4 (x, y) points).
PredLine = tuple[str, Sequence[Sequence[float]]]


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bv = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    prev = np.arange(len(b) + 1, dtype=np.int32)
    offs = np.arange(len(b) + 1, dtype=np.int32)
    for i, ch in enumerate(a, start=1):
        code = ord(ch)
        sub = prev[:-1] + (bv != code)
        t = np.empty_like(prev)
        t[0] = i
        t[1:] = np.minimum(prev[1:] + 1, sub)
        # horizontal (insertion) moves: d[j] = min_k<=j (t[k] + j - k)
        prev = np.minimum.accumulate(t - offs) + offs
    return int(prev[-1])


def _parse_box_line(line: str, path: pathlib.Path, n: int):
    parts = line.rstrip("\r\n").split(",", 8)
    if len(parts) < 9:
        raise SourceError(f"{path}:{n}: expected 8 coordinates and a transcript, got {line!r}")
    xy = [float(v) for v in parts[:8]]
    return parts[8], tuple((xy[i], xy[i + 1]) for i in range(0, 8, 2))


def load_sroie(data_dir: str, *, ids: Iterable[str] | None = None, limit: int | None = None) -> list[Page]:
    """Pages of a SROIE-layout folder, sorted by id (``limit`` first ones, or ``ids``)."""
    root = pathlib.Path(data_dir)
    img_dir, box_dir = root / "img", root / "box"
    if not img_dir.is_dir() or not box_dir.is_dir():
        raise SourceError(f"{root} is not in the SROIE layout: it needs img/ and box/ folders")
    wanted = set(ids) if ids is not None else None
    pages = []
    for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        if wanted is not None and img.stem not in wanted:
            continue
        box = box_dir / f"{img.stem}.csv"
        if not box.exists():
            continue
        with open(box, encoding="utf-8", errors="replace") as f:
            lines = tuple(_parse_box_line(l, box, n) for n, l in enumerate(f, 1) if l.strip())
        pages.append(Page(img.stem, str(img), lines))
        if limit is not None and wanted is None and len(pages) >= limit:
            break
    if not pages:
        raise SourceError(f"no annotated images under {root}")
    return pages


def split_pages(data_dir: str, *, n_eval: int | None, n_calibration: int) -> tuple[list[Page], list[Page]]:
    """(evaluation, calibration) pages from one folder, disjoint.

    Evaluation takes the first ``n_eval`` ids (all but the calibration ones
    when None); calibration the last ``n_calibration`` ids.
    """
    pages = load_sroie(data_dir)
    if n_calibration >= len(pages):
        raise ConfigError(f"n_calibration={n_calibration} leaves no evaluation pages out of {len(pages)}")
    calib = pages[len(pages) - n_calibration :] if n_calibration else []
    rest = pages[: len(pages) - n_calibration]
    ev = rest if n_eval is None else rest[:n_eval]
    return ev, calib


def box_rect(box) -> tuple[float, float, float, float]:
    """The axis-aligned (x0, y0, x1, y1) of a quadrilateral or any point list."""
    a = np.asarray(box, dtype=np.float64).reshape(-1, 2)
    return a[:, 0].min(), a[:, 1].min(), a[:, 0].max(), a[:, 1].max()


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) rectangles."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


_WS = re.compile(r"\s+")
_RUNS = re.compile(r"[^\W\d_]+|\d+|[^\w\s]+", re.UNICODE)


def _nospace_tokens(text: str) -> list[str]:
    return [t for t in _RUNS.findall(text)]


def _reading_order(lines: Sequence[PredLine]) -> list[int]:
    from transforms.inference.ocr import reading_order

    return reading_order([np.asarray(b, dtype=np.float32).reshape(-1, 2) for _, b in lines])


def match_boxes(pred: Sequence[tuple], truth: Sequence[tuple], *, iou_threshold: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one (pred index, truth index) pairs of rectangles, greedily by IoU (highest first), each at least ``iou_threshold``."""
    pairs = sorted(((box_iou(p, t), i, j) for i, p in enumerate(pred) for j, t in enumerate(truth)), reverse=True)
    used_p, used_t, matches = set(), set(), []
    for iou, i, j in pairs:
        if iou < iou_threshold:
            break
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        matches.append((i, j))
    return matches


def page_counts(pred: Sequence[PredLine], truth: Page, *, iou_threshold: float = 0.5) -> dict[str, int]:
    """Counts for one page (summed over pages by :func:`aggregate`); ``pred`` in any order."""
    gt = [(t, box_rect(b)) for t, b in truth.lines]
    pr = [(t, box_rect(b)) for t, b in pred]
    matches = match_boxes([r for _, r in pr], [r for _, r in gt], iou_threshold=iou_threshold)
    line_edits = sum(levenshtein(pr[i][0].upper(), gt[j][0].upper()) for i, j in matches)
    line_chars = sum(len(gt[j][0]) for _, j in matches)

    gt_page = "".join(_WS.sub("", gt[j][0]) for j in _reading_order(truth.lines))
    pr_page = "".join(_WS.sub("", pr[i][0]) for i in _reading_order(pred))
    gt_listed = "".join(_WS.sub("", t) for t, _ in gt)
    pr_listed = "".join(_WS.sub("", t) for t, _ in pr)
    gt_cased = Counter(w for t, _ in gt for w in t.split())
    pr_cased = Counter(w for t, _ in pr for w in t.split())
    gt_words = Counter(w.upper() for t, _ in gt for w in t.split())
    pr_words = Counter(w.upper() for t, _ in pr for w in t.split())
    gt_runs = Counter(w.upper() for t, _ in gt for w in _nospace_tokens(t))
    pr_runs = Counter(w.upper() for t, _ in pr for w in _nospace_tokens(t))
    return {
        "pages": 1,
        "n_gt_lines": len(gt),
        "n_pred_lines": len(pr),
        "n_matched": len(matches),
        "line_edits": line_edits,
        "line_chars": line_chars,
        "page_edits": levenshtein(pr_page.upper(), gt_page.upper()),
        "page_edits_cased": levenshtein(pr_page, gt_page),
        "page_edits_listed": levenshtein(pr_listed.upper(), gt_listed.upper()),
        "page_chars": len(gt_page),
        "words_cased_tp": sum((gt_cased & pr_cased).values()),
        "words_tp": sum((gt_words & pr_words).values()),
        "words_gt": sum(gt_words.values()),
        "words_pred": sum(pr_words.values()),
        "runs_tp": sum((gt_runs & pr_runs).values()),
        "runs_gt": sum(gt_runs.values()),
        "runs_pred": sum(pr_runs.values()),
    }


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def aggregate(counts: Iterable[dict[str, int]]) -> dict[str, float]:
    """Micro-averaged metrics from :func:`page_counts` of many pages."""
    tot: Counter = Counter()
    for c in counts:
        tot.update(c)
    if not tot["pages"]:
        raise ConfigError("aggregate got no pages")

    def ratio(a, b):
        return tot[a] / tot[b] if tot[b] else 0.0

    wp, wr = ratio("words_tp", "words_pred"), ratio("words_tp", "words_gt")
    rp, rr = ratio("runs_tp", "runs_pred"), ratio("runs_tp", "runs_gt")
    return {
        "pages": float(tot["pages"]),
        "det_recall": ratio("n_matched", "n_gt_lines"),
        "det_precision": ratio("n_matched", "n_pred_lines"),
        "line_cer": ratio("line_edits", "line_chars"),
        "cer": ratio("page_edits", "page_chars"),
        "word_precision": wp,
        "word_recall": wr,
        "word_f1": _f1(wp, wr),
        "word_f1_nospace": _f1(rp, rr),
        "cer_cased": ratio("page_edits_cased", "page_chars"),
        "cer_listed_order": ratio("page_edits_listed", "page_chars"),
        "word_f1_cased": _f1(ratio("words_cased_tp", "words_pred"), ratio("words_cased_tp", "words_gt")),
    }


def word_f1_interval(
    counts: Sequence[dict[str, int]],
    reference: Sequence[dict[str, int]] | None = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """The ``level`` bootstrap interval over pages of the word F1 of ``counts`` (:func:`page_counts` per page), or,
    with ``reference`` (another system's counts of the same pages, in the same order), of the difference
    F1 - F1(reference), the pages resampled in pairs.

    On thirty receipts the 95% interval is about +-0.02 word F1, wider than
    the differences between quantized candidates; the paired interval says
    whether one reads the same pages better than another. Percentile
    bootstrap, ``n_boot`` resamples, seeded.
    """
    def arrays(cs):
        return np.array([[c.get("words_tp", 0), c.get("words_pred", 0) + c.get("words_gt", 0)] for c in cs], dtype=np.float64)

    if not counts:
        raise ConfigError("word_f1_interval got no pages")
    a = arrays(counts)
    b = arrays(reference) if reference is not None else None
    if b is not None and len(b) != len(a):
        raise ConfigError(f"word_f1_interval: {len(a)} pages against {len(b)} reference pages")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))

    def f1(x):  # micro F1 = 2 tp / (predicted + true words), per resample
        s = x[idx].sum(axis=1)
        return np.divide(2 * s[:, 0], s[:, 1], out=np.zeros(n_boot), where=s[:, 1] > 0)

    stat = f1(a) - (f1(b) if b is not None else 0.0)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stat, [tail, 100 - tail])
    return float(lo), float(hi)


def tesseract_lines(image_path: str, *, lang: str = "eng", psm: int = 3, threads: int = 1, binary: str = "tesseract") -> list[PredLine]:
    """Tesseract's text lines (words grouped by block/paragraph/line) with their bounding boxes."""
    try:
        proc = subprocess.run(
            [binary, image_path, "stdout", "-l", lang, "--psm", str(psm), "tsv"],
            capture_output=True,
            check=True,
            env={"OMP_THREAD_LIMIT": str(threads), "PATH": "/usr/bin:/bin:/usr/local/bin"},
        )
    except FileNotFoundError as e:
        raise SourceError(f"{binary!r} not found: install Debian's tesseract-ocr to run the baseline") from e
    except subprocess.CalledProcessError as e:
        raise SourceError(f"tesseract failed on {image_path}: {e.stderr.decode(errors='replace')[:300]}") from e
    rows = csv.DictReader(io.StringIO(proc.stdout.decode("utf-8", errors="replace")), delimiter="\t", quoting=csv.QUOTE_NONE)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("level") != "5" or not (row.get("text") or "").strip():
            continue
        key = (row["page_num"], row["block_num"], row["par_num"], row["line_num"])
        groups.setdefault(key, []).append(row)
    out: list[PredLine] = []
    for words in groups.values():
        x0 = min(int(w["left"]) for w in words)
        y0 = min(int(w["top"]) for w in words)
        x1 = max(int(w["left"]) + int(w["width"]) for w in words)
        y1 = max(int(w["top"]) + int(w["height"]) for w in words)
        text = " ".join(w["text"].strip() for w in words)
        out.append((text, ((x0, y0), (x1, y0), (x1, y1), (x0, y1))))
    return out

"""Fine-tune the OCR recognizer's output layer on labelled text lines.

The shipped PP-OCRv4 recognizer was trained for Chinese and English print.
On receipts it reads the characters well and the spacing less so: with
word F1 counted on whitespace-separated words, about half of what it loses
on SROIE is a space too many or too few ("CASH IER", "TAX(RM)" for
"TAX (RM)"; 0.832 word F1 on the evaluation receipts, 0.917 with spaces
ignored).
Its CTC head (a MatMul + Add from the sequence encoder's features to the
6,625 classes, 120 x 6,625 weights on PP-OCRv4) is the layer that decides
per column; this module retrains just that layer on a user's own labelled
lines, and leaves the rest of the graph as it is, so every quantization
candidate of :mod:`components.ocr_quantize` builds from the result as from
the shipped model.

* Lines: the engine's own detections on each training page matched to the
  ground-truth boxes (IoU >= ``iou``), cropped as at inference; the text is
  the ground truth. Lines with characters outside the recognizer's set are
  skipped and counted.
* Features: the FP32 graph's input to the head, computed once per line
  (onnxruntime), for the columns the decoder reads.
* Loss: CTC over case-merged classes (a letter's upper- and lower-case
  probabilities summed), so that upper-case receipts do not teach the model
  to upper-case product copy.
* Training: Adam with a one-cycle schedule, length-sorted mini-batches.
  After every epoch the dev lines are decoded from their features by the
  engine's own decoder at each candidate space threshold
  (``OcrConfig.space_prob``); the epoch and threshold with the best word
  F1 are kept (epoch 0, the model as given, included), and the threshold
  is written into the recognizer's metadata (``aisle_space_prob``), which
  :class:`OcrEngine` uses unless the config sets one.

Measured on SROIE (trained on receipts 160-358, chosen on 060-158; see
benchmarks/README.md).

    python -m components.ocr_finetune --data ../shared/data/ocr/sroie --train-ids 160-358 --dev-ids 060-158 \\
        --out out/models/ocr/finetuned
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from components.ocr_eval import Page, _f1, aggregate, box_rect, load_sroie, match_boxes, page_counts
from transforms.errors import ConfigError, ModelLoadError
from transforms.inference.ocr import (
    SPACE_PROB_KEY,
    OcrConfig,
    OcrEngine,
    OcrModelPaths,
    _session,
    read_columns,
)

__all__ = ["FinetuneConfig", "FinetuneResult", "case_merged_ctc", "decoded_word_f1", "finetune_recognizer", "head_tensors", "labelled_lines",
           "line_examples", "line_word_f1", "training_cli"]

_PASS_THROUGH = ("Reshape", "Softmax", "Flatten", "Identity")


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 6
    learning_rate: float = 1e-3  # on receipts 060-158 (dev): 3e-4 / 1e-3 / 3e-3 gave word F1 0.879 / 0.885 / 0.886 (see benchmarks/README.md)
    batch_size: int = 32
    iou: float = 0.5  # a detected line is labelled by the ground-truth line it overlaps this much
    seed: int = 13
    space_probs: tuple[float, ...] = (0.02, 0.05, 0.1, 0.15, 0.2)  # space thresholds tried on the dev pages
    threads: int | None = None  # torch and onnxruntime threads (None: the machine's)


@dataclass
class FinetuneResult:
    model_dir: str
    train_lines: int
    dev_lines: int
    skipped_lines: dict[str, int]
    history: list[dict] = field(default_factory=list)  # per epoch: train and dev loss
    best_epoch: int = 0
    space_prob: float | None = None
    dev_word_f1: dict[str, float] = field(default_factory=dict)  # whole dev pages: "base" (the model given), "finetuned"
    seconds: float = 0.0


# --------------------------------------------------------------------------- the graph's head


def _producers(graph) -> dict:
    return {out: n for n in graph.node for out in n.output}


def head_tensors(model) -> tuple[str, str, str]:
    """(features, weight, bias) names of the recognizer's CTC head: the ``MatMul`` + ``Add`` whose output
    reaches the graph's output through reshapes and the softmax only."""
    graph = model.graph
    prod = _producers(graph)
    name = graph.output[0].name
    node = prod.get(name)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = prod.get(node.input[0])
    if node is None or node.op_type != "Add":
        raise ModelLoadError("the recognizer's output is not a softmax over MatMul + Add: no CTC head to fine-tune")
    consts = _constants(graph)
    bias = next((i for i in node.input if i in consts), None)
    mm = next((prod.get(i) for i in node.input if i not in consts), None)
    if bias is None or mm is None or mm.op_type != "MatMul" or mm.input[1] not in consts:
        raise ModelLoadError("the recognizer's head is not MatMul(features, W) + b with constant W and b")
    return mm.input[0], mm.input[1], bias


def _constants(graph) -> dict:
    """Name -> TensorProto of every initializer and Constant node output."""
    out = {t.name: t for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = n.attribute[0].t
    return out


def _set_constant(graph, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    for t in graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(value, name))
            return
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            n.attribute[0].t.CopyFrom(numpy_helper.from_array(value, name))
            return
    raise ModelLoadError(f"no constant {name!r} in the recognizer")


# --------------------------------------------------------------------------- training lines


def line_examples(
    engine: OcrEngine, pages: Sequence[Page], *, iou: float = 0.5, detections: dict | None = None
) -> tuple[list[tuple[str, np.ndarray, str]], dict[str, int]]:
    """(page id, crop, ground-truth text) of every detected line matched to a ground-truth line, and the
    counts of lines left out by reason (``unmatched``: no detection overlaps it; ``vertical``). Each page's
    detected boxes go into ``detections`` (page id -> boxes) when it is given."""
    import cv2

    examples, skipped = [], {"unmatched": 0, "vertical": 0}
    for page in pages:
        image = cv2.imread(page.image_path)
        if image is None:
            raise ConfigError(f"cannot read training image {page.image_path}")
        boxes = engine.detect(image)
        if detections is not None:
            detections[page.id] = boxes
        matches = match_boxes([box_rect(b) for b in boxes], [box_rect(b) for _, b in page.lines], iou_threshold=iou)
        for i, j in matches:
            crop = engine.line_crop(image, boxes[i])
            if crop.shape[0] >= engine.config.vertical_ratio * crop.shape[1]:
                skipped["vertical"] += 1
                continue
            examples.append((page.id, crop, page.lines[j][0]))
        skipped["unmatched"] += len(page.lines) - len(matches)
    return examples, skipped


def labelled_lines(engine: OcrEngine, pages: Sequence[Page], encode, skipped: dict, *, iou: float = 0.5,
                   detections: dict | None = None) -> list[tuple[np.ndarray, list[int], str]]:
    """(crop, CTC target, text) of every detected line matched to a ground-truth line whose text ``encode``
    can spell; the lines left out are added to ``skipped`` by reason (``charset`` for the spelling)."""
    examples, skip = line_examples(engine, pages, iou=iou, detections=detections)
    for k, v in skip.items():
        skipped[k] = skipped.get(k, 0) + v
    kept = [(crop, encode(text), text) for _, crop, text in examples]
    skipped["charset"] = skipped.get("charset", 0) + sum(t is None for _, t, _ in kept)
    return [k for k in kept if k[1]]


def _feature_session(rec_path: str, feature_name: str, threads: int | None):
    """An onnxruntime session of the recognizer that also outputs the head's input."""
    import tempfile

    import onnx

    model = onnx.load(rec_path)
    model.graph.output.append(onnx.helper.make_tensor_value_info(feature_name, onnx.TensorProto.FLOAT, [None, None, None]))  # (lines, columns, features)
    with tempfile.TemporaryDirectory(prefix="aisle-ocr-features-") as tmp:
        path = os.path.join(tmp, "rec.onnx")
        onnx.save(model, path)
        return _session(path, threads)


def _features(session, engine: OcrEngine, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The head's input for each crop (float16, the columns the decoder reads), from :func:`_feature_session`."""
    name = session.get_inputs()[0].name
    out = []
    for crop in crops:
        ratio = crop.shape[1] / max(crop.shape[0], 1)
        batch, widths = engine._rec_batch([crop], np.array([0]), [ratio])
        probs, feats = session.run(None, {name: batch})
        out.append(np.asarray(feats[0, : read_columns(probs.shape[1], widths[0], batch.shape[3])], dtype=np.float16))
    return out


# --------------------------------------------------------------------------- the loss


def case_merged_ctc(characters: Sequence[str]):
    """``(loss_fn, encode)`` for CTC over ``characters`` (index 0: blank) with each letter's cases merged.

    ``loss_fn(logits [B, T, C], lengths, targets)`` sums the two cases' probabilities of a letter before
    the CTC loss (mean over the batch, each line's loss divided by its target length); ``encode(text)``
    gives a line's target indices in the merged classes, or None when a character is not in the set.
    """
    import torch

    index = {c: i for i, c in enumerate(characters) if c}
    pairs = [(index[c], index[c.lower()]) for c in index if len(c) == 1 and c.isupper() and c.lower() in index and c.lower() != c]
    lower = {lo for _, lo in pairs}
    keep = [k for k in range(len(characters)) if k not in lower]
    merged = {k: n for n, k in enumerate(keep)}
    for up, lo in pairs:
        merged[lo] = merged[up]
    up_t = torch.tensor([u for u, _ in pairs], dtype=torch.long)
    lo_t = torch.tensor([lo for _, lo in pairs], dtype=torch.long)
    keep_t = torch.tensor(keep, dtype=torch.long)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True, reduction="mean")

    def encode(text: str):
        ids = []
        for ch in " ".join(text.split()):
            if ch not in index:
                return None
            ids.append(merged[index[ch]])
        return ids

    def loss_fn(logits, lengths, targets):
        lp = torch.log_softmax(logits, -1)
        if len(pairs):
            lp = lp.index_copy(-1, up_t, torch.logaddexp(lp[..., up_t], lp[..., lo_t]))
        lp = lp[..., keep_t]
        flat = torch.cat([torch.as_tensor(t, dtype=torch.long) for t in targets])
        return ctc(lp.transpose(0, 1), flat, torch.as_tensor(lengths), torch.tensor([len(t) for t in targets]))

    return loss_fn, encode


def _train_head(train, dev, w0: np.ndarray, b0: np.ndarray, characters, cfg: FinetuneConfig, log,
                score: Callable[[np.ndarray, np.ndarray], tuple[float, float]] | None = None) -> tuple[np.ndarray, np.ndarray, list[dict], int]:
    """Adam on (features, target) lines. Keeps the weights of the epoch (0 = as given) with the best
    ``score(w, b)`` (higher is better, the last of equals; its second value is recorded as ``space_prob``),
    or with the lowest training loss when there is no scorer. The dev loss is recorded, not used: it can
    rise while the dev pages read better (a head trained on 160-298 raised the CTC loss of 300-358 from
    0.114 to 0.128 and their word F1 from 0.871 to 0.889)."""
    import torch

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    loss_fn, _ = case_merged_ctc(characters)
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float32))
    b = torch.nn.Parameter(torch.tensor(b0, dtype=torch.float32))
    opt = torch.optim.Adam([w, b], lr=cfg.learning_rate)

    def batches(lines, shuffle: bool):
        order = sorted(range(len(lines)), key=lambda i: len(lines[i][0]))  # similar lengths: little padding
        chunks = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        if shuffle:
            rng.shuffle(chunks)
        return chunks

    def loss_of(lines, ids):
        feats = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(lines[i][0].astype(np.float32)) for i in ids], batch_first=True)
        return loss_fn(feats @ w + b, [len(lines[i][0]) for i in ids], [lines[i][1] for i in ids])

    def mean_loss(lines) -> float:
        with torch.no_grad():
            parts = [(loss_of(lines, ids).item(), len(ids)) for ids in batches(lines, False)]
        return sum(l * n for l, n in parts) / max(1, sum(n for _, n in parts))

    def record(epoch: int, row: dict):
        if score is not None:
            f1, sp = score(w.detach().numpy(), b.detach().numpy())
            row.update(dev_line_word_f1=round(f1, 4), space_prob=sp)
            key = f1
        else:
            key = -row["train_loss"]
        history.append(row)
        log(f"epoch {epoch}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "epoch"))
        return key

    steps = cfg.epochs * len(batches(train, False))
    total = max(steps, 1) + 1
    # warm-up over a tenth of the steps, and at least one (torch divides by the warm-up's length: 0 at 10 steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.learning_rate, total_steps=total, pct_start=max(0.1, 2 / total))
    history: list[dict] = []
    first = {"epoch": 0, "train_loss": round(mean_loss(train), 4), "dev_loss": round(mean_loss(dev), 4) if dev else None}
    best = (record(0, first), 0, w0, b0)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        seen = []
        for ids in batches(train, True):
            loss = loss_of(train, ids)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen.append(loss.item() * len(ids))
        row = {"epoch": epoch, "train_loss": round(sum(seen) / len(train), 4), "dev_loss": round(mean_loss(dev), 4) if dev else None,
               "seconds": round(time.perf_counter() - t0, 1)}
        key = record(epoch, row)
        if key >= best[0]:
            best = (key, epoch, w.detach().numpy().copy(), b.detach().numpy().copy())
    return best[2], best[3], history, best[1]


def _words(text: str) -> Counter:
    return Counter(text.upper().split())


def decoded_word_f1(decoders: dict, lines) -> dict:
    """Word F1 of ``lines`` ((probabilities [columns, classes], ground-truth text) pairs) read by each engine's
    decoder (``{key: engine}``): the page metric's bag of words, upper-cased, summed over the lines (the
    decoder's spacing, punctuation and digit rules included). Returns ``{key: F1}``."""
    tp = {k: 0 for k in decoders}
    n_pred = {k: 0 for k in decoders}
    n_true = 0
    for probs, text in lines:
        truth = _words(text)
        n_true += sum(truth.values())
        for k, engine in decoders.items():
            pred = _words(engine._decode(probs, len(probs))[0])
            tp[k] += sum((pred & truth).values())
            n_pred[k] += sum(pred.values())
    return {k: _f1(tp[k] / max(n_pred[k], 1), tp[k] / max(n_true, 1)) for k in decoders}


def line_word_f1(engines: dict, feats: Sequence[np.ndarray], texts: Sequence[str], w: np.ndarray, b: np.ndarray) -> dict:
    """:func:`decoded_word_f1` of lines given by their head features, through the head ``(w, b)``."""

    def probs(f):
        logits = f.astype(np.float32) @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    return decoded_word_f1(engines, ((probs(f), text) for f, text in zip(feats, texts)))


# --------------------------------------------------------------------------- the whole step


def _word_f1(engine: OcrEngine, pages: Sequence[Page], detections: dict) -> float:
    """Word F1 of ``engine`` on ``pages``, reading the lines at ``detections[page id]`` (detected once for all)."""
    import cv2

    counts = []
    for page in pages:
        boxes = detections[page.id]
        engine.detect = lambda _image, _boxes=boxes: _boxes
        result = engine.read_image(cv2.imread(page.image_path))
        counts.append(page_counts([(l.text, l.box) for l in result.lines], page))
    return aggregate(counts)["word_f1"]


def finetune_recognizer(
    base: OcrModelPaths | str | None,
    train_pages: Sequence[Page],
    out_dir: str,
    *,
    dev_pages: Sequence[Page] = (),
    config: FinetuneConfig = FinetuneConfig(),
    log: Callable[[str], None] = lambda msg: None,
) -> FinetuneResult:
    """Retrain the recognizer's CTC head on ``train_pages`` and write the model folder ``out_dir``.

    ``base``: a model folder (``det.onnx``, ``rec.onnx``, ``cls.onnx``), :class:`OcrModelPaths`, or None
    for the shipped PP-OCRv4 models. ``out_dir`` gets the detector and classifier as they are, the
    recognizer with the new head (its character set and other metadata kept, the chosen space threshold
    added) and ``finetune.json`` with the figures. ``dev_pages`` (disjoint from the training pages) pick
    the epoch and the space threshold by word F1; without them the epoch with the lowest training loss is
    kept and the model keeps the base threshold.
    """
    import onnx
    import torch

    start = time.perf_counter()
    paths = base if isinstance(base, OcrModelPaths) else (OcrModelPaths.from_dir(base) if base else OcrModelPaths.default())
    overlap = {p.id for p in train_pages} & {p.id for p in dev_pages}
    if overlap:
        raise ConfigError(f"training and dev pages overlap: {sorted(overlap)[:5]}")
    if not train_pages:
        raise ConfigError("fine-tuning needs at least one training page")
    if config.threads:
        torch.set_num_threads(config.threads)
    model = onnx.load(paths.rec)
    feature_name, w_name, b_name = head_tensors(model)
    consts = _constants(model.graph)
    w0 = onnx.numpy_helper.to_array(consts[w_name]).astype(np.float32)
    b0 = onnx.numpy_helper.to_array(consts[b_name]).astype(np.float32)

    engine = OcrEngine.load(paths, threads=config.threads, parallel_crops=False)
    characters = engine.characters
    _, encode = case_merged_ctc(characters)
    skipped = {"unmatched": 0, "vertical": 0, "charset": 0, "too_narrow": 0}
    detections: dict[str, list] = {}  # page id -> detected boxes (the dev pages' are read again below)

    feature_session = _feature_session(paths.rec, feature_name, config.threads)

    def lines_of(pages, what):
        kept = labelled_lines(engine, pages, encode, skipped, iou=config.iou, detections=detections)
        feats = _features(feature_session, engine, [c for c, _, _ in kept])
        lines = [(f, t, text) for f, (_, t, text) in zip(feats, kept) if len(t) <= len(f)]  # CTC needs a column per character
        skipped["too_narrow"] += len(kept) - len(lines)
        log(f"{what}: {len(lines)} lines from {len(pages)} pages")
        return lines

    train = lines_of(train_pages, "training")
    dev = lines_of(dev_pages, "dev") if dev_pages else []
    if not train:
        raise ConfigError("no training line matched a detection: check the pages' boxes")
    score = None
    if dev:
        decoders = {sp: engine.with_config(OcrConfig(space_prob=sp)) for sp in config.space_probs}

        def score(w, b):  # the best threshold's word F1 on the dev lines, and that threshold (the first of equals)
            by_sp = line_word_f1(decoders, [f for f, _, _ in dev], [text for _, _, text in dev], w, b)
            sp = max(config.space_probs, key=by_sp.get)
            return by_sp[sp], sp

    w, b, history, best_epoch = _train_head([(f, t) for f, t, _ in train], [(f, t) for f, t, _ in dev], w0, b0, characters, config, log, score)
    engine.close()

    os.makedirs(out_dir, exist_ok=True)
    for src, name in ((paths.det, "det.onnx"), (paths.cls, "cls.onnx")):
        if src:
            shutil.copyfile(src, os.path.join(out_dir, name))
    _set_constant(model.graph, w_name, w.astype(np.float32))
    _set_constant(model.graph, b_name, b.astype(np.float32))
    result = FinetuneResult(out_dir, len(train), len(dev), skipped, history, best_epoch)
    if dev:
        result.space_prob = history[best_epoch]["space_prob"]
        model.metadata_props.add(key=SPACE_PROB_KEY, value=str(result.space_prob))
    onnx.save(model, os.path.join(out_dir, "rec.onnx"))
    if dev:  # whole dev pages, read with the boxes detected above: the base model, then the fine-tuned one
        for key, where in (("base", paths), ("finetuned", OcrModelPaths.from_dir(out_dir))):
            reader = OcrEngine.load(where, threads=config.threads)
            result.dev_word_f1[key] = round(_word_f1(reader, dev_pages, detections), 4)
            reader.close()
        log(f"dev pages, word F1: {result.dev_word_f1['base']} with the base model, {result.dev_word_f1['finetuned']} fine-tuned "
            f"(epoch {best_epoch}, space threshold {result.space_prob})")
    result.seconds = round(time.perf_counter() - start, 1)
    record = {**asdict(result), "config": asdict(config), "base": paths._asdict(),
              "train_ids": [p.id for p in train_pages], "dev_ids": [p.id for p in dev_pages]}
    with open(os.path.join(out_dir, "finetune.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    return result


def id_range(spec: str) -> Callable[[str], bool]:
    """``"160-358"`` -> a test of page ids in that (inclusive, string-ordered) range; ``"a,b,c"`` -> those ids."""
    if "-" in spec and "," not in spec:
        lo, hi = spec.split("-", 1)
        return lambda i: lo <= i <= hi
    ids = {s.strip() for s in spec.split(",") if s.strip()}
    return lambda i: i in ids


def training_cli(train: Callable, config_type: type, argv: Sequence[str] | None, *, prog: str, out: str, base_help: str,
                 base_required: bool, report: Sequence[str]) -> None:
    """The command line both recognizer trainings share: pages by id from ``--data``, ``train(base, train_pages,
    out_dir, dev_pages=, config=, log=)`` with ``config_type(epochs=, learning_rate=, threads=)``, and the result's
    ``report`` fields printed as JSON."""
    import argparse

    defaults = config_type()
    parser = argparse.ArgumentParser(prog=prog, description=train.__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="labelled pages in the SROIE layout (img/, box/)")
    parser.add_argument("--train-ids", required=True, help="training page ids: a range (160-358) or a comma list")
    parser.add_argument("--dev-ids", default="", help="dev page ids (pick the space threshold, and the epoch where there is a choice)")
    parser.add_argument("--base", required=base_required, default=None, help=base_help)
    parser.add_argument("--out", default=out, help="model folder to write")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    pages = load_sroie(args.data)
    train_pages = [p for p in pages if id_range(args.train_ids)(p.id)]
    dev_pages = [p for p in pages if args.dev_ids and id_range(args.dev_ids)(p.id)]
    cfg = config_type(epochs=args.epochs, learning_rate=args.learning_rate, threads=args.threads)
    result = train(args.base, train_pages, args.out, dev_pages=dev_pages, config=cfg, log=lambda m: print(m, flush=True))
    print(json.dumps({k: getattr(result, k) for k in report}))


def _cli(argv: Sequence[str] | None = None) -> None:
    """``python -m components.ocr_finetune --data DIR --train-ids A-B [--dev-ids C-D] --out DIR``."""
    training_cli(finetune_recognizer, FinetuneConfig, argv, prog="python -m components.ocr_finetune", out="out/models/ocr/finetuned",
                 base_help="model folder to start from (default: the shipped PP-OCRv4 models)", base_required=False,
                 report=("model_dir", "train_lines", "best_epoch", "space_prob", "dev_word_f1", "seconds"))


if __name__ == "__main__":
    _cli()

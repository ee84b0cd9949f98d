"""Quantization-aware fine-tuning of the OCR recognizer, for the ``int8_qat`` candidate.

Post-training INT8 of the PP-OCRv4 recognizer costs word F1 on small print
(lines enlarged to its 48-pixel input), however it is calibrated: ranges
calibrated on small-print copies as well read the same as the plain ones
(0.7472 against 0.7481 on receipts 060-158 made into scans). This module
retrains the recognizer's convolutions and its CTC head with the INT8
arithmetic simulated, so the weights learn to read through it:

* the graph is the FP32 candidate's recognizer (opset 13, affines folded
  into the convolutions), the one static INT8 quantizes, run in PyTorch by
  :class:`TorchGraph` (an ONNX graph evaluated op by op with torch ops, so
  the gradients reach every convolution);
* every convolution sees what ``QuantizeLinear``/``DequantizeLinear`` do to
  it in the static INT8 model of :mod:`components.ocr_quantize`: its input
  and output rounded to 8 bits (unsigned, over the ranges a calibration on
  the training crops gives at the same percentile) and its weights to 8
  bits per output channel (symmetric), with straight-through gradients
  (``torch.fake_quantize_*``);
* loss: the case-merged CTC of :mod:`components.ocr_finetune` on the
  training lines (the engine's detections matched to the ground truth);
* the space threshold is chosen on the dev lines, read through the
  simulated INT8 model, and written into the model's metadata
  (``aisle_space_prob``), which quantization keeps.

The result is an FP32 model folder (``rec.onnx`` retrained, ``det.onnx`` and
``cls.onnx`` copied); ``components.ocr_quantize.build_qat_candidate`` turns
it into the INT8 candidate with the same static settings as ``int8_static``.

A small interpreter instead of onnx2torch: onnx2torch imports torchvision,
whose builds for this stack need torch >= 2.14 (the project pins 2.13). The
recognizer needs 23 op types; an op it does not run is a
``ConfigError`` that names it.

    python -m components.ocr_qat --data ../shared/data/ocr/sroie --base out/models/ocr/fp32 \\
        --train-ids 160-358 --dev-ids 060-158 --out out/models/ocr/qat_fp32
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from components.ocr_eval import Page
from components.ocr_finetune import case_merged_ctc, decoded_word_f1, head_tensors, labelled_lines, training_cli
from transforms.errors import ConfigError, ModelLoadError
from transforms.inference.ocr import SPACE_PROB_KEY, OcrConfig, OcrEngine, OcrModelPaths, read_columns

__all__ = ["QatConfig", "QatResult", "TorchGraph", "activation_ranges", "qat_recognizer"]


# --------------------------------------------------------------------------- ONNX graph in torch


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _ints(t) -> list[int]:
    return [int(v) for v in np.asarray(t.tolist() if hasattr(t, "tolist") else t).reshape(-1)]


def _conv(x, w, b=None, *, pads=(0, 0, 0, 0), strides=(1, 1), dilations=(1, 1), group=1, **_):
    import torch.nn.functional as F

    top, left, bottom, right = pads
    if (top, left) != (bottom, right):
        x = F.pad(x, (left, right, top, bottom))
        top = left = 0
    return F.conv2d(x, w, b, tuple(strides), (top, left), tuple(dilations), group)


def _slice(x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st != 1:
            raise ConfigError("Slice with a step other than 1 is not supported by TorchGraph")
        n = x.shape[a]
        index[a] = slice(max(min(s, n), -n), max(min(e, n), -n - 1))
    return x[tuple(index)]


def _reshape(x, shape):
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(_ints(shape))]
    return x.reshape(dims)


def _reduce_mean(x, axes=None, keepdims=1):
    return x.mean(dim=tuple(_ints(axes)) if axes is not None else None, keepdim=bool(keepdims))


def _avg_pool(x, *, kernel_shape, strides=None, pads=(0, 0, 0, 0), ceil_mode=0, count_include_pad=0, **_):
    import torch.nn.functional as F

    top, left, bottom, right = pads
    if (top, left) != (bottom, right):
        raise ConfigError("AveragePool with uneven padding is not supported by TorchGraph")
    return F.avg_pool2d(x, tuple(kernel_shape), tuple(strides or kernel_shape), (top, left), bool(ceil_mode), bool(count_include_pad))


def _cast(x, *, to):
    import onnx
    import torch

    dtype = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32,
             onnx.TensorProto.BOOL: torch.bool, onnx.TensorProto.DOUBLE: torch.float64}.get(to)
    if dtype is None:
        raise ConfigError(f"Cast to ONNX type {to} is not supported by TorchGraph")
    return x.to(dtype)


def _ops() -> dict[str, Callable]:
    import torch

    def flatten(x, axis=1):
        return x.reshape(int(np.prod(x.shape[:axis])), -1)

    def squeeze(x, axes=None):
        if axes is None:
            return x.squeeze()
        for a in sorted((a % x.dim() for a in _ints(axes)), reverse=True):
            x = x.squeeze(a)
        return x

    def unsqueeze(x, axes):
        axes = _ints(axes)
        for a in sorted(a % (x.dim() + len(axes)) for a in axes):
            x = x.unsqueeze(a)
        return x

    return {
        "Add": lambda a, b: a + b,
        "Sub": lambda a, b: a - b,
        "Mul": lambda a, b: a * b,
        "Div": lambda a, b: a / b,
        "Pow": lambda a, b: torch.pow(a, b),
        "Sqrt": torch.sqrt,
        "Relu": torch.relu,
        "Sigmoid": torch.sigmoid,
        "HardSigmoid": lambda x, alpha=0.2, beta=0.5: torch.clamp(alpha * x + beta, 0.0, 1.0),
        "HardSwish": lambda x: x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0),
        "MatMul": torch.matmul,
        "Softmax": lambda x, axis=-1: torch.softmax(x, dim=axis),
        "Transpose": lambda x, perm=None: x.permute(*perm) if perm is not None else x.permute(*reversed(range(x.dim()))),
        "Concat": lambda *xs, axis: torch.cat(xs, dim=axis),
        "Shape": lambda x: torch.tensor(list(x.shape), dtype=torch.int64),
        "Reshape": _reshape,
        "Slice": _slice,
        "Squeeze": squeeze,
        "Unsqueeze": unsqueeze,
        "Flatten": flatten,
        "ReduceMean": _reduce_mean,
        "GlobalAveragePool": lambda x: x.mean(dim=(2, 3), keepdim=True),
        "AveragePool": _avg_pool,
        "Cast": _cast,
        "Identity": lambda x: x,
        "Clip": lambda x, lo=None, hi=None, min=None, max=None: torch.clamp(
            x, lo if lo is not None else min, hi if hi is not None else max),
        "BatchNormalization": lambda x, scale, bias, mean, var, epsilon=1e-5, **_: torch.nn.functional.batch_norm(
            x, mean, var, scale, bias, False, 0.0, epsilon),
        "Conv": _conv,
    }


class TorchGraph:
    """An ONNX graph run in PyTorch, op by op, with chosen initializers as trainable parameters.

    ``trainable``: initializer names that become ``torch.nn.Parameter`` (:attr:`params`); the other
    constants are tensors without gradients. ``conv_hook(node, x, w) -> (x, w)`` and ``conv_out_hook(node,
    y) -> y`` wrap every convolution (fake quantization goes there). ``outputs`` picks the tensors
    :meth:`__call__` returns (default: the graph's outputs).
    """

    def __init__(self, model, trainable: Sequence[str] = (), outputs: Sequence[str] | None = None):
        import onnx
        import torch

        graph = model.graph
        self._ops = _ops()
        self.nodes = [n for n in graph.node if n.op_type != "Constant"]
        unknown = sorted({n.op_type for n in self.nodes} - set(self._ops))
        if unknown:
            raise ConfigError(f"TorchGraph cannot run op types {unknown}; it runs {sorted(self._ops)}")
        self.consts: dict[str, object] = {}
        for t in graph.initializer:
            self.consts[t.name] = torch.from_numpy(onnx.numpy_helper.to_array(t).copy())
        for n in graph.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = torch.from_numpy(onnx.numpy_helper.to_array(_attrs(n)["value"]).copy())
        missing = [t for t in trainable if t not in self.consts]
        if missing:
            raise ModelLoadError(f"no initializers {missing[:3]} in the graph")
        self.params = {t: torch.nn.Parameter(self.consts[t].float()) for t in trainable}
        self.consts.update(self.params)
        self.input_name = next(i.name for i in graph.input if i.name not in self.consts)
        self.outputs = list(outputs) if outputs else [o.name for o in graph.output]
        self.attrs = [_attrs(n) for n in self.nodes]
        self.conv_hook: Callable | None = None
        self.conv_out_hook: Callable | None = None

    def __call__(self, x):
        env = dict(self.consts)
        env[self.input_name] = x
        for node, attrs in zip(self.nodes, self.attrs):
            args = [env[i] if i else None for i in node.input]
            while args and args[-1] is None:
                args.pop()
            op = node.op_type
            if op == "Conv":
                xin, w = args[0], args[1]
                if self.conv_hook is not None:
                    xin, w = self.conv_hook(node, xin, w)
                y = _conv(xin, w, args[2] if len(args) > 2 else None, **attrs)
                if self.conv_out_hook is not None:
                    y = self.conv_out_hook(node, y)
                env[node.output[0]] = y
                continue
            if op in ("Squeeze", "Unsqueeze", "ReduceMean") and "axes" in attrs:  # older opsets: axes an attribute, not an input
                attrs = dict(attrs)
                args = [args[0], attrs.pop("axes")]
            env[node.output[0]] = self._ops[op](*args, **attrs)
        return [env[o] for o in self.outputs]

    def state(self) -> dict[str, np.ndarray]:
        """The trainable initializers' current values."""
        return {k: v.detach().numpy().astype(np.float32) for k, v in self.params.items()}


# --------------------------------------------------------------------------- fake quantization


def activation_ranges(graph: TorchGraph, feeds: Sequence[np.ndarray], percentile: float) -> dict[str, tuple[float, float]]:
    """Per convolution input and output tensor: (low, high) as onnxruntime's percentile calibration sets
    them: the ``percentile`` of the absolute values as the bound, cut to the observed minimum and maximum,
    and widened to include 0."""
    import torch

    seen: dict[str, list[np.ndarray]] = {}

    def keep(name, t):  # every k-th value, at most about 20,000 a feed (256 crops: over a million values a tensor)
        a = t.detach().reshape(-1).numpy()
        seen.setdefault(name, []).append(a[:: max(1, a.size // 20_000)].copy())

    def pre(node, x, w):
        keep(node.input[0], x)
        return x, w

    def post(node, y):
        keep(node.output[0], y)
        return y

    graph.conv_hook, graph.conv_out_hook = pre, post
    try:
        with torch.no_grad():
            for f in feeds:
                graph(torch.from_numpy(f))
    finally:
        graph.conv_hook = graph.conv_out_hook = None
    out = {}
    for name, parts in seen.items():
        a = np.concatenate(parts)
        bound = float(np.percentile(np.abs(a), percentile))
        out[name] = (min(max(float(a.min()), -bound), 0.0), max(min(float(a.max()), bound), 0.0))
    return out


def fake_quant_hooks(ranges: dict[str, tuple[float, float]]):
    """(conv_hook, conv_out_hook) that round a convolution's input and output to unsigned 8 bits over
    ``ranges`` and its weights to signed 8 bits per output channel (symmetric), as the static QDQ model
    does; gradients pass straight through."""
    import torch

    def act(name, x):
        lo, hi = ranges[name]
        scale = max((hi - lo) / 255.0, 1e-8)
        return torch.fake_quantize_per_tensor_affine(x, scale, int(round(-lo / scale)), 0, 255)

    def pre(node, x, w):
        s = (w.detach().abs().amax(dim=tuple(range(1, w.dim()))) / 127.0).clamp_min(1e-8)
        wq = torch.fake_quantize_per_channel_affine(w, s, torch.zeros_like(s, dtype=torch.int32), 0, -128, 127)
        return act(node.input[0], x), wq

    def post(node, y):
        return act(node.output[0], y)

    return pre, post


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class QatConfig:
    epochs: int = 1
    learning_rate: float = 2e-5  # Adam, one-cycle; 1 epoch at 2e-5 measured (benchmarks/README.md)
    batch_size: int = 16
    iou: float = 0.5
    percentile: float = 99.99  # activation ranges, as components.ocr_quantize.REC_PERCENTILE
    calibration_crops: int = 256
    space_probs: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6)  # 0.4 chosen on receipts 060-158 when 0.4 was the largest tried
    seed: int = 13
    threads: int | None = None


@dataclass
class QatResult:
    model_dir: str
    train_lines: int
    dev_lines: int
    skipped_lines: dict[str, int]
    history: list[dict] = field(default_factory=list)
    space_prob: float | None = None
    dev_line_word_f1: float | None = None  # the dev lines read through the simulated INT8 model, at the chosen threshold
    seconds: float = 0.0


def _head(model) -> tuple[str, str, str]:
    """(logits tensor, head weight, head bias): the CTC head's output before the softmax, and its initializers."""
    _, w_name, b_name = head_tensors(model)
    add = next(n for n in model.graph.node if n.op_type == "Add" and b_name in n.input)
    return add.output[0], w_name, b_name


def _dev_word_f1(engine: OcrEngine, decoders: dict, graph: TorchGraph, crops: Sequence[np.ndarray], texts: Sequence[str]) -> dict:
    """:func:`components.ocr_finetune.decoded_word_f1` of the dev lines read through ``graph``."""
    import torch

    def lines():
        with torch.no_grad():
            for ids in _plan(crops, 32):
                batch, widths = engine._rec_batch(crops, np.asarray(ids), [_ratio(crops[i]) for i in ids])
                probs = torch.softmax(graph(torch.from_numpy(batch))[0], -1).numpy()
                for k, i in enumerate(ids):
                    yield probs[k, : read_columns(probs.shape[1], widths[k], batch.shape[3])], texts[i]

    return decoded_word_f1(decoders, lines())


def _ratio(crop: np.ndarray) -> float:
    return crop.shape[1] / max(crop.shape[0], 1)


def _plan(crops: Sequence[np.ndarray], size: int) -> list[list[int]]:
    """Crop indices in batches of ``size`` crops of similar aspect ratio (little padding)."""
    order = sorted(range(len(crops)), key=lambda i: _ratio(crops[i]))
    return [order[s : s + size] for s in range(0, len(order), size)]


def qat_recognizer(
    base: OcrModelPaths | str,
    train_pages: Sequence[Page],
    out_dir: str,
    *,
    dev_pages: Sequence[Page] = (),
    config: QatConfig = QatConfig(),
    log: Callable[[str], None] = lambda msg: None,
) -> QatResult:
    """Retrain ``base``'s recognizer (convolutions and CTC head) with INT8 simulated, and write the FP32
    model folder ``out_dir`` (``rec.onnx``, ``det.onnx`` and ``cls.onnx`` copied, ``qat.json``).

    ``base``: the FP32 candidate's folder (or its :class:`OcrModelPaths`): the graph that static INT8 will
    quantize. ``dev_pages`` (disjoint from the training pages) pick the space threshold; without them the
    model keeps its own.
    """
    import onnx
    import torch

    start = time.perf_counter()
    paths = base if isinstance(base, OcrModelPaths) else OcrModelPaths.from_dir(base)
    if {p.id for p in train_pages} & {p.id for p in dev_pages}:
        raise ConfigError("training and dev pages overlap")
    if not train_pages:
        raise ConfigError("quantization-aware training needs at least one training page")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)

    model = onnx.load(paths.rec)
    logits_name, w_name, b_name = _head(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    trainable = [t for n in convs for t in n.input[1:3] if t] + [w_name, b_name]
    graph = TorchGraph(model, trainable=trainable, outputs=[logits_name])

    engine = OcrEngine.load(paths, threads=config.threads, parallel_crops=False)
    loss_fn, encode = case_merged_ctc(engine.characters)
    skipped = {"unmatched": 0, "vertical": 0, "charset": 0}

    def lines_of(pages, what):
        kept = labelled_lines(engine, pages, encode, skipped, iou=config.iou)
        log(f"{what}: {len(kept)} lines from {len(pages)} pages")
        return kept

    train = lines_of(train_pages, "training")
    dev = lines_of(dev_pages, "dev") if dev_pages else []
    if not train:
        raise ConfigError("no training line matched a detection: check the pages' boxes")
    crops = [c for c, _, _ in train]
    cal_ids = sorted(np.random.default_rng(config.seed).choice(len(crops), size=min(config.calibration_crops, len(crops)), replace=False))
    from components.ocr_quantize import rec_calibration_feeds

    feeds = [next(iter(f.values())) for f in rec_calibration_feeds(engine, [crops[i] for i in cal_ids])]
    ranges = activation_ranges(graph, feeds, config.percentile)
    graph.conv_hook, graph.conv_out_hook = fake_quant_hooks(ranges)

    result = QatResult(out_dir, len(train), len(dev), skipped)
    params = list(graph.params.values())
    opt = torch.optim.Adam(params, lr=config.learning_rate)
    batches = _plan(crops, config.batch_size)
    total = max(1, config.epochs * len(batches)) + 1
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.learning_rate, total_steps=total, pct_start=max(0.1, 2 / total))
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        rng.shuffle(batches)
        seen = n_lines = no_columns = 0
        for ids in batches:
            batch, widths = engine._rec_batch(crops, np.asarray(ids), [_ratio(crops[i]) for i in ids])
            logits = graph(torch.from_numpy(batch))[0]
            cols = [read_columns(logits.shape[1], w, batch.shape[3]) for w in widths]
            ok = [k for k, i in enumerate(ids) if len(train[i][1]) <= cols[k]]  # CTC needs a column per character
            no_columns += len(ids) - len(ok)
            if not ok:
                continue
            loss = loss_fn(logits[ok], [cols[k] for k in ok], [train[ids[k]][1] for k in ok])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += loss.item() * len(ok)
            n_lines += len(ok)
        row = {"epoch": epoch, "train_loss": round(seen / max(n_lines, 1), 4), "lines": n_lines,
               "lines_too_narrow": no_columns, "seconds": round(time.perf_counter() - t0, 1)}
        result.history.append(row)
        log(f"epoch {epoch}: train loss {row['train_loss']}, {row['seconds']} s")

    if dev:
        decoders = {sp: engine.with_config(OcrConfig(space_prob=sp)) for sp in config.space_probs}
        after = _dev_word_f1(engine, decoders, graph, [c for c, _, _ in dev], [t for _, _, t in dev])
        result.space_prob = max(config.space_probs, key=after.get)
        result.dev_line_word_f1 = round(after[result.space_prob], 4)
        log(f"dev lines, simulated INT8 after training: word F1 {result.dev_line_word_f1} (space threshold {result.space_prob})")
    engine.close()

    os.makedirs(out_dir, exist_ok=True)
    values = graph.state()
    for t in model.graph.initializer:
        if t.name in values:
            t.CopyFrom(onnx.numpy_helper.from_array(values[t.name].reshape(tuple(t.dims)), t.name))
    if result.space_prob is not None:
        kept = [p for p in model.metadata_props if p.key != SPACE_PROB_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key=SPACE_PROB_KEY, value=str(result.space_prob))
    onnx.save(model, os.path.join(out_dir, "rec.onnx"))
    for src, name in ((paths.det, "det.onnx"), (paths.cls, "cls.onnx")):
        if src:
            shutil.copyfile(src, os.path.join(out_dir, name))
    result.seconds = round(time.perf_counter() - start, 1)
    with open(os.path.join(out_dir, "qat.json"), "w", encoding="utf-8") as f:
        json.dump({**asdict(result), "config": asdict(config), "base": paths._asdict(),
                   "train_ids": [p.id for p in train_pages], "dev_ids": [p.id for p in dev_pages]}, f, indent=2)
    return result


def _cli(argv: Sequence[str] | None = None) -> None:
    """``python -m components.ocr_qat --data DIR --base FP32_DIR --train-ids A-B [--dev-ids C-D] --out DIR``."""
    training_cli(qat_recognizer, QatConfig, argv, prog="python -m components.ocr_qat", out="out/models/ocr/qat_fp32",
                 base_help="the FP32 candidate's model folder (components.ocr_quantize)", base_required=True,
                 report=("model_dir", "train_lines", "space_prob", "dev_line_word_f1", "seconds"))


if __name__ == "__main__":
    _cli()

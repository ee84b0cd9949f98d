"""ONNX model candidates: graph optimization, FP16, INT8 dynamic/static, mixed precision.

Thin, checked wrappers over ``onnxruntime.quantization`` and
``onnxruntime.transformers`` (no hand-written quantizers), shared by every
model family that serves through ONNX Runtime. Each function reads a model
file and writes a new one, returning its path::

    opt = optimize_graph("m.onnx", "m.opt.onnx")                      # portable graph rewrites
    rewrite_for_cpu(opt, "m.rw.onnx")                                  # exact rewrites ORT does not make
    optimize_graph("bert.onnx", "bert.opt.onnx", model_type="bert",
                   num_heads=12, hidden_size=384)                       # attention/LayerNorm fusion
    to_fp16(opt, "m.fp16.onnx")
    quantize_int8_dynamic(opt, "m.int8d.onnx")
    quantize_int8_static(opt, "m.int8s.onnx", FeedsCalibrationReader(feeds))
    mp = mixed_precision(opt, "m.mixed.onnx",
                         quantize=lambda excl, out: quantize_int8_static(opt, out, reader_factory(), nodes_to_exclude=excl),
                         score=my_accuracy, candidate_nodes=quantizable_nodes(opt),
                         reference_score=my_accuracy(opt), max_drop=0.01)

Pitfalls these wrappers handle (measured on this stack): per-channel QDQ
needs opset >= 13, so older models are upgraded first (``upgrade_opset``);
``quantize_dynamic`` on transformer-fused graphs needs a default tensor
type; symbolic shape inference fails on some CNNs (``preprocess`` takes
``skip_symbolic_shape``).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from transforms.errors import ConfigError, ModelLoadError

__all__ = [
    "DEFAULT_OP_TYPES",
    "FeedsCalibrationReader",
    "MixedPrecisionResult",
    "compare_outputs",
    "make_session",
    "mixed_precision",
    "model_opset",
    "optimize_graph",
    "preprocess",
    "quantizable_nodes",
    "quantize_int8_dynamic",
    "quantize_int8_static",
    "rewrite_for_cpu",
    "to_fp16",
    "upgrade_opset",
]

# Op types whose weights carry most of the compute in CNNs and transformers.
DEFAULT_OP_TYPES = ("Conv", "MatMul", "Gemm")

_OPT_LEVELS = {0: "ORT_DISABLE_ALL", 1: "ORT_ENABLE_BASIC", 2: "ORT_ENABLE_EXTENDED", 99: "ORT_ENABLE_ALL"}


def _check_in(model_path: str) -> str:
    path = str(model_path)
    if not os.path.exists(path):
        raise ModelLoadError(f"model file {path!r} does not exist; pass the path of an .onnx file")
    return path


def _prepare_out(out_path: str) -> str:
    out = str(out_path)
    parent = os.path.dirname(out)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return out


def _load(model_path: str):
    import onnx

    try:
        return onnx.load(_check_in(model_path))
    except ModelLoadError:
        raise
    except Exception as e:  # onnx raises DecodeError / ValueError for a corrupt file
        raise ModelLoadError(f"cannot load ONNX model {model_path!r}: {e}") from e


def _carry_metadata(src_path: str, out_path: str) -> str:
    """Copy the source model's ``metadata_props`` (e.g. a recognizer's character set) to the output.

    Graph rewriters and quantizers drop or keep them inconsistently; serving
    code that reads them must not depend on which candidate it got.
    """
    import onnx

    src = onnx.load(src_path, load_external_data=False)
    if not src.metadata_props:
        return out_path
    out = onnx.load(out_path, load_external_data=False)
    have = {p.key for p in out.metadata_props}
    missing = [p for p in src.metadata_props if p.key not in have]
    if missing:
        for p in missing:
            out.metadata_props.add(key=p.key, value=p.value)
        onnx.save(out, out_path)
    return out_path


def model_opset(model_path: str) -> int:
    """The default-domain opset version of an ONNX model."""
    model = _load(model_path)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ModelLoadError(f"{model_path!r} imports no default-domain opset")


def upgrade_opset(model_path: str, out_path: str, *, opset: int = 13) -> str:
    """Convert a model to ``opset`` (no-op copy when it is already there or newer).

    Per-channel QDQ quantization needs opset >= 13 (the ``axis`` attribute of
    ``DequantizeLinear``).
    """
    import onnx
    from onnx import version_converter

    model = _load(model_path)
    current = next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    out = _prepare_out(out_path)
    if current >= opset:
        if os.path.abspath(out) != os.path.abspath(model_path):
            shutil.copyfile(model_path, out)
        return out
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as e:
        raise ModelLoadError(f"cannot convert {model_path!r} from opset {current} to {opset}: {e}") from e
    onnx.save(converted, out)
    return _carry_metadata(model_path, out)


def preprocess(model_path: str, out_path: str, *, skip_symbolic_shape: bool = False, skip_optimization: bool = False) -> str:
    """onnxruntime's quantization pre-processing (shape inference + basic optimization).

    Use ``skip_symbolic_shape=True`` on models where symbolic shape inference
    fails (e.g. the PP-OCR detector).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = _prepare_out(out_path)
    quant_pre_process(_check_in(model_path), out, skip_symbolic_shape=skip_symbolic_shape, skip_optimization=skip_optimization)
    return _carry_metadata(model_path, out)


def optimize_graph(
    model_path: str,
    out_path: str,
    *,
    model_type: str | None = None,
    num_heads: int = 0,
    hidden_size: int = 0,
    opt_level: int = 1,
) -> str:
    """Graph optimization before quantization; returns ``out_path``.

    With ``model_type`` (``"bert"``, ``"gpt2"``, ... as
    ``onnxruntime.transformers.optimizer`` knows them) the transformer
    optimizer fuses attention, LayerNorm, GELU and embeddings
    (``num_heads``/``hidden_size`` 0 = detect). Without it, ONNX Runtime's
    own offline optimizer rewrites the graph at ``opt_level`` (0 none,
    1 basic: constant folding, redundant-node and dead-node elimination,
    Conv+BN/Add/Mul folding; 2 extended and 99 all add CPU-specific fused
    ops that later quantization may not understand, so 1 is the portable
    choice).
    """
    path = _check_in(model_path)
    out = _prepare_out(out_path)
    if opt_level not in _OPT_LEVELS:
        raise ConfigError(f"opt_level={opt_level}: use one of {sorted(_OPT_LEVELS)}")
    if model_type:
        from onnxruntime.transformers import optimizer

        try:
            model = optimizer.optimize_model(
                path, model_type=model_type, num_heads=num_heads, hidden_size=hidden_size, opt_level=opt_level, use_gpu=False
            )
        except KeyError as e:
            raise ConfigError(f"model_type={model_type!r} is not known to onnxruntime.transformers.optimizer") from e
        model.save_model_to_file(out)
        return _carry_metadata(path, out)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[opt_level])
    so.optimized_model_filepath = out
    try:
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelLoadError(f"onnxruntime cannot load {path!r} for optimization: {e}") from e
    return _carry_metadata(path, out)


def rewrite_for_cpu(model_path: str, out_path: str):
    """The exact CPU rewrites of :mod:`transforms.inference.onnx_rewrite` on a model file; returns their report."""
    import onnx

    from transforms.inference.onnx_rewrite import rewrite_model

    model = _load(model_path)
    report = rewrite_model(model)
    out = _prepare_out(out_path)
    onnx.save(model, out)
    _carry_metadata(model_path, out)
    return report


def to_fp16(model_path: str, out_path: str, *, keep_io_types: bool = True, op_block_list: Sequence[str] | None = None) -> str:
    """Weights and activations in float16 (inputs/outputs stay float32 with ``keep_io_types``).

    On CPUs without native FP16 arithmetic, ONNX Runtime computes many FP16
    ops through casts, so this candidate mostly halves the size; measure
    its latency before choosing it.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = _load(model_path)
    block = list(DEFAULT_OP_BLOCK_LIST) + list(op_block_list or ())
    converted = convert_float_to_float16(model, keep_io_types=keep_io_types, op_block_list=block)
    # The converter can insert the same Cast twice (a constant feeding two
    # blocked ops): same name, same output, which onnxruntime refuses. Keep one.
    produced: dict[str, tuple] = {}
    keep = []
    for node in converted.graph.node:
        sig = (node.op_type, tuple(node.input), tuple(node.output))
        clash = [o for o in node.output if o in produced]
        if clash and all(produced[o] == sig for o in clash) and node.op_type == "Cast":
            continue
        for o in node.output:
            produced[o] = sig
        keep.append(node)
    if len(keep) != len(converted.graph.node):
        del converted.graph.node[:]
        converted.graph.node.extend(keep)
    names: dict[str, int] = {}
    for node in converted.graph.node:
        if node.name in names:
            names[node.name] += 1
            node.name = f"{node.name}_{names[node.name]}"
        else:
            names[node.name] = 0
    out = _prepare_out(out_path)
    onnx.save(converted, out)
    return _carry_metadata(model_path, out)


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    table = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
    try:
        return table[name.lower()]
    except KeyError:
        raise ConfigError(f"quantization type {name!r}: use 'qint8' or 'quint8'") from None


def quantize_int8_dynamic(
    model_path: str,
    out_path: str,
    *,
    per_channel: bool = False,
    nodes_to_exclude: Sequence[str] = (),
    op_types: Sequence[str] | None = None,
    extra_options: Mapping | None = None,
    weight_type: str = "qint8",
) -> str:
    """INT8 weights, activations quantized at run time (no calibration data needed).

    Best on MatMul-heavy models (transformers, MLPs); convolutions quantized
    dynamically are often slower than FP32 on CPU, so pass
    ``op_types=("MatMul", "Gemm")`` for CNNs.
    """
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    opts = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    opts.update(extra_options or {})
    out = _prepare_out(out_path)
    quantize_dynamic(
        _check_in(model_path),
        out,
        op_types_to_quantize=list(op_types) if op_types else None,
        per_channel=per_channel,
        weight_type=_quant_type(weight_type),
        nodes_to_exclude=list(nodes_to_exclude),
        extra_options=opts,
    )
    return _carry_metadata(model_path, out)


class FeedsCalibrationReader:
    """A ``CalibrationDataReader`` over a list of input feeds (``{input_name: ndarray}``).

    ``feeds`` may be any iterable; it is materialised so the reader can be
    ``rewind()``-ed. Build the feeds from real inputs (calibration on random
    data gives ranges that real data does not have).
    """

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]]):
        self._feeds = [dict(f) for f in feeds]
        if not self._feeds:
            raise ConfigError("FeedsCalibrationReader got no feeds: calibrate on at least one real input")
        self._it = iter(self._feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)


def quantize_int8_static(
    model_path: str,
    out_path: str,
    calibration_reader,
    *,
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    op_types: Sequence[str] | None = None,
    extra_options: Mapping | None = None,
    activation_type: str = "qint8",
    weight_type: str = "qint8",
    calibrate_method: str = "minmax",
    calibration_cache_path: str | None = None,
) -> str:
    """INT8 static quantization in QDQ format, calibrated on ``calibration_reader``.

    ``calibration_reader`` is an ``onnxruntime.quantization.CalibrationDataReader``
    (e.g. :class:`FeedsCalibrationReader`) or a list of feeds. A model with
    opset < 13 is upgraded first when ``per_channel`` is set.
    ``calibrate_method``: ``minmax``, ``entropy`` or ``percentile``.
    ``calibration_cache_path``: a JSON file of tensor ranges, written by the
    first call and reused by later ones (then ``calibration_reader`` may be
    None): mixed-precision searches quantize the same model many times with
    different exclusions and need the ranges only once.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise ConfigError(f"calibrate_method={calibrate_method!r}: use one of {sorted(methods)}")
    if isinstance(calibration_reader, (list, tuple)):
        calibration_reader = FeedsCalibrationReader(calibration_reader)
    if calibration_reader is None and not (calibration_cache_path and os.path.isfile(calibration_cache_path)):
        raise ConfigError("quantize_int8_static needs a calibration_reader (or an existing calibration_cache_path)")
    path = _check_in(model_path)
    out = _prepare_out(out_path)
    with tempfile.TemporaryDirectory(prefix="aisle-quant-") as tmp:
        if per_channel and model_opset(path) < 13:
            path = upgrade_opset(path, os.path.join(tmp, "opset13.onnx"), opset=13)
        quantize_static(
            path,
            out,
            calibration_reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types) if op_types else None,
            per_channel=per_channel,
            activation_type=_quant_type(activation_type),
            weight_type=_quant_type(weight_type),
            nodes_to_exclude=list(nodes_to_exclude),
            calibrate_method=methods[calibrate_method],
            extra_options=dict(extra_options or {}),
            calibration_cache_path=calibration_cache_path,
        )
    if calibration_reader is not None and hasattr(calibration_reader, "rewind"):
        calibration_reader.rewind()
    return _carry_metadata(model_path, out)


def quantizable_nodes(model_path: str, op_types: Sequence[str] = DEFAULT_OP_TYPES) -> list[str]:
    """Names of the nodes of the given op types, in graph order (mixed-precision candidates)."""
    model = _load(model_path)
    names = [n.name for n in model.graph.node if n.op_type in set(op_types)]
    if any(not n for n in names):
        raise ModelLoadError(f"{model_path!r} has unnamed {op_types} nodes; run optimize_graph or preprocess first to name them")
    return names


def make_session(model_path: str, *, threads: int | None = None, opt_level: int = 99, inter_op_threads: int = 1):
    """An ONNX Runtime CPU session with explicit thread counts (0/None = onnxruntime's default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = inter_op_threads
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[opt_level])
    try:
        return ort.InferenceSession(_check_in(model_path), so, providers=["CPUExecutionProvider"])
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"onnxruntime cannot load {model_path!r}: {e}") from e


def compare_outputs(model_a: str, model_b: str, feeds: Iterable[Mapping[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Max and mean absolute difference of every output of two models on the same feeds."""
    sa, sb = make_session(model_a, threads=1), make_session(model_b, threads=1)
    names = [o.name for o in sa.get_outputs()]
    stats = {n: {"max_abs": 0.0, "sum_abs": 0.0, "count": 0} for n in names}
    for feed in feeds:
        outs_a = sa.run(names, dict(feed))
        outs_b = sb.run(names, dict(feed))
        for n, a, b in zip(names, outs_a, outs_b):
            d = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
            stats[n]["max_abs"] = max(stats[n]["max_abs"], float(d.max(initial=0.0)))
            stats[n]["sum_abs"] += float(d.sum())
            stats[n]["count"] += d.size
    return {n: {"max_abs": s["max_abs"], "mean_abs": s["sum_abs"] / max(s["count"], 1)} for n, s in stats.items()}


@dataclass
class MixedPrecisionResult:
    """What :func:`mixed_precision` kept in FP32 and why.

    ``sensitivity`` has one row per group: ``{"group", "nodes", "score",
    "sensitivity"}``, most sensitive first (``sensitivity`` is how much of
    the accuracy loss excluding that group alone recovers, in score units).
    ``steps`` lists every ``{"excluded_groups", "score"}`` tried.
    """

    model_path: str
    excluded_nodes: list[str]
    score: float
    reference_score: float
    quantized_score: float
    met_budget: bool
    sensitivity: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def mixed_precision(
    model_path: str,
    out_path: str,
    *,
    quantize: Callable[[Sequence[str], str], str],
    score: Callable[[str], float],
    candidate_nodes: Sequence[str],
    reference_score: float,
    max_drop: float,
    groups: Mapping[str, Sequence[str]] | None = None,
    higher_is_better: bool = True,
    method: str = "exclude_one",
    search: str = "binary",
    work_dir: str | None = None,
) -> MixedPrecisionResult:
    """Quantize, but keep the most sensitive nodes in FP32 until the accuracy drop fits ``max_drop``.

    ``quantize(nodes_to_exclude, out_path) -> path`` builds a quantized model
    (any of the quantizers above, with its calibration bound in);
    ``score(path) -> float`` is the accuracy on held-out data;
    ``reference_score`` is the FP32 model's score. Sensitivity is measured per
    group (``groups`` maps a layer name to its nodes; default one group per
    candidate node):

    * ``method="exclude_one"``: quantize everything except the group; the
      sensitivity is the score recovered against the fully quantized model;
    * ``method="quantize_one"``: quantize only the group; the sensitivity
      is its drop against the reference.

    Groups are then kept in FP32, most sensitive first, until the drop is
    within budget: ``search="binary"`` finds the fewest groups in
    O(log groups) builds (assumes more FP32 never hurts), ``"linear"`` adds
    them one at a time. ``model_path`` is recorded for provenance; the
    models are built by ``quantize``.
    """
    if max_drop < 0:
        raise ConfigError(f"max_drop={max_drop}: the allowed accuracy drop must be >= 0")
    if method not in ("exclude_one", "quantize_one"):
        raise ConfigError(f"method={method!r}: use 'exclude_one' or 'quantize_one'")
    if search not in ("binary", "linear"):
        raise ConfigError(f"search={search!r}: use 'binary' or 'linear'")
    if groups is None:
        groups = {n: [n] for n in candidate_nodes}
    groups = {g: list(ns) for g, ns in groups.items() if ns}
    if not groups:
        raise ConfigError("mixed_precision got no candidate nodes: pass quantizable_nodes(model)")
    all_nodes = [n for ns in groups.values() for n in ns]
    sign = 1.0 if higher_is_better else -1.0

    def drop(s: float) -> float:
        return sign * (reference_score - s)

    own_tmp = None
    if work_dir is None:
        own_tmp = tempfile.mkdtemp(prefix="aisle-mixed-")
        work_dir = own_tmp
    work = pathlib.Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out = _prepare_out(out_path)
    try:
        steps: list[dict] = []
        full_path = quantize([], str(work / "full.onnx"))
        full_score = float(score(full_path))
        steps.append({"excluded_groups": [], "score": full_score})
        if drop(full_score) <= max_drop:
            shutil.copyfile(full_path, out)
            return MixedPrecisionResult(out, [], full_score, reference_score, full_score, True, [], steps)

        rows = []
        for i, (g, nodes) in enumerate(groups.items()):
            if method == "exclude_one":
                p = quantize(nodes, str(work / f"sens_{i}.onnx"))
                s = float(score(p))
                sens = sign * (s - full_score)
            else:
                mine = set(nodes)
                others = [n for n in all_nodes if n not in mine]
                p = quantize(others, str(work / f"sens_{i}.onnx"))
                s = float(score(p))
                sens = drop(s)
            rows.append({"group": g, "nodes": list(nodes), "score": s, "sensitivity": sens})
            if p != full_path and os.path.exists(p):
                os.remove(p)
        rows.sort(key=lambda r: -r["sensitivity"])
        order = [r["group"] for r in rows]

        cache: dict[int, tuple[str, float]] = {}

        def build(k: int) -> tuple[str, float]:
            if k not in cache:
                excl = [n for g in order[:k] for n in groups[g]]
                p = quantize(excl, str(work / f"keep_{k}.onnx"))
                s = float(score(p))
                cache[k] = (p, s)
                steps.append({"excluded_groups": order[:k], "score": s})
            return cache[k]

        best_k = None
        if search == "linear":
            for k in range(1, len(order) + 1):
                if drop(build(k)[1]) <= max_drop:
                    best_k = k
                    break
        else:
            lo, hi = 0, len(order)  # drop(lo) > budget known; hi unknown yet
            if drop(build(hi)[1]) <= max_drop:
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if drop(build(mid)[1]) <= max_drop:
                        hi = mid
                    else:
                        lo = mid
                best_k = hi
        met = best_k is not None
        if not met:
            # Budget unreachable: keep the best-scoring model tried.
            best_k = max(cache, key=lambda k: sign * cache[k][1])
        path_k, score_k = cache[best_k]
        shutil.copyfile(path_k, out)
        excluded = [n for g in order[:best_k] for n in groups[g]]
        return MixedPrecisionResult(out, excluded, score_k, reference_score, full_score, met, rows, steps)
    finally:
        if own_tmp:
            shutil.rmtree(own_tmp, ignore_errors=True)

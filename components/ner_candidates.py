"""NER model candidates: export, fuse, quantize, measure and choose (with the shared toolkit).

From a trained PyTorch token classifier (:mod:`components.ner_train`) this
builds one folder per candidate, each loadable by
``transforms.inference.ner.load_tagger`` (model + tokenizer + label map):

* ``torch_fp32``: the PyTorch model itself, eager mode (the baseline);
* ``fp32``: the ONNX export (the accuracy reference), served with
  onnxruntime's online graph optimization (its own LayerNorm, GELU and
  MatMul+Add fusions when the session starts);
* ``fp32_fused``: onnxruntime's transformers optimizer, offline (Attention,
  SkipLayerNormalization, EmbedLayerNormalization, BiasGelu fusion);
* ``int8_dynamic``: dynamic INT8 of the exported graph (weights INT8 with
  per-channel scales, activations quantized at run time; the session fuses
  the quantized MatMuls);
* ``int8_dynamic_fused``: the same of the transformers optimizer's graph
  (on the 2-core machine of ``benchmarks/results/ner.json`` its Attention op
  made INT8 slower at 1 thread, so it is the alternative, not the default);
* ``int8_static``: static QDQ INT8 of every quantizable op of the unfused
  graph, calibrated on real sentences (the naive recipe);
* ``int8_mixed``: static QDQ INT8 with the op groups that measurement
  finds most sensitive (each op type quantized alone, its disagreement with
  FP32 measured) kept in FP32 until the disagreement fits the budget
  (:func:`components.quantize.mixed_precision`; groups are op types, so
  the result says which kinds of op, e.g. LayerNormalization or Softmax,
  must stay in FP32).

:func:`evaluate_ner_candidates` measures entity F1 (overall and LOC),
sentences/s, p50/p95 latency per batch and size on the same held-out
sentences into :class:`components.candidates.CandidateResult` records,
timing the candidates in interleaved rounds (a shared machine's load drifts);
:func:`components.candidates.choose_candidate` and ``write_report`` do the rest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from components.candidates import CandidateResult, file_size
from components.ner_data import Sentence
from components.ner_export import copy_serving_files, export_onnx, model_shape
from components.quantize import (
    FeedsCalibrationReader,
    mixed_precision,
    optimize_graph,
    quantize_int8_dynamic,
    quantize_int8_static,
)
from transforms.errors import ConfigError
from transforms.ner_labels import CASE_MARKERS_KEY, encode_words, entity_f1, window_features

__all__ = [
    "STATIC_OP_TYPES",
    "build_candidates",
    "calibration_feeds",
    "evaluate_ner_candidates",
    "interleaved_latency",
    "make_tagger",
    "model_latency",
    "op_type_groups",
]

LOGGER = logging.getLogger(__name__)

# Every op type of a BERT-style graph that a static QDQ quantizer can wrap:
# the "quantize everything" starting point that mixed precision prunes.
STATIC_OP_TYPES = (
    "MatMul",
    "Gemm",
    "Gather",
    "Add",
    "Mul",
    "Div",
    "Sub",
    "Softmax",
    "Erf",
    "LayerNormalization",
    "Tanh",
)


def make_tagger(
    model_dir: str, *, backend: str = "auto", threads: int = 1, onnx_file: str = "model.onnx", max_length: int = 128,
    graph_optimization: str = "all",
):
    """A :class:`~transforms.inference.ner.NerTagger` for a candidate folder at a fixed thread count."""
    from transforms.inference.ner import load_tagger

    return load_tagger(model_dir, backend=backend, onnx_file=onnx_file, intra_op_threads=threads, max_length=max_length,
                       graph_optimization=graph_optimization)


def calibration_feeds(tokenizer_dir: str, sentences: Sequence[Sentence], *, max_length: int = 128, batch_size: int = 8) -> list[dict]:
    """Real model inputs (padded batches of word windows) for static-quantization calibration."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    config = json.loads((Path(tokenizer_dir) / "config.json").read_text())
    pieces = encode_words(tokenizer, [s.words for s in sentences], case_markers=bool(config.get(CASE_MARKERS_KEY, False)))
    windows = window_features(pieces, max_length=max_length, cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id)
    feeds = []
    for b in range(0, len(windows), batch_size):
        batch = windows[b : b + batch_size]
        width = max(len(w.input_ids) for w in batch)
        ids = np.full((len(batch), width), tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, w in enumerate(batch):
            ids[row, : len(w.input_ids)] = w.input_ids
            mask[row, : len(w.input_ids)] = 1
        feeds.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return feeds


def op_type_groups(model_path: str, op_types: Sequence[str] = STATIC_OP_TYPES) -> dict[str, list[str]]:
    """Node names of a graph grouped by op type (the mixed-precision search groups)."""
    import onnx

    model = onnx.load(model_path, load_external_data=False)
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in op_types and node.name:
            groups.setdefault(node.op_type, []).append(node.name)
    return groups


def _only(tags: Sequence[str], types: Sequence[str] | None) -> list[str]:
    if types is None:
        return list(tags)
    return [t if t == "O" or t[2:] in types else "O" for t in tags]


def _f1_of(tagger, sentences: Sequence[Sentence], types: Sequence[str] | None = None) -> dict[str, float]:
    """Entity F1 of a tagger on gold sentences; with ``types``, other entity types count as ``O`` on both sides."""
    predicted = [tags for tags, _ in tagger.tag_words([s.words for s in sentences])]
    return entity_f1([_only(s.tags, types) for s in sentences], [_only(p, types) for p in predicted])


def build_candidates(
    torch_dir: str,
    out_dir: str,
    *,
    calibration: Sequence[Sentence],
    tuning: Sequence[Sentence],
    max_f1_drop: float = 1.0,
    max_length: int = 128,
    include: Sequence[str] = ("torch_fp32", "fp32", "fp32_fused", "int8_dynamic", "int8_dynamic_fused", "int8_static", "int8_mixed"),
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, str], dict[str, dict]]:
    """Build every candidate folder under ``out_dir``; returns ``({name: folder}, {name: build notes})``.

    ``calibration`` sentences calibrate static INT8; ``tuning`` sentences
    (held out from training and from the final evaluation; only their words
    are used) score mixed-precision trials by entity-level agreement with the
    FP32 model; ``max_f1_drop`` is the allowed disagreement in F1 points.
    """
    say = progress or (lambda msg: LOGGER.info("ner candidates: %s", msg))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folders: dict[str, str] = {}
    notes: dict[str, dict] = {}
    if "torch_fp32" in include:
        folders["torch_fp32"] = torch_dir

    def folder(name: str) -> Path:
        path = out / name
        path.mkdir(parents=True, exist_ok=True)
        copy_serving_files(torch_dir, str(path))
        return path

    say("exporting to ONNX")
    fp32 = export_onnx(torch_dir, str(folder("fp32")))
    folders["fp32"] = str(out / "fp32")
    shape = model_shape(torch_dir)

    fused = None
    if {"fp32_fused", "int8_dynamic_fused"} & set(include):
        say("fusing the graph (onnxruntime transformers optimizer)")
        fused = optimize_graph(fp32, str(folder("fp32_fused") / "model.onnx"), **shape)
        notes["fp32_fused"] = {"fused_ops": dict(_op_counts(fused, ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu", "Gelu", "FastGelu", "LayerNormalization")))}
        if "fp32_fused" in include:
            folders["fp32_fused"] = str(out / "fp32_fused")
    # Per-channel weight scales: on MiniLM-L6 per-tensor scales cost 0.6 F1
    # on CoNLL valid, per-channel none (measured on 300 sentences).
    for name, graph, source in (("int8_dynamic", fp32, "fp32"), ("int8_dynamic_fused", fused, "fp32_fused")):
        if name in include:
            say(f"dynamic INT8 of the {source} graph (per-channel weights)")
            quantize_int8_dynamic(graph, str(folder(name) / "model.onnx"), per_channel=True)
            notes[name] = {"per_channel": True, "graph": source}
            folders[name] = str(out / name)

    if {"int8_static", "int8_mixed"} & set(include):
        feeds = calibration_feeds(torch_dir, calibration, max_length=max_length)
        groups = op_type_groups(fp32)
        all_nodes = [n for ns in groups.values() for n in ns]
        op_types = sorted(groups)

        def quantize(exclude: Sequence[str], path: str) -> str:
            return quantize_int8_static(
                fp32, path, FeedsCalibrationReader(feeds), per_channel=True, nodes_to_exclude=exclude, op_types=op_types
            )

        if "int8_static" in include:
            say(f"static INT8 of every quantizable op ({', '.join(op_types)})")
            quantize([], str(folder("int8_static") / "model.onnx"))
            folders["int8_static"] = str(out / "int8_static")
        if "int8_mixed" in include:
            # Trials are scored by agreement with the FP32 model's own entities
            # on held-out text (entity F1 of trial vs FP32 predictions): no gold
            # labels needed, and the budget reads "changes at most max_f1_drop
            # points of the FP32 model's entity decisions".
            say(f"mixed precision: sensitivity of {len(groups)} op-type groups on {len(tuning)} sentences")
            words = [s.words for s in tuning]
            reference_tags = [t for t, _ in make_tagger(folders["fp32"], max_length=max_length).tag_words(words)]

            def score(path: str) -> float:
                trial = make_tagger(str(out / "fp32"), onnx_file=os.path.abspath(path), max_length=max_length)
                agreement = entity_f1(reference_tags, [t for t, _ in trial.tag_words(words)])["f1"]
                say(f"  trial {os.path.basename(path)}: agreement with FP32 {agreement:.2f}")
                return agreement

            mixed_dir = folder("int8_mixed")
            result = mixed_precision(
                fp32,
                str(mixed_dir / "model.onnx"),
                quantize=quantize,
                score=score,
                candidate_nodes=all_nodes,
                reference_score=100.0,
                max_drop=max_f1_drop,
                groups=groups,
                method="quantize_one",
                work_dir=str(out / "_mixed_work"),
            )
            shutil.rmtree(out / "_mixed_work", ignore_errors=True)
            kept = sorted({g for g, ns in groups.items() if set(ns) & set(result.excluded_nodes)})
            notes["int8_mixed"] = {
                "kept_fp32_op_types": kept,
                "tuning_agreement_f1": result.score,
                "tuning_agreement_f1_all_quantized": result.quantized_score,
                "met_budget": result.met_budget,
                "sensitivity": [{k: r[k] for k in ("group", "score", "sensitivity")} for r in result.sensitivity],
            }
            folders["int8_mixed"] = str(mixed_dir)
    (out / "build_notes.json").write_text(json.dumps(notes, indent=2))
    return folders, notes


def _op_counts(model_path: str, op_types: Sequence[str]) -> Counter:
    import onnx

    model = onnx.load(model_path, load_external_data=False)
    return Counter(n.op_type for n in model.graph.node if n.op_type in op_types)


def evaluate_ner_candidates(
    folders: dict[str, str],
    sentences: Sequence[Sentence],
    *,
    threads: int = 1,
    batch_sentences: int = 64,
    repeats: int = 10,
    warmup: int = 2,
    max_length: int = 128,
    notes: dict[str, str] | None = None,
    scores: dict[str, dict[str, float]] | None = None,
    graph_optimization: Mapping[str, str] | None = None,
) -> list[CandidateResult]:
    """Entity F1 (overall, LOC) on ``sentences`` and batch latency/throughput for every candidate.

    Candidates are timed in interleaved rounds (:func:`interleaved_latency`).

    Latency is one call tagging ``batch_sentences`` sentences end to end
    (tokenization, bucketing, model, decoding) at ``threads`` threads;
    ``throughput_per_s`` is sentences per second. ``scores`` caches accuracy
    by model folder (accuracy does not depend on threads): pass the same
    dict to calls at several thread counts to score each candidate once.
    ``graph_optimization`` gives some candidates another onnxruntime graph
    optimization level than ``"all"`` (e.g. ``{"fp32_unfused": "basic"}``
    with ``folders["fp32_unfused"]`` the ``fp32`` folder: the cost of the
    graph without any fusion).
    """
    if not sentences:
        raise ConfigError("evaluate_ner_candidates got no sentences")
    import torch

    torch.set_num_threads(threads)  # the PyTorch candidate runs at the same thread count
    taggers: dict[str, object] = {}
    levels = {name: (graph_optimization or {}).get(name, "all") for name in folders}

    def key(name: str) -> str:
        return folders[name] if levels[name] == "all" else f"{folders[name]}@{levels[name]}"

    def tagger(name: str):
        path = folders[name]
        if key(name) not in taggers:
            backend = "torch" if not os.path.exists(os.path.join(path, "model.onnx")) else "onnx"
            taggers[key(name)] = make_tagger(path, backend=backend, threads=threads, max_length=max_length,
                                             graph_optimization=levels[name])
        return taggers[key(name)]

    cache = scores if scores is not None else {}

    def score(name: str) -> dict[str, float]:
        if key(name) not in cache:
            f1 = _f1_of(tagger(name), sentences)
            cache[key(name)] = {"f1": f1["f1"], "f1_LOC": f1.get("f1_LOC", 0.0), "precision": f1["precision"], "recall": f1["recall"]}
        return cache[key(name)]

    batch = [s.words for s in sentences[:batch_sentences]]
    metrics = {name: score(name) for name in folders}
    runners = {name: (lambda t=tagger(name): t.tag_words(batch)) for name in folders}
    timing = interleaved_latency(runners, warmup=warmup, repeats=repeats)
    return [
        CandidateResult(
            name=name,
            model_path=str(path),
            size_bytes=_model_size(path),
            metrics=metrics[name],
            latency_ms_p50=timing[name]["p50_ms"],
            latency_ms_p95=timing[name]["p95_ms"],
            throughput_per_s=len(batch) * 1000.0 / timing[name]["mean_ms"],
            notes=(notes or {}).get(name, ""),
        )
        for name, path in folders.items()
    ]


def model_latency(
    models: Mapping[str, tuple[str, int]],
    feeds: Sequence[dict],
    *,
    threads: int = 1,
    repeats: int = 20,
    warmup: int = 2,
) -> dict[str, dict[str, float]]:
    """The model alone: ms to run ``feeds`` through each ``{name: (onnx path, onnxruntime opt level)}``, interleaved.

    No tokenization or decoding, so graph changes (fusion, quantization)
    show at their full size; levels as :func:`components.quantize.make_session`
    takes them (1 = basic, no fusion; 99 = all).
    """
    from components.quantize import make_session

    def runner(path: str, level: int):
        session = make_session(path, threads=threads, opt_level=level)
        names = {i.name for i in session.get_inputs()}
        mine = [{k: v for k, v in feed.items() if k in names} for feed in feeds]
        return lambda: [session.run(None, feed) for feed in mine]

    return interleaved_latency({name: runner(*spec) for name, spec in models.items()}, warmup=warmup, repeats=repeats)


def _model_size(folder: str) -> int:
    """Bytes of the model weights in a candidate folder (not the tokenizer files)."""
    onnx_path = os.path.join(folder, "model.onnx")
    if os.path.exists(onnx_path):
        return file_size(onnx_path)
    return sum(file_size(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith((".safetensors", ".bin")))


def interleaved_latency(
    runners: dict[str, Callable[[], object]],
    *,
    warmup: int = 2,
    repeats: int = 10,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, float]]:
    """Per-call latency of several runners timed in interleaved rounds (p50/p95/mean ms).

    On a shared machine the load changes over minutes; timing candidates one
    after another biases their ratios, timing them round by round (order
    reversed every other round) does not.
    """
    if repeats < 1:
        raise ConfigError(f"repeats={repeats}: time at least one round")
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            start = clock()
            runners[name]()
            times[name].append((clock() - start) * 1000.0)
    return {
        name: {
            "p50_ms": float(np.percentile(t, 50)),
            "p95_ms": float(np.percentile(t, 95)),
            "mean_ms": float(np.mean(t)),
        }
        for name, t in times.items()
    }

"""NER benchmark: every candidate of the trained token classifier, side by side in one run.

On a CoNLL-2003-format file (by default the CoNLL-2003 valid split under
``../shared/data/ner``), for PyTorch FP32 eager, ONNX Runtime FP32 without
fusion (``fp32_unfused``: the exported graph, online optimization at
"basic"), with onnxruntime's online fusions (``fp32``) and with the
transformers optimizer's offline fusion (``fp32_fused``), dynamic INT8 of
the exported and of the offline-fused graph, naive static INT8 and
sensitivity-driven mixed precision: entity F1 (overall and LOC),
sentences/s and p50/p95 latency of a 64-sentence batch at each thread
count, and size; then the choice under the accuracy budget and a report
(HTML table + accuracy-vs-latency plot).

    python -m benchmarks.ner --eval ../shared/data/ner/conll2003/valid.txt --json benchmarks/results/ner.json

If no trained model is at ``--model-dir``/torch, one is trained first (on
``--train``, CoNLL-2003 train by default), and the benchmark says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOGGER = logging.getLogger("benchmarks.ner")


def _shared_data() -> pathlib.Path:
    return pathlib.Path(os.environ.get("AISLE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _say(msg: str) -> None:
    print(f"[ner bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _has_model(folder: pathlib.Path) -> bool:
    config = folder / "config.json"
    if not config.exists() or not (folder / "model.safetensors").exists():
        return False
    labels = json.loads(config.read_text()).get("id2label") or {}
    return bool(labels) and all(v == "O" or v[:2] in ("B-", "I-") for v in labels.values())


def _grocery_accuracy(folder: str, model_dir: str, max_length: int) -> dict | None:
    """Country-of-origin accuracy on the grocery products: rules alone, and rules + NER entities."""
    import csv

    from components.ner_candidates import make_tagger
    from transforms.attributes import extract_attributes, normalize_country

    table = pathlib.Path(folder) / "grocery_products.csv"
    if not table.exists():
        return None
    with open(table, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = []
    for row in rows:
        info = pathlib.Path(folder) / "info_txt" / f"{row['class_name']}_Information.txt"
        texts.append(info.read_text(encoding="utf-8") if info.exists() else f"Title: {row['title_sv']}\nDescription: {row['description_en']}")
    expected = [normalize_country(r["country_normalized"]) if r["country_normalized"] else None for r in rows]
    entities = make_tagger(model_dir, max_length=max_length).entities(texts)

    def accuracy(found):
        got = [f["country_of_origin"].text[0] if "country_of_origin" in f else None for f in found]
        return sum(g == e for g, e in zip(got, expected)) / len(rows)

    return {
        "products": len(rows),
        "model": model_dir,
        "rules_only": accuracy([extract_attributes(t) for t in texts]),
        "rules_and_ner": accuracy([extract_attributes(t, entities=e) for t, e in zip(texts, entities)]),
        "loc_entities": sum(1 for es in entities for e in es if e.label == "LOC"),
    }


def main(argv=None) -> int:
    shared = _shared_data()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ner", description=__doc__.split("\n")[0])
    parser.add_argument("--eval", default=str(shared / "ner" / "conll2003" / "valid.txt"), help="CoNLL-format evaluation file")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "ner.json"), help="where to write the results JSON")
    parser.add_argument("--train", default=str(shared / "ner" / "conll2003" / "train.txt"), help="training file (used when no model exists, and for calibration)")
    parser.add_argument("--tuning", default=str(shared / "ner" / "uner_en_ewt" / "en_ewt-ud-dev.iob2"), help="held-out text (words only) on which mixed-precision trials are scored by agreement with FP32")
    parser.add_argument("--model-dir", default=str(ROOT / "out" / "models" / "ner"), help="models folder: <dir>/torch is the trained model, <dir>/candidates the built ones")
    parser.add_argument("--report-dir", default=str(ROOT / "benchmarks" / "results" / "ner"), help="report.html/json/png go here")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts to time at (the first is the deployment count used for the choice)")
    parser.add_argument("--max-eval", type=int, default=None, help="evaluate on the first N sentences only")
    parser.add_argument("--tuning-sentences", type=int, default=400)
    parser.add_argument("--calibration-sentences", type=int, default=128)
    parser.add_argument("--max-f1-drop", type=float, default=1.0, help="accuracy budget vs ORT FP32, in F1 points")
    parser.add_argument("--max-length", type=int, default=128, help="model window in tokens (longer sentences are split)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip", default="", help="comma-separated candidates to leave out (e.g. int8_mixed)")
    parser.add_argument("--train-minutes", type=float, default=45.0, help="time budget when a model must be trained first")
    parser.add_argument("--epochs", type=int, default=2, help="epochs when a model must be trained first")
    parser.add_argument("--grocery", default=str(shared / "ner" / "grocery_country_of_origin"),
                        help="grocery country-of-origin set: accuracy of rules alone and rules + the chosen model")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    for name in ("components", "benchmarks"):
        logging.getLogger(name).setLevel(logging.INFO)

    from components.candidates import choose_candidate, cpu_info, write_report
    from components.ner_candidates import build_candidates, calibration_feeds, evaluate_ner_candidates, model_latency
    from components.ner_data import read_ner
    from components.ner_train import TrainConfig, train_ner

    model_dir = pathlib.Path(args.model_dir)
    torch_dir = model_dir / "torch"
    trained_now = False
    if not _has_model(torch_dir):
        _say(f"no trained model at {torch_dir}: training one first on {args.train} "
             f"({args.epochs} epochs, at most {args.train_minutes:.0f} minutes)")
        cfg = TrainConfig(epochs=args.epochs, max_length=64, num_threads=int(args.threads.split(",")[0]),
                          max_train_seconds=args.train_minutes * 60, log_every_steps=50)
        eval_for_training = str(shared / "ner" / "conll2003" / "valid.txt")
        train_ner(args.train, str(torch_dir), eval_data=eval_for_training if os.path.exists(eval_for_training) else None,
                  config=cfg, progress=lambda e: _say(json.dumps(e)))
        trained_now = True
    train_info = {}
    if (torch_dir / "train_metrics.json").exists():
        record = json.loads((torch_dir / "train_metrics.json").read_text())
        train_info = {k: record.get(k) for k in ("best_f1", "steps", "train_seconds", "stopped_early", "config", "train_sentences", "eval_sentences")}
        train_info["history"] = [{k: h.get(k) for k in ("epoch", "step", "f1", "f1_LOC")} for h in record.get("history", [])]

    eval_sents = read_ner(args.eval, limit=args.max_eval)
    calibration = read_ner(args.train, limit=args.calibration_sentences)
    tuning = read_ner(args.tuning, limit=args.tuning_sentences)
    skip = {s for s in args.skip.split(",") if s}
    include = [c for c in ("torch_fp32", "fp32", "fp32_fused", "int8_dynamic", "int8_dynamic_fused", "int8_static", "int8_mixed")
               if c not in skip]

    t0 = time.perf_counter()
    _say(f"building candidates {include} under {model_dir / 'candidates'}")
    folders, build_notes = build_candidates(
        str(torch_dir), str(model_dir / "candidates"), calibration=calibration, tuning=tuning,
        max_f1_drop=args.max_f1_drop, max_length=args.max_length, include=include,
        progress=_say,
    )
    build_secs = time.perf_counter() - t0

    threads = [int(t) for t in args.threads.split(",") if t]
    scores: dict = {}
    by_threads = {}
    # the no-fusion baseline: the exported graph with onnxruntime's online fusions off (a measurement, not a candidate)
    measured, levels = dict(folders), {}
    if "fp32" in folders:
        measured["fp32_unfused"], levels["fp32_unfused"] = folders["fp32"], "basic"
        build_notes["fp32_unfused"] = {"graph": "fp32", "onnxruntime_graph_optimization": "basic (no fusion)"}
    for n in threads:
        _say(f"evaluating {len(measured)} candidates on {len(eval_sents)} sentences of {args.eval} at {n} thread(s)")
        notes = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in build_notes.items()}
        by_threads[n] = evaluate_ner_candidates(
            measured, eval_sents, threads=n, repeats=args.repeats, max_length=args.max_length, notes=notes, scores=scores,
            graph_optimization=levels,
        )
        for r in by_threads[n]:
            _say(f"  {n}t {r.name:13s} F1 {r.metrics['f1']:.2f} LOC {r.metrics['f1_LOC']:.2f} "
                 f"{r.throughput_per_s:7.1f} sent/s p95 {r.latency_ms_p95:7.1f} ms {r.size_bytes / 2**20:6.1f} MB")

    # the model alone (no tokenization or decoding): what fusion and quantization change, at full size
    model_only: dict[str, dict] = {}
    specs = {name: (os.path.join(folders[src], "model.onnx"), level) for name, src, level in (
        ("fp32_unfused", "fp32", 1), ("fp32", "fp32", 99), ("fp32_fused", "fp32_fused", 99),
        ("int8_dynamic", "int8_dynamic", 99), ("int8_dynamic_fused", "int8_dynamic_fused", 99)) if src in folders}
    if specs:
        from components.ner_data import Sentence

        # "short": the 64 sentences the end-to-end timing tags, in length order, sub-batches of 16 (as the tagger buckets);
        # "long": 16 full windows of running text (the same sentences' words back to back), as descriptions and OCR give
        by_length = sorted(eval_sents[:64], key=lambda s: len(s.words))
        words = tuple(w for s in eval_sents[:400] for w in s.words)
        workloads = {
            "short": calibration_feeds(str(torch_dir), by_length, max_length=args.max_length, batch_size=16),
            "long": calibration_feeds(str(torch_dir), [Sentence(words, ("O",) * len(words))], max_length=args.max_length, batch_size=16)[:1],
        }
        for n in threads:
            for load, feeds in workloads.items():
                timing = model_latency(specs, feeds, threads=n, repeats=max(args.repeats, 20))
                model_only.setdefault(load, {})[str(n)] = {name: {"ms_p50": t["p50_ms"], "ms_mean": t["mean_ms"]} for name, t in timing.items()}
                _say(f"  {n}t model only, {load}: " + ", ".join(f"{k} {v['mean_ms']:.0f} ms" for k, v in timing.items()))

    deploy = [r for r in by_threads[threads[0]] if r.name in folders]
    try:
        chosen = choose_candidate(deploy, metric="f1", max_accuracy_drop=args.max_f1_drop, reference="fp32")
        choice_error = None
    except Exception as exc:  # noqa: BLE001: recorded in the report
        chosen, choice_error = None, str(exc)
    report_paths = write_report(
        by_threads[threads[0]], chosen, args.report_dir, title=f"NER candidates ({threads[0]} thread(s), {pathlib.Path(args.eval).name})",
        metric="f1", context={"eval": args.eval, "sentences": len(eval_sents), "threads": threads[0],
                              "max_f1_drop": args.max_f1_drop, "build_notes": build_notes},
    )

    def res(n, name):
        return next((r for r in by_threads[n] if r.name == name), None)

    ratios = {}
    for n in threads:
        torch_r, fp32_r, fused_r, plain_r = res(n, "torch_fp32"), res(n, "fp32"), res(n, "fp32_fused"), res(n, "fp32_unfused")
        row = {}
        if fp32_r and plain_r:  # onnxruntime's online fusions (LayerNorm, GELU, MatMul+Add) vs none
            row["fused_vs_unfused_throughput"] = fp32_r.throughput_per_s / plain_r.throughput_per_s
        if fused_r and plain_r:  # the transformers optimizer's offline fusion (Attention, SkipLayerNorm, ...) vs none
            row["offline_fused_vs_unfused_throughput"] = fused_r.throughput_per_s / plain_r.throughput_per_s
        if fused_r and fp32_r:
            row["offline_vs_online_fusion_throughput"] = fused_r.throughput_per_s / fp32_r.throughput_per_s
        for load, by_n in model_only.items():
            alone = by_n.get(str(n), {})
            for name in ("fp32", "fp32_fused", "int8_dynamic", "int8_dynamic_fused"):
                if name in alone and "fp32_unfused" in alone:
                    row[f"model_only_{load}_{name}_vs_unfused_speed"] = alone["fp32_unfused"]["ms_mean"] / alone[name]["ms_mean"]
        for q in ("int8_dynamic", "int8_dynamic_fused", "int8_static", "int8_mixed"):
            r = res(n, q)
            if r and torch_r:
                row[f"{q}_vs_torch_throughput"] = r.throughput_per_s / torch_r.throughput_per_s
        if chosen and torch_r:
            row["chosen_vs_torch_throughput"] = res(n, chosen.name).throughput_per_s / torch_r.throughput_per_s
        ratios[str(n)] = row
    metrics = {r.name: r.metrics for r in by_threads[threads[0]]}
    fp32_f1 = metrics["fp32"]["f1"]
    f1_drops = {name: fp32_f1 - m["f1"] for name, m in metrics.items()}
    n0 = str(threads[0])
    targets = {}
    if chosen:
        targets["chosen_f1_ge_90"] = chosen.metrics["f1"] >= 90.0
    if "int8_dynamic" in folders:
        targets["int8_dynamic_within_1_f1"] = f1_drops["int8_dynamic"] <= 1.0
        if "int8_dynamic_vs_torch_throughput" in ratios[n0]:
            targets[f"int8_dynamic_ge_3x_torch_at_{n0}t"] = ratios[n0]["int8_dynamic_vs_torch_throughput"] >= 3.0
    for n in threads:  # "measurably": the better fusion runs the model alone at least 3% faster than no fusion
        row = ratios[str(n)]
        for load in model_only:
            gains = [row[k] for k in (f"model_only_{load}_fp32_vs_unfused_speed", f"model_only_{load}_fp32_fused_vs_unfused_speed") if k in row]
            if gains:
                targets[f"fusion_faster_{load}_at_{n}t"] = max(gains) >= 1.03

    grocery = _grocery_accuracy(args.grocery, folders[chosen.name] if chosen else folders["fp32"], args.max_length)

    payload = {
        "eval_file": args.eval,
        "eval_sentences": len(eval_sents),
        "split_note": "figures are on the file named in eval_file (CoNLL-2003 valid by default), not the test split",
        "trained_now": trained_now,
        "training": train_info,
        "candidates": {
            name: {
                "f1": metrics[name]["f1"],
                "f1_LOC": metrics[name]["f1_LOC"],
                "f1_drop_vs_ort_fp32": f1_drops[name],
                "size_bytes": res(threads[0], name).size_bytes,
                "by_threads": {
                    str(n): {
                        "sentences_per_s": res(n, name).throughput_per_s,
                        "latency_ms_p50": res(n, name).latency_ms_p50,
                        "latency_ms_p95": res(n, name).latency_ms_p95,
                        "batch_sentences": 64,
                    }
                    for n in threads
                },
                "notes": build_notes.get(name, {}),
            }
            for name in measured
        },
        "chosen": chosen.name if chosen else None,
        "choice_error": choice_error,
        "ratios": ratios,
        "model_only_ms": model_only,
        "targets": targets,
        "grocery_country_of_origin": grocery,
        "build_seconds": build_secs,
        "report": report_paths,
        "cpu": cpu_info(),
    }
    out = pathlib.Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, out)
    _say(f"chosen: {payload['chosen']}; targets: {targets}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

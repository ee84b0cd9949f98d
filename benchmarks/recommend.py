"""Recommendation benchmark: baselines, the learned model and its quantized candidates, side by side.

Usage (from the repository root)::

    python -m benchmarks.recommend --train train.csv --eval eval.csv --json benchmarks/results/recommend.json
    python -m benchmarks.recommend --data ../shared/data/retail/online_retail_2010-12_2011-09.csv \\
        --split-date 2011-08-01 --json benchmarks/results/recommend.json

Both files use the UCI Online Retail layout. The training period's baskets
train every model; the evaluation period's baskets (two or more items) each
hide one item, chosen with a fixed seed, and the rest is the query
(:mod:`components.recommend_eval`). Reported per model: recall@10,
NDCG@10, coverage@10, scoring time. Models:

* ``popularity``, ``cooccurrence`` (raw counts), ``cosine_cooccurrence``,
  ``cosine_cooccurrence_recency`` (baskets weighted by recency),
  ``ease`` (a closed-form linear item-item model, NumPy; a dense N x N
  inverse, so a reference for small catalogs only);
* ``fp32`` (the Keras model as a SavedModel), ``tflite_fp32``,
  ``tflite_fp16``, ``tflite_dynamic``, ``tflite_int8``: the candidates,
  compared and chosen with :mod:`components.candidates` (recall@10 within
  1% relative of FP32, then the highest throughput);
* ``blend_<candidate>``: the chosen candidate's scores blended 50/50 with
  cosine co-occurrence (the ``aisle recommend`` FBT default; alpha is fixed,
  not tuned on the evaluation period).

It also times similar-items (cosine top-10 over the embeddings) for every
item of the vocabulary and for a synthesized 100k-item catalog.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import numpy as np

from components.candidates import CandidateResult, choose_candidate, cpu_info, file_size, measure_latency, write_report
from components.recommend_baselines import (
    BlendScorer,
    CooccurrenceScorer,
    PopularityScorer,
    basket_matrix,
    recency_weights,
)
from components.recommend_data import read_online_retail_csv, split_by_time
from components.recommend_eval import evaluate, make_queries
from components.recommend_model import EmbeddingScorer, TrainConfig, export_model, train_item_model
from components.recommend_quantize import MODES, TFLiteScorer, convert_tflite
from transforms.inference.recommend import load_saved_model_predict
from transforms.recommend import top_k_similar
from transforms.recommend_vocab import ItemVocab

K = 10
METRIC = f"recall@{K}"


class EaseScorer:
    """Closed-form linear item-item model: B = -P / diag(P), P = (X'X + lambda I)^-1, zero diagonal."""

    name = "ease"

    def __init__(self, X, *, l2: float = 100.0):
        G = (X.T @ X).toarray().astype(np.float64)
        P = np.linalg.inv(G + l2 * np.eye(G.shape[0]))
        B = -P / np.diag(P)
        np.fill_diagonal(B, 0.0)
        self.B = B.astype(np.float32)

    def score(self, queries):
        out = np.zeros((len(queries), self.B.shape[0]), np.float32)
        for r, q in enumerate(queries):
            if q:
                out[r] = self.B[np.asarray(q)].sum(axis=0)
        return out


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _timed(fn):
    w0, c0 = time.perf_counter(), _cpu_seconds()
    value = fn()
    return value, time.perf_counter() - w0, _cpu_seconds() - c0


def _all_items_seconds(scorer, n_items: int, batch: int = 256) -> float:
    """Seconds to score a single-item query for every item (the FBT workload)."""
    queries = [[i] for i in range(n_items)]
    start = time.perf_counter()
    for s in range(0, n_items, batch):
        scorer.score(queries[s : s + batch])
    return time.perf_counter() - start


def similar_items_scale(n_items: int, dim: int, *, k: int = K, seed: int = 0, block_rows: int = 1024) -> dict:
    """Wall and CPU seconds for exact cosine top-k of every item of a random n_items x dim catalog."""
    emb = np.random.default_rng(seed).normal(size=(n_items, dim)).astype(np.float32)
    (_, _), wall, cpu = _timed(lambda: top_k_similar(emb, k, block_rows=block_rows))
    return {"items": n_items, "dim": dim, "k": k, "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}


def run(args) -> dict:
    t_start = time.perf_counter()
    if args.data:
        train, held = split_by_time(read_online_retail_csv(args.data), args.split_date)
        data = {"data": args.data, "split_date": args.split_date}
    else:
        train, held = read_online_retail_csv(args.train), read_online_retail_csv(args.eval)
        cut = min(b.time for b in held)
        train = [b for b in train if b.time < cut]  # never leak: drop training baskets from the evaluation period
        data = {"train": args.train, "eval": args.eval}
    train_items = [b.items for b in train]
    vocab = ItemVocab.build(train_items)
    queries = make_queries([b.items for b in held], vocab, seed=args.seed)
    data.update(
        train_baskets=len(train),
        eval_baskets=len(held),
        queries=len(queries),
        vocab_items=len(vocab),
        train_period=[str(min(b.time for b in train)), str(max(b.time for b in train))],
        eval_period=[str(min(b.time for b in held)), str(max(b.time for b in held))],
    )
    print(f"data: {data}", flush=True)
    X = basket_matrix(train_items, vocab)
    results: dict[str, dict] = {}

    def record(name: str, scorer, kind: str, **extra):
        m = evaluate(scorer, queries, k=K)
        m["all_items_seconds"] = round(_all_items_seconds(scorer, len(vocab)), 3)
        m.update(kind=kind, **extra)
        results[name] = m
        print(f"{name:32s} recall@10 {m[METRIC]:.4f}  ndcg@10 {m[f'ndcg@{K}']:.4f}  coverage {m[f'coverage@{K}']:.3f}  "
              f"all-items {m['all_items_seconds']:.2f}s", flush=True)
        return m

    cosine = CooccurrenceScorer(X, normalize="cosine")
    record("popularity", PopularityScorer(vocab.counts), "baseline")
    record("cooccurrence", CooccurrenceScorer(X), "baseline")
    record("cosine_cooccurrence", cosine, "baseline")
    weights = recency_weights([b.time for b in train], half_life_days=args.half_life_days)
    record(
        "cosine_cooccurrence_recency",
        CooccurrenceScorer(basket_matrix(train_items, vocab, weights=weights), normalize="cosine"),
        "baseline",
        half_life_days=args.half_life_days,
    )
    if not args.skip_ease:
        record("ease", EaseScorer(X), "reference", note="dense N x N inverse; small catalogs only")

    # the learned model
    config = TrainConfig(dim=args.dim, epochs=args.epochs, seed=args.seed)
    trained, train_wall, train_cpu = _timed(lambda: train_item_model(train_items, vocab, config))
    print(f"trained {config} in {train_wall:.0f}s wall, {train_cpu:.0f}s CPU", flush=True)
    work = args.model_dir or tempfile.mkdtemp(prefix="aisle-recommend-bench-")
    paths = export_model(trained, work)
    calibration = make_queries(train_items[-2000:], vocab, seed=args.seed + 1).rows[:200]
    models = {"fp32": paths["saved_model"]}
    for mode in MODES:
        models[f"tflite_{mode}"] = convert_tflite(
            paths["saved_model"],
            os.path.join(work, f"model_{mode}.tflite"),
            mode=mode,
            representative_queries=calibration,
            max_query_items=config.max_query_items,
        )
    scorers: dict[str, EmbeddingScorer] = {}
    for name, path in models.items():
        if name == "fp32":
            loaded = load_saved_model_predict(path)
            scorers[name] = EmbeddingScorer(loaded.predict, loaded.max_query_items, name=name)
        else:
            scorers[name] = TFLiteScorer(path, config.max_query_items, num_threads=args.threads, name=name)
    batch = queries.rows[: args.latency_batch]
    candidates = []
    for name, scorer in scorers.items():
        m = record(name, scorer, "candidate", size_bytes=file_size(models[name]))
        timing = measure_latency(lambda s=scorer: s.score(batch), warmup=2, repeats=args.repeats)
        m.update(latency_ms_p50=timing["p50_ms"], latency_ms_p95=timing["p95_ms"], batch=len(batch))
        candidates.append(
            CandidateResult(
                name=name,
                model_path=models[name],
                size_bytes=file_size(models[name]),
                metrics={METRIC: m[METRIC], f"ndcg@{K}": m[f"ndcg@{K}"], f"coverage@{K}": m[f"coverage@{K}"]},
                latency_ms_p50=timing["p50_ms"],
                latency_ms_p95=timing["p95_ms"],
                throughput_per_s=len(batch) * 1000.0 / timing["mean_ms"],
                notes=f"batch of {len(batch)} basket queries",
            )
        )
    fp32_recall = results["fp32"][METRIC]
    chosen = choose_candidate(candidates, metric=METRIC, max_accuracy_drop=0.01 * fp32_recall, reference="fp32")
    print(f"chosen: {chosen.name}", flush=True)
    record(f"blend_{chosen.name}", BlendScorer(scorers[chosen.name], cosine, alpha=0.5, name="blend"), "blend", alpha=0.5)
    if chosen.name != "fp32":
        record("blend_fp32", BlendScorer(scorers["fp32"], cosine, alpha=0.5, name="blend"), "blend", alpha=0.5)

    # similar items: every vocabulary item, then a synthesized 100k catalog
    emb = trained.item_embeddings()
    _, sim_wall, sim_cpu = _timed(lambda: top_k_similar(emb, K))
    scale = similar_items_scale(args.scale_items, args.dim) if args.scale_items else None
    if scale:
        print(f"similar items at scale: {scale}", flush=True)

    if not args.model_dir:  # the models were scored above; only --model-dir keeps them
        shutil.rmtree(work, ignore_errors=True)
    report_dir = args.report_dir
    reference = results["cosine_cooccurrence"][METRIC]
    summary = {
        "data": data,
        "k": K,
        "machine": cpu_info(),
        "train": {"config": trained.config.__dict__, "wall_seconds": round(train_wall, 1), "cpu_seconds": round(train_cpu, 1), "history": trained.history},
        "results": results,
        "chosen": chosen.name,
        "chosen_vs_cosine_cooccurrence": round(results[chosen.name][METRIC] / reference, 3) if reference else None,
        "quantized_relative_drop": {
            name: round(1 - results[name][METRIC] / fp32_recall, 4) for name in models if name != "fp32"
        },
        "similar_items_vocab": {"items": len(vocab), "wall_seconds": round(sim_wall, 3), "cpu_seconds": round(sim_cpu, 3)},
        "similar_items_scale": scale,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if report_dir:
        summary["report"] = write_report(
            candidates,
            chosen,
            report_dir,
            title="Recommendation candidates (basket completion, UCI Online Retail time split)",
            metric=METRIC,
            context={"data": data, "constraint": "recall@10 within 1% relative of fp32", "baselines": {
                n: {METRIC: r[METRIC]} for n, r in results.items() if r["kind"] in ("baseline", "reference")}},
        )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2, default=str)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recommend", description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="one UCI Online Retail CSV holding both periods (with --split-date)")
    src.add_argument("--train", help="UCI Online Retail CSV of the training period (with --eval)")
    parser.add_argument("--eval", help="UCI Online Retail CSV of the evaluation period")
    parser.add_argument("--split-date", default="2011-08-01", help="with --data: evaluation starts at this date")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--report-dir", default="benchmarks/results/recommend", help="candidate report folder ('' for none)")
    parser.add_argument("--model-dir", default=None, help="keep the trained model and candidates here (default: a temp folder)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--dim", type=int, default=TrainConfig.dim)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--half-life-days", type=float, default=60.0, help="recency weighting of the recency baseline")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    parser.add_argument("--latency-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--scale-items", type=int, default=100_000, help="synthesized catalog size for similar-items timing (0 skips)")
    parser.add_argument("--skip-ease", action="store_true")
    args = parser.parse_args(argv)
    if args.train and not args.eval:
        parser.error("--train needs --eval")
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

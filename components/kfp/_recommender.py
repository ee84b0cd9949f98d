"""Recommender glue of the KFP components over ``components.recommend_*``.

The held-out data of the recommender is a time split of the purchase
baskets: ``train_recommender`` writes ``heldout/test_baskets.json`` (the
later baskets, for ``evaluate``) and ``heldout/calibration_queries.json``
(hide-one-item queries from the training baskets, for full INT8
calibration). A candidate is the SavedModel (``saved_model``) or one of its
TFLite conversions (``fp32``, ``fp16``, ``dynamic``, ``int8``); the chosen
one becomes a serving folder: the exported model (``saved_model/``,
``vocab.json``, ``item_embeddings.npy``, ``model.json``, and
``item_index.faiss`` for a catalog large enough to have one), the chosen
``.tflite`` file, and ``serving.json`` naming the engine ``aisle recommend``
uses with it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

from transforms.errors import ConfigError

__all__ = ["split_baskets", "evaluate_recommender_candidates", "serving_folder", "SERVING_FILE"]

SERVING_FILE = "serving.json"


def split_baskets(baskets: Sequence, split: str | None, *, test_share: float = 0.2):
    """(train, test) baskets: before/after ``split`` (ISO date), or the last ``test_share`` of them by time."""
    from components.recommend_data import split_by_time

    if split:
        train, test = split_by_time(baskets, split)
    else:
        ordered = sorted(baskets, key=lambda b: (b.time, b.id))
        cut = max(1, int(round(len(ordered) * (1 - test_share))))
        train, test = ordered[:cut], ordered[cut:]
    if not train or not test:
        raise ConfigError(f"the time split leaves {len(train)} training and {len(test)} test baskets: choose another split date")
    return train, test


def evaluate_recommender_candidates(candidates_dir: str, heldout_dir: str, *, k: int = 10, repeats: int = 10, batch: int = 64):
    """recall@k / ndcg@k on the test baskets, latency per batch of ``batch`` queries, size: one CandidateResult each."""
    from components.candidates import CandidateResult, file_size, measure_latency
    from components.recommend_eval import evaluate, make_queries
    from components.recommend_model import EmbeddingScorer
    from components.recommend_quantize import TFLiteScorer
    from transforms.inference.recommend import load_saved_model_predict, load_vocab

    manifest = json.loads(open(os.path.join(candidates_dir, "candidates.json")).read())
    base = os.path.join(candidates_dir, manifest["base"])
    vocab = load_vocab(base)
    test = json.loads(open(os.path.join(heldout_dir, "test_baskets.json")).read())
    queries = make_queries(test, vocab, seed=0)
    if not len(queries):
        raise ConfigError("no test basket has two or more items: the recommender cannot be evaluated on this split")
    timing_rows = [q for q in queries.rows[:batch] if q] or [[0]]
    results = []
    for name, rel in manifest["candidates"].items():
        path = os.path.join(candidates_dir, rel)
        if name == "saved_model":
            model = load_saved_model_predict(path)
            scorer = EmbeddingScorer(model.predict, model.max_query_items, name=name)
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
        else:
            scorer = TFLiteScorer(path, name=name)
            size = file_size(path)
        metrics = evaluate(scorer, queries, k=k)
        timing = measure_latency(lambda: scorer.score(timing_rows), warmup=2, repeats=repeats)
        results.append(
            CandidateResult(
                name=name,
                model_path=path,
                size_bytes=size,
                metrics={m: float(v) for m, v in metrics.items() if m.startswith(("recall@", "ndcg@", "coverage@"))},
                latency_ms_p50=timing["p50_ms"],
                latency_ms_p95=timing["p95_ms"],
                throughput_per_s=len(timing_rows) * 1000.0 / timing["mean_ms"] if timing["mean_ms"] > 0 else float("inf"),
                notes=f"{int(metrics['queries'])} test queries; {len(timing_rows)} queries per timed call",
            )
        )
    return results


def serving_folder(candidates_dir: str, chosen_name: str, out_dir: str) -> dict:
    """Write the serving folder of the chosen candidate to ``out_dir``; returns its ``serving.json``."""
    manifest = json.loads(open(os.path.join(candidates_dir, "candidates.json")).read())
    shutil.copytree(os.path.join(candidates_dir, manifest["base"]), out_dir, dirs_exist_ok=True)
    serving = {"engine": "saved_model", "tflite": None}
    if chosen_name != "saved_model":
        name = os.path.basename(manifest["candidates"][chosen_name])
        shutil.copy2(os.path.join(candidates_dir, manifest["candidates"][chosen_name]), os.path.join(out_dir, name))
        serving = {"engine": "tflite", "tflite": name}
    serving["candidate"] = chosen_name
    with open(os.path.join(out_dir, SERVING_FILE), "w") as fh:
        json.dump(serving, fh, indent=2)
    return serving

"""Similar items: exact search against the approximate item index (:mod:`transforms.item_index`), side by side.

For catalogs of several sizes, one thread each: the CPU seconds to find the
10 nearest neighbours of ``--queries`` items exactly
(:func:`transforms.recommend.top_k_similar_t`, blocks as the job sizes
them) and through the index at several ``nprobe``, in alternating rounds;
the index's recall@10 against the exact lists; its build time and file
size. The CPU seconds for the whole catalog (every item's list, as
the recommend job computes them) are the per-query figures times the catalog.

Embeddings:

* ``trained``: the item embeddings of the recommendation model trained on
  the real retail data (``--data``, as ``aisle recommend`` trains it, 8
  epochs), and larger catalogs made from them: item ``j`` is trained item
  ``j mod V`` plus Gaussian noise of ``--jitter`` times the embeddings' mean
  norm per dimension, so each trained item becomes a cloud of variants;
* ``random``: Gaussian embeddings with no structure, the index's worst case
  (every item about as far from every other; what the untrained models of
  ``benchmarks.scale`` have).

    python -m benchmarks.item_index --data ../shared/data/retail/online_retail_2010-12_2011-09.csv \\
        --json benchmarks/results/item_index.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

from transforms.item_index import build_item_index, default_nlist, search_similar, write_item_index
from transforms.recommend import score_block_rows, top_k_similar_t, unit_transposed

K = 10
NPROBES = (8, 16, 32)


def _cpu(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def trained_embeddings(data: str, *, epochs: int, seed: int = 0) -> np.ndarray:
    from components.recommend_data import read_online_retail_csv
    from components.recommend_model import TrainConfig, train_item_model
    from transforms.recommend_vocab import ItemVocab

    baskets = [b.items for b in read_online_retail_csv(data)]
    vocab = ItemVocab.build(baskets)
    trained = train_item_model(baskets, vocab, TrainConfig(epochs=epochs, seed=seed))
    return np.asarray(trained.item_embeddings(), np.float32)


def catalog(kind: str, n: int, base: np.ndarray | None, *, jitter: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((n, base.shape[1] if base is not None else 128)).astype(np.float32)
    scale = jitter * float(np.linalg.norm(base, axis=1).mean()) / np.sqrt(base.shape[1])
    src = np.arange(n) % base.shape[0]
    return base[src] + scale * rng.standard_normal((n, base.shape[1])).astype(np.float32)


def measure(emb: np.ndarray, *, queries: int, rounds: int, seed: int) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)
    unit_t = unit_transposed(emb)
    n = unit_t.shape[1]
    rows = np.sort(np.random.default_rng(seed).choice(n, min(queries, n), replace=False))
    block = score_block_rows(n)  # as the job's NearestNeighboursFn sizes a block of scores
    index, build_cpu = _cpu(lambda: build_item_index(unit_t.T, threads=1))
    with tempfile.TemporaryDirectory() as tmp:
        size = os.path.getsize(write_item_index(index, os.path.join(tmp, "item_index.faiss")))
    exact_t, probe_t = [], {p: [] for p in NPROBES}
    exact_i = None
    found = {}
    for _ in range(rounds):  # alternating: exact, then each nprobe
        (exact_i, _), t = _cpu(lambda: top_k_similar_t(unit_t, K, rows=rows, block_rows=block))
        exact_t.append(t)
        for p in NPROBES:
            (found[p], _), t = _cpu(lambda: search_similar(index, unit_t, rows, K, nprobe=p, exact_block_rows=block))
            probe_t[p].append(t)
    exact_med = statistics.median(exact_t)
    out = {
        "items": n,
        "dim": int(unit_t.shape[0]),
        "queries": int(rows.size),
        "nlist": int(index.nlist),
        "build_cpu_seconds": round(build_cpu, 2),
        "index_mib": round(size / 2**20, 1),
        "exact": {"cpu_seconds": [round(t, 3) for t in exact_t], "catalog_cpu_seconds": round(exact_med * n / rows.size, 1)},
    }
    for p in NPROBES:
        med = statistics.median(probe_t[p])
        recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found[p], exact_i)]))
        out[f"nprobe_{p}"] = {
            "cpu_seconds": [round(t, 3) for t in probe_t[p]],
            "catalog_cpu_seconds": round(med * n / rows.size, 1),
            "speedup_vs_exact": round(exact_med / med, 1),
            "recall_at_10": round(recall, 4),
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.item_index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="UCI Online Retail CSV to train the model whose embeddings are searched")
    parser.add_argument("--items", default="37200,372000", help="catalog sizes (comma-separated)")
    parser.add_argument("--kinds", default="trained,random")
    parser.add_argument("--queries", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jitter", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="add the results to this file under --key")
    parser.add_argument("--key", default="item_index")
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    base = None
    from components.candidates import cpu_info

    results: dict = {"k": K, "jitter": args.jitter, "machine": cpu_info(), "default_nlist": {}, "runs": {}}
    if "trained" in kinds:
        if not args.data:
            parser.error("--kinds trained needs --data")
        t0 = time.perf_counter()
        base = trained_embeddings(args.data, epochs=args.epochs, seed=args.seed)
        results["trained"] = {"data": args.data, "items": int(base.shape[0]), "dim": int(base.shape[1]),
                              "train_seconds": round(time.perf_counter() - t0, 1)}
        print(f"trained embeddings: {base.shape}", flush=True)
        results["runs"]["trained_real_catalog"] = measure(base, queries=args.queries, rounds=args.rounds, seed=args.seed)
        print(json.dumps(results["runs"]["trained_real_catalog"]), flush=True)
    for n in (int(x) for x in args.items.split(",")):
        results["default_nlist"][n] = default_nlist(n)
        for kind in kinds:
            emb = catalog(kind, n, base, jitter=args.jitter, seed=args.seed)
            res = measure(emb, queries=args.queries, rounds=args.rounds, seed=args.seed)
            results["runs"][f"{kind}_{n}"] = res
            print(kind, json.dumps(res), flush=True)
    if args.json:
        existing = json.load(open(args.json)) if os.path.exists(args.json) else {}
        existing[args.key] = results
        with open(args.json, "w") as fh:
            json.dump(existing, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

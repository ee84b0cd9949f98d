"""Basket-completion evaluation of recommenders on a time split.

For every held-out basket with at least two items, one item (chosen with a
seeded random generator, the same for every scorer) is hidden and the rest
is the query; a scorer ranks the whole vocabulary with the query items
excluded. ``recall@k`` is the share of queries whose hidden item is in the
top k (one relevant item, so recall = hit rate); ``ndcg@k`` adds
``1 / log2(rank + 2)`` for a hit at 0-based ``rank``; ``coverage@k`` is the
share of vocabulary items that appear in at least one top-k list. A hidden
item the training period never saw counts as a miss, as it would in
production.

>>> from components.recommend_baselines import PopularityScorer
>>> from transforms.recommend_vocab import ItemVocab
>>> vocab = ItemVocab(("a", "b", "c"), (3, 2, 1))
>>> qs = make_queries([["a", "b"]], vocab, seed=0)
>>> evaluate(PopularityScorer(vocab.counts), qs, k=1)["recall@1"] in (0.0, 1.0)
True
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from transforms.errors import ConfigError
from transforms.recommend_vocab import ItemVocab

__all__ = ["Queries", "make_queries", "evaluate", "top_k_rows"]


@dataclass(frozen=True)
class Queries:
    """Hide-one-item queries: ``rows[i]`` are the known query items, ``target[i]`` the hidden row (-1 if unseen)."""

    rows: list[list[int]]
    target: np.ndarray
    vocab_size: int

    def __len__(self) -> int:
        return len(self.rows)


def make_queries(baskets: Sequence[Sequence[str]], vocab: ItemVocab, *, seed: int = 0, min_items: int = 2) -> Queries:
    """One hide-one-item query per basket with at least ``min_items`` distinct items."""
    rng = np.random.default_rng(seed)
    rows, target = [], []
    for items in baskets:
        items = list(dict.fromkeys(items))
        if len(items) < min_items:
            continue
        h = int(rng.integers(len(items)))
        rows.append(vocab.encode(items[:h] + items[h + 1 :]))
        target.append(vocab.get(items[h], -1))
    return Queries(rows, np.asarray(target, np.int64), len(vocab))


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores of each row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def evaluate(scorer, queries: Queries, *, k: int = 10, batch_size: int = 512, clock=time.perf_counter) -> dict[str, float]:
    """recall@k, ndcg@k, coverage@k and the scoring time of ``scorer`` on ``queries``."""
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if not len(queries):
        raise ConfigError("no evaluation queries: the held-out period has no basket with two or more items")
    hits = 0
    dcg = 0.0
    seen = np.zeros(queries.vocab_size, bool)
    seconds = 0.0
    for start in range(0, len(queries), batch_size):
        rows = queries.rows[start : start + batch_size]
        t0 = clock()
        scores = np.array(scorer.score(rows), dtype=np.float32, copy=True)
        for r, q in enumerate(rows):
            if q:
                scores[r, q] = -np.inf
        top = top_k_rows(scores, k)
        seconds += clock() - t0
        seen[top.ravel()] = True
        target = queries.target[start : start + batch_size]
        match = top == target[:, None]
        found = match.any(axis=1)
        hits += int(found.sum())
        ranks = match.argmax(axis=1)[found]
        dcg += float(np.sum(1.0 / np.log2(ranks + 2.0)))
    n = len(queries)
    return {
        f"recall@{k}": hits / n,
        f"ndcg@{k}": dcg / n,
        f"coverage@{k}": float(seen.mean()),
        "queries": float(n),
        "query_ms_per_1k": 1000.0 * seconds / n * 1000.0,
        "unseen_target_share": float(np.mean(queries.target < 0)),
    }


"""NumPy/scikit-learn/SciPy recommenders: popularity and co-occurrence baselines.

Every scorer here has the same shape as the learned model's scorer
(:class:`components.recommend_model.EmbeddingScorer`): ``score(queries)``
takes a list of queries, each a list of vocabulary rows, and returns a
``(len(queries), len(vocab))`` float32 matrix of scores (higher is better).
:mod:`components.recommend_eval` ranks items by it.

>>> from transforms.recommend_vocab import ItemVocab
>>> vocab = ItemVocab.build([["a", "b"], ["a", "b"], ["a", "c"]])
>>> X = basket_matrix([["a", "b"], ["a", "b"], ["a", "c"]], vocab)
>>> CooccurrenceScorer(X).matrix.tolist()
[[0.0, 2.0, 1.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
>>> CooccurrenceScorer(X).score([[0]]).round(3).tolist()  # a tiny popularity term breaks ties
[[0.0, 2.0, 1.0]]
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from transforms.errors import ConfigError
from transforms.recommend_vocab import ItemVocab

__all__ = [
    "basket_matrix",
    "recency_weights",
    "PopularityScorer",
    "CooccurrenceScorer",
    "BlendScorer",
]


def basket_matrix(
    baskets: Sequence[Sequence[str]],
    vocab: ItemVocab,
    *,
    weights: Sequence[float] | None = None,
) -> sp.csr_matrix:
    """A (baskets x items) CSR matrix: 1 (or the basket's weight) where the basket holds the item."""
    rows, cols, vals = [], [], []
    for r, items in enumerate(baskets):
        idx = sorted(set(vocab.encode(items)))
        rows.extend([r] * len(idx))
        cols.extend(idx)
        w = 1.0 if weights is None else float(weights[r])
        vals.extend([w] * len(idx))
    return sp.csr_matrix(
        (np.asarray(vals, np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
        shape=(len(baskets), len(vocab)),
    )


def recency_weights(times: Sequence[_dt.datetime], *, half_life_days: float) -> np.ndarray:
    """Weights ``0.5 ** (age_days / half_life_days)``, age counted back from the latest time."""
    if half_life_days <= 0:
        raise ConfigError(f"half_life_days must be > 0, got {half_life_days}")
    latest = max(times)
    age = np.array([(latest - t).total_seconds() / 86400.0 for t in times])
    return np.power(0.5, age / half_life_days).astype(np.float32)


class PopularityScorer:
    """Scores every item by how many training baskets hold it, whatever the query."""

    name = "popularity"

    def __init__(self, item_counts: Sequence[float]):
        self.counts = np.asarray(item_counts, np.float32)

    def score(self, queries: Sequence[Sequence[int]]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(queries), self.counts.size)).copy()


class CooccurrenceScorer:
    """Sum over the query items of their co-occurrence rows.

    ``normalize``: ``"none"`` uses raw basket counts ``C[i, j]``;
    ``"cosine"`` divides by ``sqrt(n_i * n_j)`` (popularity-normalized, so a
    best-seller does not top every list). The diagonal is zero. Dense
    ``N x N`` float32: fine for catalogs up to ~20k items; the Beam
    transform :class:`transforms.recommend.CooccurrenceCounts` scales further.
    """

    def __init__(self, X: sp.csr_matrix, *, normalize: str = "none"):
        if normalize not in ("none", "cosine"):
            raise ConfigError(f"normalize must be 'none' or 'cosine', got {normalize!r}")
        C = (X.T @ X).toarray().astype(np.float32)
        n = np.diag(C).copy()
        np.fill_diagonal(C, 0.0)
        if normalize == "cosine":
            inv = 1.0 / np.sqrt(np.maximum(n, 1e-12))
            C *= inv[:, None]
            C *= inv[None, :]
        self.matrix = C
        self.popularity = n
        self.name = "cooccurrence" if normalize == "none" else "cosine_cooccurrence"

    def score(self, queries: Sequence[Sequence[int]]) -> np.ndarray:
        out = np.zeros((len(queries), self.matrix.shape[0]), np.float32)
        for r, q in enumerate(queries):
            if len(q):
                out[r] = self.matrix[np.asarray(q)].sum(axis=0)
        # Ties and empty queries fall back to popularity, at a scale too small to reorder real scores.
        out += 1e-6 * self.popularity / max(float(self.popularity.max()), 1.0)
        return out


class BlendScorer:
    """``alpha * a + (1 - alpha) * b`` of two scorers, each row scaled to max 1 first."""

    def __init__(self, a, b, *, alpha: float, name: str = "blend"):
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"blend alpha must be in [0, 1], got {alpha}")
        self.a, self.b, self.alpha, self.name = a, b, alpha, name

    @staticmethod
    def _scale(s: np.ndarray) -> np.ndarray:
        m = np.abs(s).max(axis=1, keepdims=True)
        return s / np.where(m > 0, m, 1.0)

    def score(self, queries: Sequence[Sequence[int]]) -> np.ndarray:
        return self.alpha * self._scale(self.a.score(queries)) + (1 - self.alpha) * self._scale(self.b.score(queries))

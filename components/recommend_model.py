"""The learned recommender: item embeddings trained on basket completion in TensorFlow/Keras.

The model reads a query, a short list of items (a basket with one item
hidden, a visitor's history, or a single item), as padded vocabulary rows
plus one weight per row, pools the item embeddings with those weights and
scores every item of the vocabulary with one dense layer::

    ids     [batch, max_query_items] int32   row + 1, 0 = padding
    weights [batch, max_query_items] float32 sum to 1 over the real items
    scores  [batch, vocab_size]      float32 higher = more likely to complete the query

It is trained CBOW-style (the item2vec family): every item of a training
basket is in turn the target and the other items (a random subset, some
dropped) are the query, with a softmax over the whole vocabulary.
Weighted pooling (multiply and sum, no division) keeps every op of the
exported graph available as an INT8 TFLite kernel. The embedding matrix
also serves nearest-neighbour "similar items" (cosine).

>>> cfg = TrainConfig(dim=8, epochs=1)
>>> cfg.max_query_items
48
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from transforms.errors import ConfigError
from transforms.recommend_vocab import ItemVocab, encode_queries

__all__ = [
    "TrainConfig",
    "TrainedModel",
    "build_model",
    "encode_queries",
    "train_item_model",
    "export_model",
    "EmbeddingScorer",
]


@dataclass(frozen=True)
class TrainConfig:
    """Training options; the defaults were chosen on the UCI Online Retail dev split (benchmarks/recommend)."""

    dim: int = 128
    max_query_items: int = 48
    epochs: int = 8
    batch_size: int = 1024
    learning_rate: float = 4e-3
    context_drop: float = 0.2
    seed: int = 0

    def __post_init__(self):
        for name in ("dim", "max_query_items", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.context_drop < 1.0:
            raise ConfigError(f"TrainConfig.context_drop must be in [0, 1), got {self.context_drop}")


def build_model(vocab_size: int, *, dim: int = 128, max_query_items: int = 48, seed: int = 0):
    """The Keras model (ids, weights) -> scores over ``vocab_size`` items."""
    import keras

    keras.utils.set_random_seed(seed)
    ids = keras.Input((max_query_items,), dtype="int32", name="ids")
    weights = keras.Input((max_query_items,), dtype="float32", name="weights")
    emb = keras.layers.Embedding(vocab_size + 1, dim, name="item_embedding")(ids)
    pooled = keras.ops.sum(emb * keras.ops.expand_dims(weights, -1), axis=1)
    scores = keras.layers.Dense(vocab_size, name="item_scores")(pooled)
    return keras.Model({"ids": ids, "weights": weights}, scores, name="basket_completion")


@dataclass
class TrainedModel:
    """A trained Keras model with its vocabulary, config and training history."""

    model: object
    vocab: ItemVocab
    config: TrainConfig
    history: list[dict] = field(default_factory=list)

    def item_embeddings(self) -> np.ndarray:
        """The (vocab_size, dim) input embedding matrix (padding row removed)."""
        return np.asarray(self.model.get_layer("item_embedding").get_weights()[0][1:], np.float32)

    def scorer(self) -> "EmbeddingScorer":
        model = self.model

        def predict(ids, w):
            return np.asarray(model({"ids": ids, "weights": w}, training=False))

        return EmbeddingScorer(predict, self.config.max_query_items, name="keras_fp32")


def _training_examples(encoded: Sequence[np.ndarray], weights: np.ndarray, cfg: TrainConfig, rng: np.random.Generator):
    """One epoch of (ids, weights, target, sample_weight): each basket item is once the target."""
    L = cfg.max_query_items
    total = sum(len(e) for e in encoded)
    ids = np.zeros((total, L), np.int32)
    w = np.zeros((total, L), np.float32)
    target = np.zeros(total, np.int32)
    sample_w = np.zeros(total, np.float32)
    r = 0
    for b, items in enumerate(encoded):
        n = len(items)
        for h in range(n):
            rest = np.concatenate([items[:h], items[h + 1 :]])
            if cfg.context_drop > 0:
                keep = rng.random(rest.size) >= cfg.context_drop
                if not keep.any():
                    keep[rng.integers(rest.size)] = True
                rest = rest[keep]
            if rest.size > L:
                rest = rng.choice(rest, L, replace=False)
            ids[r, : rest.size] = rest + 1
            w[r, : rest.size] = 1.0 / rest.size
            target[r] = items[h]
            sample_w[r] = weights[b]
            r += 1
    return ids, w, target, sample_w


def train_item_model(
    baskets: Sequence[Sequence[str]],
    vocab: ItemVocab,
    config: TrainConfig = TrainConfig(),
    *,
    basket_weights: Sequence[float] | None = None,
    on_epoch: Callable[[int, "TrainedModel"], dict | None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainedModel:
    """Train the basket-completion model on ``baskets`` (lists of item ids).

    Baskets with fewer than two known items teach nothing and are skipped.
    ``basket_weights`` (e.g. :func:`components.recommend_baselines.recency_weights`)
    weight each basket's examples in the loss. ``on_epoch(epoch, trained)``
    may return extra numbers (an evaluation) to record in the history.
    """
    import keras

    encoded, kept_w = [], []
    for i, items in enumerate(baskets):
        rows = np.asarray(sorted(set(vocab.encode(items))), np.int32)
        if rows.size >= 2:
            encoded.append(rows)
            kept_w.append(1.0 if basket_weights is None else float(basket_weights[i]))
    if not encoded:
        raise ConfigError("no training basket holds two or more known items: nothing to learn item relations from")
    bw = np.asarray(kept_w, np.float32)
    bw = bw / bw.mean()
    rng = np.random.default_rng(config.seed)
    model = build_model(len(vocab), dim=config.dim, max_query_items=config.max_query_items, seed=config.seed)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    trained = TrainedModel(model, vocab, config)
    start = clock()
    for epoch in range(config.epochs):
        ids, w, target, sw = _training_examples(encoded, bw, config, rng)
        fit = model.fit(
            {"ids": ids, "weights": w},
            target,
            sample_weight=sw,
            batch_size=config.batch_size,
            epochs=1,
            shuffle=True,
            verbose=0,
        )
        entry = {"epoch": epoch + 1, "loss": float(fit.history["loss"][-1]), "seconds": clock() - start, "examples": int(target.size)}
        if on_epoch is not None:
            entry.update(on_epoch(epoch + 1, trained) or {})
        trained.history.append(entry)
    return trained


class EmbeddingScorer:
    """Scores queries with any (ids, weights) -> scores function: Keras, SavedModel or TFLite."""

    def __init__(self, predict: Callable[[np.ndarray, np.ndarray], np.ndarray], max_query_items: int, *, batch_size: int = 256, name: str = "model"):
        self.predict = predict
        self.max_query_items = max_query_items
        self.batch_size = batch_size
        self.name = name

    def score(self, queries: Sequence[Sequence[int]], weights: Sequence[Sequence[float]] | None = None) -> np.ndarray:
        ids, w = encode_queries(queries, self.max_query_items, weights=weights)
        out = [self.predict(ids[s : s + self.batch_size], w[s : s + self.batch_size]) for s in range(0, len(ids), self.batch_size)]
        return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)


def export_model(trained: TrainedModel, out_dir: str, *, index_min_items: int | None = None) -> dict[str, str]:
    """Write ``saved_model/``, ``vocab.json``, ``item_embeddings.npy`` and ``model.json`` under ``out_dir``.

    The SavedModel's serving signature takes ``ids`` and ``weights`` and
    returns the scores; TFLite conversions start from it
    (:mod:`components.recommend_quantize`). A model of ``index_min_items``
    items or more (default :data:`transforms.item_index.INDEX_MIN_ITEMS`)
    also gets its approximate similar-items index, ``item_index.faiss``
    (:func:`transforms.item_index.build_model_index`), which the recommend
    job then searches instead of scoring every pair of items. Returns the
    written paths.
    """
    from transforms.item_index import INDEX_MIN_ITEMS, build_model_index

    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "saved_model": os.path.join(out_dir, "saved_model"),
        "vocab": os.path.join(out_dir, "vocab.json"),
        "embeddings": os.path.join(out_dir, "item_embeddings.npy"),
        "metadata": os.path.join(out_dir, "model.json"),
    }
    trained.model.export(paths["saved_model"], format="tf_saved_model", verbose=False)
    with open(paths["vocab"], "w") as fh:
        fh.write(trained.vocab.to_json())
    np.save(paths["embeddings"], trained.item_embeddings())
    with open(paths["metadata"], "w") as fh:
        json.dump({"config": asdict(trained.config), "vocab_size": len(trained.vocab), "history": trained.history}, fh, indent=2)
    if len(trained.vocab) >= (INDEX_MIN_ITEMS if index_min_items is None else index_min_items):
        paths["index"] = build_model_index(out_dir)["path"]
    return paths

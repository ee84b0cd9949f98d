"""The Keras recommender: learns a planted pattern, exports, converts to TFLite, serves through RunInference."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

pytest.importorskip("tensorflow")

from components.recommend_baselines import recency_weights  # noqa: E402
from components.recommend_model import TrainConfig, export_model, train_item_model  # noqa: E402
from components.recommend_quantize import MODES, TFLiteScorer, convert_all  # noqa: E402
from tests.recommend_toy import GROUPS, companions, toy_baskets, variants  # noqa: E402
from transforms.errors import ConfigError, ModelLoadError  # noqa: E402
from transforms.inference.recommend import (  # noqa: E402
    SavedModelQueryHandler,
    TFLiteQueryHandler,
    load_item_embeddings,
    load_saved_model_predict,
    top_k_excluding,
)
from transforms.recommend import top_k_similar  # noqa: E402
from transforms.recommend_vocab import ItemVocab, encode_queries  # noqa: E402

CONFIG = TrainConfig(dim=8, epochs=15, batch_size=64, learning_rate=0.02, max_query_items=8)


@pytest.fixture(scope="module")
def trained():
    baskets = [items for _, items in toy_baskets()]
    vocab = ItemVocab.build(baskets)
    return train_item_model(baskets, vocab, CONFIG), baskets


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, baskets = trained
    out = tmp_path_factory.mktemp("model")
    paths = export_model(model, str(out))
    queries = [model.vocab.encode(b[1:]) for b in baskets]
    paths.update(convert_all(paths["saved_model"], str(out), representative_queries=queries, max_query_items=CONFIG.max_query_items))
    return str(out), paths


def test_learns_the_planted_pattern(trained):
    model, _ = trained
    vocab = model.vocab
    scorer = model.scorer()
    for g in GROUPS:
        for v in variants(g):
            scores = scorer.score([[vocab.index(v)]])[0]
            scores[vocab.index(v)] = -np.inf
            top2 = {vocab.ids[i] for i in np.argsort(-scores)[:2]}
            assert top2 == set(companions(g)), (v, top2)
    idx, _ = top_k_similar(model.item_embeddings(), 1)
    for g in GROUPS:
        a, b = variants(g)
        assert vocab.ids[idx[vocab.index(a), 0]] == b
    assert model.history[-1]["loss"] < model.history[0]["loss"]


def test_untrained_model_does_not_know_the_pattern():
    """The check above can fail: a model trained for zero useful steps misses it."""
    baskets = [items for _, items in toy_baskets()]
    vocab = ItemVocab.build(baskets)
    model = train_item_model(baskets, vocab, TrainConfig(dim=8, epochs=1, batch_size=64, learning_rate=1e-6, max_query_items=8))
    hits = 0
    for g in GROUPS:
        for v in variants(g):
            scores = model.scorer().score([[vocab.index(v)]])[0]
            scores[vocab.index(v)] = -np.inf
            hits += {vocab.ids[i] for i in np.argsort(-scores)[:2]} == set(companions(g))
    assert hits < 2 * len(GROUPS)


def test_config_and_training_errors():
    with pytest.raises(ConfigError, match="dim must be >= 1"):
        TrainConfig(dim=0)
    with pytest.raises(ConfigError, match="two or more known items"):
        train_item_model([["a"]], ItemVocab(("a",), (1,)), CONFIG)


def test_saved_model_and_tflite_match_keras(trained, exported):
    model, baskets = trained
    model_dir, paths = exported
    queries = [model.vocab.encode(b[:2]) for b in baskets[:16]]
    want = model.scorer().score(queries)
    ids, w = encode_queries(queries, CONFIG.max_query_items)
    saved = load_saved_model_predict(paths["saved_model"])
    assert saved.max_query_items == CONFIG.max_query_items
    np.testing.assert_allclose(saved.predict(ids, w), want, atol=1e-4)
    for mode in MODES:
        got = TFLiteScorer(paths[mode]).score(queries)
        if mode == "fp32":
            np.testing.assert_allclose(got, want, atol=1e-4)
        # quantized: the best item survives for most queries, the scores stay close
        agree = np.mean(np.argmax(got, axis=1) == np.argmax(want, axis=1))
        assert agree >= 0.9, (mode, agree)
        bound = 0.35 if mode == "int8" else 0.05  # full INT8 quantizes the scores themselves to 256 levels
        assert np.abs(got - want).max() <= bound * float(np.abs(want).max()), mode
    ids_, emb = load_item_embeddings(model_dir)
    assert ids_ == model.vocab.ids and emb.shape == (len(model.vocab), CONFIG.dim)


def test_handlers_in_a_pipeline_with_dead_letters(trained, exported, local_runner):
    model, _ = trained
    model_dir, paths = exported
    vocab = model.vocab
    v = variants("1")[0]
    elements = [(v, (vocab.index(v),)), ("bad", (len(vocab) + 50,))]
    for handler in (SavedModelQueryHandler(paths["saved_model"], top_k=2, max_batch_size=1), TFLiteQueryHandler(paths["int8"], top_k=2, max_batch_size=1)):
        with TestPipeline(runner=local_runner) as p:
            main, other = p | beam.Create(elements) | RunInference(KeyedModelHandler(handler)).with_exception_handling()
            tops = main | beam.Map(lambda kv: (kv[0], sorted(vocab.ids[int(r)] for r in kv[1].inference[0])))
            if isinstance(handler, SavedModelQueryHandler):
                assert_that(tops, equal_to([(v, sorted(companions("1")))]), label="top")
                assert_that(other.failed_inferences | beam.Map(lambda f: f[0][0][0]), equal_to(["bad"]), label="dlq")
            else:
                assert_that(tops | beam.Filter(lambda kv: kv[0] == v), equal_to([(v, sorted(companions("1")))]), label="top")


def test_missing_model_is_a_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot read model file"):
        TFLiteQueryHandler(str(tmp_path / "none.tflite")).load_model()
    with pytest.raises(ModelLoadError):
        SavedModelQueryHandler(str(tmp_path / "none")).load_model()


def test_top_k_excluding_drops_query_items():
    scores = np.array([[0.9, 0.8, 0.1, 0.5]], np.float32)
    (rows, vals), = top_k_excluding(scores, [[0]], 2)
    assert rows.tolist() == [1, 3] and vals.tolist() == pytest.approx([0.8, 0.5])


def test_recency_weights_halve_per_half_life():
    t = dt.datetime(2011, 9, 30, tzinfo=dt.timezone.utc)
    w = recency_weights([t, t - dt.timedelta(days=30), t - dt.timedelta(days=60)], half_life_days=30)
    assert w.tolist() == pytest.approx([1.0, 0.5, 0.25])
    with pytest.raises(ConfigError, match="half_life_days"):
        recency_weights([t], half_life_days=0)


@pytest.mark.parametrize("seed", range(4))
def test_top_k_excluding_equals_ranking_every_column(seed):
    """Blocked top-k gives the full ranking's rows and scores, ties by row, exclusions and NaN left out."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, (40, 1000)).astype(np.float32)  # many ties, also across blocks
    scores[3, :] = 1.0
    scores[5, 10:] = np.nan
    queries = [tuple(rng.choice(1000, int(rng.integers(0, 30)), replace=False)) for _ in range(40)]
    for k in (1, 7, 64, 200):
        got = top_k_excluding(scores, queries, k, block=16)
        for r, (rows, vals) in enumerate(got):
            row = scores[r].astype(np.float64)
            ranked = sorted((c for c in range(1000) if c not in set(queries[r]) and np.isfinite(row[c])), key=lambda c: (-row[c], c))[:k]
            assert rows.tolist() == ranked
            assert vals.tolist() == [float(scores[r, c]) for c in ranked]


@pytest.mark.parametrize("seed", range(3))
def test_top_k_excluding_finds_tied_scores_far_along_a_wide_row(seed):
    """An INT8 model's few output levels: the k-th score's ties may sit past the first chunk of a row."""
    rng = np.random.default_rng(seed)
    n = 12_000
    scores = np.zeros((6, n), np.float32)
    for r in range(6):  # a few high scores anywhere, a level shared by a few columns far apart, the rest lower
        scores[r, rng.choice(n, 3, replace=False)] = 3.0
        scores[r, rng.choice(n, 6, replace=False)] = 2.0
        scores[r, : n // 2] = np.minimum(scores[r, : n // 2], 1.0)
    queries = [tuple(rng.choice(n, 2, replace=False)) for _ in range(6)]
    for k in (4, 6, 8, 20):
        got = top_k_excluding(scores, queries, k)
        for r, (rows, vals) in enumerate(got):
            ranked = sorted((c for c in range(n) if c not in set(queries[r])), key=lambda c: (-scores[r, c], c))[:k]
            assert rows.tolist() == ranked
            assert vals.tolist() == [float(scores[r, c]) for c in ranked]


@pytest.mark.parametrize("n_cols", [1000, 1200, 997])
def test_top_k_excluding_in_place_gives_the_same_lists(n_cols):
    """``overwrite=True`` (blocks sized to divide the columns, no copy) ranks as the copying path does."""
    rng = np.random.default_rng(n_cols)
    scores = rng.integers(0, 5, (30, n_cols)).astype(np.float32)
    scores[4, 7:] = np.nan
    queries = [tuple(rng.choice(n_cols, int(rng.integers(0, 20)), replace=False)) for _ in range(30)]
    for k in (1, 10, 90):
        expected = top_k_excluding(scores, queries, k)
        work = scores.copy()
        got = top_k_excluding(work, queries, k, overwrite=True)
        for (er, ev), (gr, gv) in zip(expected, got):
            assert gr.tolist() == er.tolist() and gv.tolist() == ev.tolist()
        if n_cols != 997:  # 997 is prime: no block size divides it, so the scores were copied, not written over
            assert not np.array_equal(work, scores, equal_nan=True)

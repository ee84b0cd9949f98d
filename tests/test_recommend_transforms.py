"""Co-occurrence, nearest neighbours, blending and fallbacks, on inputs small enough to check by hand."""

from __future__ import annotations

import math

import apache_beam as beam
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from components.recommend_baselines import CooccurrenceScorer, basket_matrix
from components.recommend_eval import Queries, evaluate, make_queries
from transforms.errors import ConfigError
from transforms.recommend import (
    ApplyFallback,
    CooccurrenceCounts,
    ITEM_SEP,
    ItemCounts,
    NearestNeighboursFn,
    Recommendation,
    blend_lists,
    popular_items,
    SimilarItemsFn,
    TitleIndex,
    title_neighbours,
    pack_items,
    top_k_similar,
    unit_transposed,
    unpack_items,
)
from transforms.recommend_vocab import ItemVocab

# item counts a:3 b:3 c:2 d:1; pair counts ab:2 ac:1 bc:2
TOY = [("a", "b", "c"), ("a", "b"), ("c", "b", "b"), ("a",), ("d",)]
# TOY's two best co-occurring items by cosine, worked out by hand (count / sqrt(n_item * n_other))
TOY_COSINE_TOP2 = [
    ("a", (("b", round(2 / 3, 4)), ("c", round(1 / math.sqrt(6), 4)))),
    ("b", (("c", round(2 / math.sqrt(6), 4)), ("a", round(2 / 3, 4)))),
    ("c", (("b", round(2 / math.sqrt(6), 4)), ("a", round(1 / math.sqrt(6), 4)))),
]


def _rounded(rows):
    return [(k, tuple((i, round(s, 4)) for i, s in lst)) for k, lst in rows]


def test_item_counts_count_baskets_not_repeats(local_runner):
    # a repeated item counts once per basket; counts from several bundles add up
    with TestPipeline(runner=local_runner) as p:
        out = p | beam.Create(TOY * 3, reshuffle=True) | ItemCounts()
        assert_that(out, equal_to([("a", 9), ("b", 9), ("c", 6), ("d", 3)]))


def test_item_counts_keep_windows_apart(local_runner):
    # counted per window: a bundle holding baskets of two windows emits two rows for an item
    from apache_beam.transforms import window

    stamped = [window.TimestampedValue(b, t) for t, b in ((1, ("a", "b")), (2, ("a",)), (61, ("a", "c")))]
    with TestPipeline(runner=local_runner) as p:
        out = (
            p
            | beam.Create(stamped)
            | beam.WindowInto(window.FixedWindows(60))
            | ItemCounts()
            | beam.Map(lambda kv, w=beam.DoFn.WindowParam: (kv[0], kv[1], int(w.start)))
        )
        assert_that(out, equal_to([("a", 2, 0), ("b", 1, 0), ("a", 1, 60), ("c", 1, 60)]))


def test_cooccurrence_cosine_by_hand(local_runner):
    expected = TOY_COSINE_TOP2
    with TestPipeline(runner=local_runner) as p:
        out = p | beam.Create(TOY) | CooccurrenceCounts(2, normalize="cosine") | beam.Map(lambda kv: _rounded([kv])[0])
        assert_that(out, equal_to(expected))


def test_cooccurrence_raw_counts_by_hand(local_runner):
    expected = [
        ("a", (("b", 2.0), ("c", 1.0))),
        ("b", (("a", 2.0), ("c", 2.0))),  # a tie, broken by id
        ("c", (("b", 2.0), ("a", 1.0))),
    ]
    with TestPipeline(runner=local_runner) as p:
        out = p | beam.Create(TOY) | CooccurrenceCounts(5, normalize="none")
        assert_that(out, equal_to(expected))


def test_beam_cooccurrence_matches_numpy_baseline(local_runner):
    rng = np.random.default_rng(1)
    baskets = [tuple(str(i) for i in rng.choice(12, int(rng.integers(1, 6)), replace=False)) for _ in range(80)]
    vocab = ItemVocab.build(baskets)
    scorer = CooccurrenceScorer(basket_matrix(baskets, vocab), normalize="cosine")
    expected = []
    for row, item in enumerate(vocab.ids):
        scores = scorer.matrix[row]
        top = sorted(((vocab.ids[j], float(s)) for j, s in enumerate(scores) if s > 0), key=lambda kv: (-kv[1], kv[0]))[:3]
        expected.append((item, tuple((i, round(s, 4)) for i, s in top)))
    with TestPipeline(runner=local_runner) as p:
        out = p | beam.Create(baskets) | CooccurrenceCounts(3) | beam.Map(lambda kv: _rounded([kv])[0])
        assert_that(out, equal_to(expected))


def test_cooccurrence_rejects_bad_options():
    with pytest.raises(ConfigError, match="normalize must be"):
        CooccurrenceCounts(3, normalize="lift")
    with pytest.raises(ConfigError, match="k must be >= 1"):
        CooccurrenceCounts(0)


def test_top_k_similar_blocks_agree_with_brute_force():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(257, 8)).astype(np.float32)
    idx, val = top_k_similar(emb, 5, block_rows=64)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    want = np.argsort(-full, axis=1)[:, :5]
    assert (idx == want).all()
    assert np.allclose(val, np.take_along_axis(full, want, axis=1), atol=1e-5)
    assert not (idx == np.arange(257)[:, None]).any()


def test_top_k_similar_t_takes_the_transposed_matrix_and_a_subset_of_rows():
    from transforms.recommend import top_k_similar_t

    rng = np.random.default_rng(1)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    rows = [299, 3, 150, 151]
    full = unit[rows] @ unit.T
    full[np.arange(len(rows)), rows] = -np.inf
    want = np.argsort(-full, axis=1, kind="stable")[:, :7]
    results = [top_k_similar_t(emb_t, 7, rows=rows, block_rows=3) for emb_t in (np.ascontiguousarray(unit.T), unit.T)]
    for idx, val in results:  # from a contiguous matrix, and from a strided view (the last bits may differ)
        assert (idx == want).all()
        assert np.allclose(val, np.take_along_axis(full, want, axis=1), atol=1e-6)
    same_i, same_v = top_k_similar(emb, 7, rows=rows, block_rows=3)  # normalizes, then the contiguous layout
    assert (same_i == results[0][0]).all() and (same_v == results[0][1]).all()


@given(st.integers(1, 6), st.sampled_from([12, 300, 2559, 2560, 4000]), st.integers(1, 12), st.integers(2, 50), st.integers(0, 2**31))
@example(3, 300, 10, 2, 0)  # few distinct scores: ties everywhere, the small-catalog path
@example(3, 4000, 10, 3, 1)  # ties in the wide-row (grouped) path
def test_top_k_ties_go_to_the_lower_index_as_a_full_stable_sort_orders(rows, n, k, levels, seed):
    from transforms.recommend import _top_k

    scores = np.random.default_rng(seed).integers(0, levels, size=(rows, n)).astype(np.float32)
    idx, val = _top_k(scores, k)
    want = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, n)]
    assert (idx == want).all()
    assert (val == np.take_along_axis(scores, want, axis=1)).all()


@pytest.mark.parametrize("n", [300, 4000])
def test_top_k_of_a_row_with_a_nan_keeps_k_columns_and_ranks_the_nan_last(n):
    from transforms.recommend import _top_k

    scores = np.random.default_rng(3).standard_normal((3, n)).astype(np.float32)
    scores[1, 7] = np.nan
    idx, val = _top_k(scores, 10)
    assert idx.shape == val.shape == (3, 10)
    want = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1, kind="stable")[:, :10]
    assert (idx == want).all() and not np.isnan(val).any()


def test_nearest_neighbours_dofn_flags_unknown_items(local_runner):
    ids = ("x", "y", "z")
    emb = np.array([[1, 0], [0.8, 0.2], [0, 1]], np.float32)
    with TestPipeline(runner=local_runner) as p:
        out = (
            p
            | beam.Create([["x", "y", "new"], ["z"]])
            | beam.ParDo(NearestNeighboursFn(lambda: (ids, emb), 1)).with_outputs("unknown", main="known")
        )
        assert_that(out.known | beam.Map(lambda kv: (kv[0], kv[1][0][0])), equal_to([("x", "y"), ("y", "x"), ("z", "y")]), label="known")
        assert_that(out.unknown, equal_to(["new"]), label="unknown")


def test_nearest_neighbours_score_blocks_shrink_with_the_catalog():
    rng = np.random.default_rng(1)
    ids = tuple(f"i{n:03d}" for n in range(300))
    emb = rng.normal(size=(300, 8)).astype(np.float32)
    batch = list(ids[::3])

    def lists(fn):
        fn.setup()
        return dict(fn.process(batch))

    wide = NearestNeighboursFn(lambda: (ids, emb), 5)
    narrow = NearestNeighboursFn(lambda: (ids, emb), 5, max_block_scores=7 * 300 + 299)
    assert lists(wide) == lists(narrow)
    assert (wide._block_rows, narrow._block_rows) == (1024, 7)  # rows x items stays under the budget
    with pytest.raises(ConfigError, match="max_block_scores"):
        NearestNeighboursFn(lambda: (ids, emb), 5, max_block_scores=0)


def test_nearest_neighbours_leave_the_loaded_matrix_as_it_was():
    """The DoFn normalizes its own transposed copy: a loader's array, in either memory order, is not touched."""
    rng = np.random.default_rng(3)
    ids = [f"i{n}" for n in range(40)]
    for emb in (rng.normal(size=(40, 6)).astype(np.float32), np.asfortranarray(rng.normal(size=(40, 6)).astype(np.float32))):
        before = emb.copy()
        fn = NearestNeighboursFn(lambda emb=emb: (ids, emb), 3)
        fn.setup()
        got = dict(fn.process(ids[:5]))
        assert (emb == before).all()
        idx, val = top_k_similar(before, 3, rows=range(5))
        assert got == {ids[r]: tuple((ids[j], float(v)) for j, v in zip(idx[r], val[r])) for r in range(5)}


@pytest.mark.parametrize("dtype, fortran", [("<f4", False), (">f8", False), ("<f4", True)])
def test_item_embeddings_read_in_chunks_equal_the_whole_file_normalized_and_transposed(tmp_path, dtype, fortran):
    """``load_item_embeddings(unit_t=True)`` reads rows a few at a time into the layout the DoFn uses:
    the same bits as :func:`unit_transposed` of the whole file, whatever the chunk size, dtype or order."""
    from transforms.inference import recommend as inference

    rng = np.random.default_rng(5)
    emb = rng.normal(size=(1001, 24)).astype(dtype)
    emb[7] = 0  # an all-zero row stays zero
    ids = [f"i{n}" for n in range(len(emb))]
    (tmp_path / "vocab.json").write_text(ItemVocab(tuple(ids), tuple(range(1, len(ids) + 1))).to_json())
    np.save(tmp_path / "item_embeddings.npy", np.asfortranarray(emb) if fortran else emb)
    want = unit_transposed(np.load(tmp_path / "item_embeddings.npy"))  # as the whole file read before
    for chunk_bytes in (1, 24 * 8 * 10, 1 << 22):  # one row, ten rows of doubles, the whole file
        got = inference._read_unit_transposed(str(tmp_path / "item_embeddings.npy"), chunk_bytes=chunk_bytes)
        assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"] and got.shape == (24, 1001)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    got_ids, got = inference.load_item_embeddings(str(tmp_path), unit_t=True)
    assert list(got_ids) == ids and np.array_equal(got, want)
    fn = NearestNeighboursFn(lambda: (got_ids, got), 4, unit_t=True)
    fn.setup()
    assert fn._emb_t is got  # used as given: no second copy
    with pytest.raises(ConfigError, match="disagree about the layout"):  # a transposed matrix taken for rows
        NearestNeighboursFn(lambda: (got_ids, got), 4).setup()
    idx, val = top_k_similar(np.load(tmp_path / "item_embeddings.npy"), 4, rows=range(10))
    assert dict(fn.process(ids[:10])) == {ids[r]: tuple((ids[j], float(v)) for j, v in zip(idx[r], val[r])) for r in range(10)}


def test_item_embeddings_read_in_chunks_never_hold_a_second_matrix(tmp_path):
    """Reading whole, then transposing, holds the file's bytes, the array and its copy; chunks hold one matrix."""
    import tracemalloc

    from transforms.inference import recommend as inference

    emb = np.random.default_rng(6).normal(size=(40_000, 64)).astype(np.float32)  # 10 MiB
    path = str(tmp_path / "item_embeddings.npy")
    np.save(path, emb)
    del emb
    peaks = {}
    for name, load in (
        ("whole", lambda: unit_transposed(np.load(path))),
        ("chunks", lambda: inference._read_unit_transposed(path, chunk_bytes=1 << 20)),
    ):
        tracemalloc.start()
        matrix = load()
        peaks[name] = tracemalloc.get_traced_memory()[1] / matrix.nbytes
        tracemalloc.stop()
        del matrix
    assert peaks["whole"] > 2.5 and peaks["chunks"] < 1.5, peaks  # measured: 3.0 and 1.3 (chunks of 1 MiB)


def test_cooccurrence_item_shards_are_dealt_evenly():
    from transforms.recommend import ItemTable, _baskets_by_shard, _item_shards

    table = ItemTable.from_counts((f"i{n:02d}", 1) for n in range(10))
    assert _item_shards(10, 4) == 3 and _item_shards(0, 4) == 1
    baskets = [("i00", "i03"), ("i01",), ("i09", "i04"), ("i02", "i05", "i08")]
    sent = {shard: rows for shard, rows in _baskets_by_shard((0, baskets), table, 4)}
    # item n belongs to shard n % 3: shard sizes 4, 3, 3 (ranges would give 4, 4, 2)
    got = {shard: [sorted(table.ids[i] for i in indices[a:b]) for a, b in zip(indptr[:-1], indptr[1:])] for shard, (indptr, indices) in sent.items()}
    assert got == {0: [["i00", "i03"], ["i04", "i09"]], 1: [["i01"], ["i04", "i09"]], 2: [["i02", "i05", "i08"]]}


def test_blend_lists():
    assert blend_lists([("a", 4.0), ("b", 2.0)], [("b", 1.0), ("c", 0.5)], alpha=0.5) == [("b", 0.75), ("a", 0.5), ("c", 0.25)]
    assert blend_lists([("a", 4.0)], [], alpha=0.3) == [("a", 0.3)]
    with pytest.raises(ConfigError, match="alpha"):
        blend_lists([], [], alpha=1.5)


def test_popular_items_excludes_and_scales():
    assert popular_items({"a": 4, "b": 2, "c": 2}, 2, exclude=["a"]) == (("b", 1.0), ("c", 1.0))


def test_fallback_answers_every_key_once(local_runner):
    popular = (("p1", 1.0), ("p2", 0.5), ("p3", 0.2))
    with TestPipeline(runner=local_runner) as p:
        keys = p | "keys" >> beam.Create(["a", "p1", "cold", "a"])
        lists = p | "lists" >> beam.Create([("a", (("b", 0.9),)), ("p1", ()), ("stray", (("a", 1.0),))])
        fallback = p | "pop" >> beam.Create([popular])
        out = (keys, lists, fallback) | ApplyFallback(2)
        assert_that(
            out,
            equal_to(
                [
                    Recommendation("a", (("b", 0.9),), None),
                    Recommendation("p1", (("p2", 0.5), ("p3", 0.2)), "popularity"),
                    Recommendation("cold", (("p1", 1.0), ("p2", 0.5)), "popularity"),
                ]
            ),
        )


def test_basket_completion_metrics_by_hand():
    """Query [a] hides b (cosine ranks b first: a hit at rank 0); query [c] hides an item training never saw."""
    vocab = ItemVocab.build(TOY)
    assert vocab.ids == ("a", "b", "c")
    scorer = CooccurrenceScorer(basket_matrix(TOY, vocab), normalize="cosine")
    queries = Queries([[0], [2]], np.array([1, -1]), len(vocab))
    m = evaluate(scorer, queries, k=1)
    assert m["recall@1"] == 0.5
    assert m["ndcg@1"] == 0.5
    assert m["coverage@1"] == pytest.approx(1 / 3)  # both queries put b first
    assert m["unseen_target_share"] == 0.5


def test_hide_one_queries_are_seeded_and_skip_single_items():
    vocab = ItemVocab.build(TOY)
    a = make_queries([("a", "b", "c"), ("a",), ("b", "new")], vocab, seed=7)
    b = make_queries([("a", "b", "c"), ("a",), ("b", "new")], vocab, seed=7)
    assert len(a) == 2 and a.rows == b.rows and (a.target == b.target).all()
    assert sorted(a.rows[0] + [int(a.target[0])]) == [0, 1, 2]


def test_title_neighbours_for_cold_items():
    known = {"a": "RED RETROSPOT BAG", "b": "BLUE MUG", "c": "WHITE HANGING HEART T-LIGHT HOLDER"}
    got = title_neighbours({"new": "RED RETROSPOT MUG", "odd": "zzz qqq", "blank": ""}, known, 2)
    assert list(got) == ["new"]
    assert [i for i, _ in got["new"]] == ["a", "b"]  # two shared words beat one
    assert got["new"][0][1] > got["new"][1][1] > 0


_words = st.lists(st.sampled_from(["red", "blue", "mug", "bag", "heart", "tin", "zz"]), max_size=4).map(" ".join)


@given(st.dictionaries(st.sampled_from([f"p{i}" for i in range(12)]), _words, min_size=1, max_size=12),
       st.dictionaries(st.sampled_from([f"p{i}" for i in range(6)] + ["new1", "new2"]), _words, max_size=5),
       st.integers(1, 4), st.sampled_from([0.0, 0.1, 0.5]))
def test_title_index_ranks_as_a_full_sort_by_score_then_id(known, queries, k, min_score):
    """Every query's list is the k best of its row of TF-IDF cosines, ties by id, the cut and the query itself left out
    (a duplicated title makes equal scores)."""
    index = TitleIndex(known, min_score=min_score)
    got = index.neighbours(queries, k)
    if index._matrix is None:
        assert got == {}
        return
    for qid, title in queries.items():
        row = (index._vectorizer.transform([title]) @ index._matrix.T).toarray()[0] if title.strip() else np.zeros(0)
        ranked = sorted(((index.ids[j], float(v)) for j, v in enumerate(row) if v > 0 and v >= min_score and index.ids[j] != qid),
                        key=lambda kv: (-kv[1], kv[0]))[:k]
        assert got.get(qid, ()) == tuple(ranked)


def test_title_index_fits_once_and_answers_like_title_neighbours():
    known = {"a": "RED RETROSPOT BAG", "b": "BLUE MUG", "c": "WHITE HANGING HEART T-LIGHT HOLDER", "d": ""}
    index = TitleIndex(known)
    assert index.ids == ["a", "b", "c"]  # blank titles are not candidates
    first = index.neighbours({"new": "RED RETROSPOT MUG"}, 2)
    assert [i for i, _ in first["new"]] == ["a", "b"]
    # the same index answers later queries as a fresh one would, and never with the query item itself
    later = index.neighbours({"x": "HEART HOLDER", "a": "RED BAG"}, 2)
    assert list(later) == ["x"] and [i for i, _ in later["x"]] == ["c"]
    assert later == title_neighbours({"x": "HEART HOLDER", "a": "RED BAG"}, known, 2)
    assert index.neighbours({"new": "RED RETROSPOT MUG"}, 2) == first
    assert TitleIndex({"a": "1 2 3"}).neighbours({"q": "1 2"}, 2) == {}  # no word in any candidate


def test_similar_items_fn_answers_both_kinds_of_batch(local_runner):
    ids = ("x", "y", "z")
    emb = np.array([[1, 0], [0.8, 0.2], [0, 1]], np.float32)
    known_titles = {"x": "RED MUG", "y": "BLUE MUG", "z": "GREEN BAG"}
    batches = [
        ("embeddings", (("x", None), ("new", None))),
        ("embeddings", (("z", None),)),
        ("titles", (("new", "RED MUG SET"), ("odd", "zzz qqq"))),
        ("titles", (("newer", "GREEN BAG"),)),
    ]
    with TestPipeline(runner=local_runner) as p:
        titles = p | "Titles" >> beam.Create(sorted(known_titles.items()))
        out = (
            p
            | beam.Create(batches)
            | beam.ParDo(SimilarItemsFn(lambda: (ids, emb), 1), known_titles=beam.pvalue.AsIter(titles)).with_outputs(
                "unknown", "title", main="known"
            )
        )
        assert_that(out.known | beam.Map(lambda kv: (kv[0], kv[1][0][0])), equal_to([("x", "y"), ("z", "y")]), label="known")
        assert_that(out.unknown, equal_to(["new"]), label="unknown")
        assert_that(out.title | beam.Map(lambda kv: (kv[0], kv[1][0][0])), equal_to([("new", "x"), ("newer", "z")]), label="title")


def test_similar_items_fn_fits_the_title_index_once_per_side_input():
    fn = SimilarItemsFn(lambda: (("x",), np.ones((1, 2), np.float32)), 2)
    fn.setup()
    known = {"a": "RED MUG", "b": "RED BAG"}
    list(fn.process(("titles", (("q1", "RED"),)), known))
    first = fn._titles
    got = list(fn.process(("titles", (("q2", "MUG"),)), known))
    assert fn._titles is first
    assert [o.value for o in got] == [("q2", (("a", pytest.approx(got[0].value[1][0][1])),))]
    list(fn.process(("titles", (("q3", "BAG"),)), {"c": "BAG"}))
    assert fn._titles is not first and fn._titles.ids == ["c"]
    with pytest.raises(ValueError, match="unknown batch tag"):
        list(fn.process(("other", ()), known))


def test_keyed_fallback_comes_before_popularity(local_runner):
    with TestPipeline(runner=local_runner) as p:
        keys = p | "keys" >> beam.Create(["cold", "colder"])
        lists = p | "lists" >> beam.Create([("other", (("x", 1.0),))])
        fallback = p | "pop" >> beam.Create([(("p1", 1.0),)])
        keyed = p | "keyed" >> beam.Create([("cold", (("t1", 0.7),))])
        out = (keys, lists, fallback, keyed) | ApplyFallback(3)
        assert_that(
            out,
            equal_to([Recommendation("cold", (("t1", 0.7),), "title"), Recommendation("colder", (("p1", 1.0),), "popularity")]),
        )


@pytest.mark.parametrize("normalize", ["cosine", "none"])
@pytest.mark.parametrize("seed", range(5))
def test_top_cooccurring_equals_the_plain_python_ranking(seed, normalize):
    """The NumPy top-k gives exactly the scores and order of scoring every pair in Python and sorting all."""
    from transforms.recommend import cosine_normalize, top_cooccurring

    rng = np.random.default_rng(seed)
    items = [f"i{n:03d}" for n in range(300)]
    counts = {i: int(c) for i, c in zip(items, rng.integers(1, 40, len(items)))}
    others = {i: int(c) for i, c in zip(items, rng.integers(1, 6, len(items))) if rng.random() < 0.5}  # many ties
    for k, min_count in ((5, 1), (10, 2), (1000, 1)):
        expected = sorted(
            ((o, float(c) if normalize == "none" else cosine_normalize(c, 17, counts[o])) for o, c in others.items() if c >= min_count),
            key=lambda kv: (-kv[1], kv[0]),
        )[:k]
        assert top_cooccurring(others, counts, 17, k, normalize=normalize, min_count=min_count) == tuple(expected)
    assert top_cooccurring({}, counts, 17, 5) == ()


@pytest.mark.parametrize("normalize,min_count", [("cosine", 1), ("none", 1), ("cosine", 2)])
def test_cooccurrence_shards_and_groups_do_not_change_the_lists(local_runner, normalize, min_count):
    """Tiny shards and groups (baskets split across groups, items across shards) give the lists of a plain count."""
    from collections import Counter

    from transforms.recommend import top_cooccurring

    rng = np.random.default_rng(7)
    items = [f"p{n:02d}" for n in range(23)]
    baskets = [tuple(str(i) for i in rng.choice(items, int(rng.integers(1, 8)))) for _ in range(120)]  # repeats inside a basket too
    n = Counter(i for b in baskets for i in set(b))
    shared: dict[str, Counter] = {}
    for b in baskets:
        for a in set(b):
            shared.setdefault(a, Counter()).update(set(b) - {a})
    expected = []
    for item, others in shared.items():
        top = top_cooccurring(others, n, n[item], 4, normalize=normalize, min_count=min_count)
        if top:
            expected.append((item, top))
    assert len(expected) > 10
    with TestPipeline(runner=local_runner) as p:
        out = p | beam.Create(baskets) | CooccurrenceCounts(4, normalize=normalize, min_count=min_count, items_per_shard=3, baskets_per_group=7)
        assert_that(out, equal_to(expected))
        # an estimate of the baskets made elsewhere (here 5x too many: 86 groups instead of 18) changes only the groups
        estimate = p | "Estimate" >> beam.Create([5 * len(baskets)])
        out = (p | "Baskets" >> beam.Create(baskets)
               | "Estimated" >> CooccurrenceCounts(4, normalize=normalize, min_count=min_count, items_per_shard=3, baskets_per_group=7,
                                                   n_baskets=estimate))
        assert_that(out, equal_to(expected), label="estimated")


@given(st.lists(st.text(alphabet=st.sampled_from("ab1\x1f \u00e9"), max_size=4), max_size=6))
@example(["22423", "85123A"])
@example(["a\x1fb", "c"])
@example([""])
def test_packed_items_unpack_to_the_same_ids(items):
    packed = pack_items(items)
    assert list(unpack_items(packed)) == items
    # one string whenever that is unambiguous: no empty id and no id holding the separator
    assert isinstance(packed, str) == (bool(items) and all(items) and not any(ITEM_SEP in i for i in items))


def test_cooccurrence_of_ids_that_hold_the_separator_equals_the_by_hand_lists(local_runner):
    # baskets with such ids cross the shuffle as tuples, the others as joined strings (pack_items)
    rename = {"a": "a\x1fx", "b": "b", "c": "c\x1f", "d": "d"}
    back = {v: k for k, v in rename.items()}
    expected = TOY_COSINE_TOP2
    with TestPipeline(runner=local_runner) as p:
        out = (
            p
            | beam.Create([tuple(rename[i] for i in b) for b in TOY])
            | CooccurrenceCounts(2, normalize="cosine")
            | beam.Map(lambda kv: _rounded([(back[kv[0]], tuple((back[i], s) for i, s in kv[1]))])[0])
        )
        assert_that(out, equal_to(expected))

"""The approximate similar-items index: its lists against the exact ones, its file, and the recommend job that reads it."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

pytest.importorskip("faiss")

from transforms.errors import ChecksumMismatch, ConfigError, ModelLoadError  # noqa: E402
from transforms.item_index import (  # noqa: E402
    build_item_index,
    default_nlist,
    load_item_index,
    search_similar,
    write_item_index,
)
from transforms.recommend import NearestNeighboursFn, top_k_similar_t, unit_transposed  # noqa: E402


def _clustered(n: int, dim: int = 24, clusters: int = 40, spread: float = 0.9, seed: int = 0) -> np.ndarray:
    """Unit embeddings (``dim x n``, the exact search's layout) of items around ``clusters`` centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    emb = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return unit_transposed(emb)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def test_searching_every_cluster_gives_the_exact_lists():
    unit_t = _clustered(3000)
    index = build_item_index(unit_t.T)
    rows = np.arange(0, 3000, 5)
    exact_i, exact_s = top_k_similar_t(unit_t, 10, rows=rows)
    found_i, found_s = search_similar(index, unit_t, rows, 10, nprobe=index.nlist)
    np.testing.assert_array_equal(found_i, exact_i)
    np.testing.assert_allclose(found_s, exact_s, atol=1e-5)


def test_default_probes_find_nearly_every_neighbour_and_keep_the_list_rules():
    unit_t = _clustered(6000)
    index = build_item_index(unit_t.T)
    assert index.nlist == default_nlist(6000) == 153
    rows = np.arange(6000)
    exact_i, _ = top_k_similar_t(unit_t, 10, rows=rows)
    found_i, found_s = search_similar(index, unit_t, rows, 10)
    assert _recall(found_i, exact_i) >= 0.95
    assert found_i.shape == (6000, 10)
    assert not (found_i == rows[:, None]).any()  # never an item's own neighbour
    assert all(len(set(r)) == 10 for r in found_i)
    assert (np.diff(found_s, axis=1) <= 0).all()  # best first
    # fewer probes: fewer neighbours found, so the probes are what is searched
    few_i, _ = search_similar(index, unit_t, rows, 10, nprobe=1)
    assert _recall(few_i, exact_i) < _recall(found_i, exact_i)


def test_ties_go_to_the_lower_index():
    base = _clustered(400, dim=8)
    unit_t = np.concatenate([base, base[:, :1], base[:, :1]], axis=1)  # items 400 and 401 are copies of item 0
    index = build_item_index(unit_t.T, nlist=2)
    found_i, found_s = search_similar(index, unit_t, [0, 400, 401], 3, nprobe=2)
    assert found_i[0][:2].tolist() == [400, 401]
    assert found_i[1][:2].tolist() == [0, 401]
    assert found_i[2][:2].tolist() == [0, 400]


def test_a_query_whose_clusters_hold_too_few_items_is_answered_exactly():
    unit_t = _clustered(400, dim=8, clusters=4, spread=0.2)
    index = build_item_index(unit_t.T, nlist=8)
    rows = np.arange(400)
    k = 150  # more than one probed cluster holds
    found_i, _ = search_similar(index, unit_t, rows, k, nprobe=1)
    exact_i, _ = top_k_similar_t(unit_t, k, rows=rows)
    assert found_i.shape == (400, k) and (found_i >= 0).all()
    sizes = np.array([index.invlists.list_size(c) for c in range(index.nlist)])
    assert sizes.min() < k + 1  # the case is exercised
    assert not (found_i == rows[:, None]).any()
    _, assign = index.quantizer.search(np.ascontiguousarray(unit_t.T), 1)
    small = sizes[assign[:, 0]] < k + 1
    np.testing.assert_array_equal(found_i[small], exact_i[small])


def test_the_index_file_round_trips_and_bad_files_name_the_path_and_cause(tmp_path):
    import faiss

    unit_t = _clustered(800, dim=16)
    index = build_item_index(unit_t.T)
    path = write_item_index(index, str(tmp_path / "item_index.faiss"))
    loaded = load_item_index(path, unit_t)
    rows = np.arange(0, 800, 3)
    np.testing.assert_array_equal(search_similar(loaded, unit_t, rows, 5)[0], search_similar(index, unit_t, rows, 5)[0])
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert load_item_index(path, unit_t, sha256=digest).ntotal == 800

    with pytest.raises(ModelLoadError, match="another version of the model"):
        load_item_index(path, _clustered(801, dim=16))
    with pytest.raises(ModelLoadError, match="another version of the model"):
        load_item_index(path, _clustered(800, dim=32))
    with pytest.raises(ChecksumMismatch):
        load_item_index(path, unit_t, sha256="0" * 64)
    bad = tmp_path / "bad.faiss"
    bad.write_bytes(b"not an index at all")
    with pytest.raises(ModelLoadError, match=r"bad\.faiss.*not a faiss index"):
        load_item_index(str(bad), unit_t)
    empty = tmp_path / "empty.faiss"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load_item_index(str(empty), unit_t)
    flat = faiss.IndexFlatIP(16)
    flat.add(np.ascontiguousarray(unit_t.T))
    write_item_index(flat, str(tmp_path / "flat.faiss"))
    with pytest.raises(ModelLoadError, match="not an inverted-file index"):
        load_item_index(str(tmp_path / "flat.faiss"), unit_t)
    l2 = faiss.IndexIVFFlat(faiss.IndexFlatL2(16), 16, 4)
    l2.train(np.ascontiguousarray(unit_t.T))
    l2.add(np.ascontiguousarray(unit_t.T))
    write_item_index(l2, str(tmp_path / "l2.faiss"))
    with pytest.raises(ModelLoadError, match="inner product"):
        load_item_index(str(tmp_path / "l2.faiss"), unit_t)
    with pytest.raises(ModelLoadError, match="missing.faiss"):
        load_item_index(str(tmp_path / "missing.faiss"), unit_t)


def test_bad_parameters_are_config_errors():
    unit_t = _clustered(200, dim=8)
    with pytest.raises(ConfigError, match="nlist"):
        build_item_index(unit_t.T, nlist=201)
    index = build_item_index(unit_t.T)
    with pytest.raises(ConfigError, match="nprobe"):
        search_similar(index, unit_t, [0], 3, nprobe=0)
    with pytest.raises(ConfigError, match="k must be"):
        search_similar(index, unit_t, [0], 0)


def test_the_neighbours_dofn_searches_the_index_it_is_given():
    unit_t = _clustered(2000, dim=16)
    ids = [f"i{j}" for j in range(2000)]
    index = build_item_index(unit_t.T)
    calls = []

    def load_index(matrix):
        calls.append(matrix.shape)
        return index

    def make(**kw):
        fn = NearestNeighboursFn(lambda: (ids, unit_t), 5, unit_t=True, **kw)
        fn.setup()
        return fn

    batch = ids[:300] + ["unknown-item"]
    exact = dict(x for x in make().process(batch) if isinstance(x, tuple))
    exhaustive = dict(x for x in make(load_index=load_index, nprobe=index.nlist).process(batch) if isinstance(x, tuple))
    one_probe = dict(x for x in make(load_index=load_index, nprobe=1).process(batch) if isinstance(x, tuple))
    assert calls == [(16, 2000), (16, 2000)]
    assert exhaustive.keys() == exact.keys() == set(ids[:300])
    assert all([i for i, _ in exhaustive[key]] == [i for i, _ in exact[key]] for key in exact)
    assert any([i for i, _ in one_probe[key]] != [i for i, _ in exact[key]] for key in exact)


def test_an_index_of_other_embeddings_is_refused_when_the_job_loads_it(tmp_path):
    import functools

    unit_t = _clustered(1000, dim=16)
    ids = [f"i{j}" for j in range(1000)]
    retrained = _clustered(1000, dim=16, seed=1)  # as many items, other vectors: a model retrained in place
    path = write_item_index(build_item_index(unit_t.T), str(tmp_path / "item_index.faiss"))

    def make(matrix):
        fn = NearestNeighboursFn(lambda: (ids, matrix), 5, unit_t=True, load_index=functools.partial(load_item_index, path))
        fn.setup()
        return fn

    assert make(unit_t)._ann.ntotal == 1000
    with pytest.raises(ModelLoadError, match=r"item_index\.faiss.*built from other item embeddings"):
        make(retrained)

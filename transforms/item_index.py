"""An approximate nearest-neighbour index of a model's item embeddings, for similar items over large catalogs.

Exact similar items (:func:`transforms.recommend.top_k_similar_t`) score
every item against every other: work that grows with the square of the
catalog. At 37,200 items that is about 10 CPU-s for the whole catalog; at
ten times that many, a hundred times more. An inverted-file index (faiss's
``IndexIVFFlat``, inner product over unit-length embeddings, so cosine)
groups the items into ``nlist`` clusters by k-means, and a query scores
only the items of its ``nprobe`` nearest clusters.

The index is a model artifact, built once beside the embeddings
(``item_index.faiss`` in the model folder, by :func:`build_model_index`,
``aisle index`` or the model export for catalogs of
:data:`INDEX_MIN_ITEMS` items or more) and read by every worker, so all
workers search the same clusters and any number of them finds the same
neighbours. It is never built inside a job.

Its lists follow the exact ones' rules: an item is never its own
neighbour, each list has ``k`` items, best first, ties by the lower item
index. A query whose probed clusters hold fewer than ``k`` other items is
answered exactly. With ``nprobe = nlist`` every cluster is searched and the
lists are the exact ones (scores may differ in their last bits: faiss sums
in another order than BLAS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from transforms.errors import ConfigError, ModelLoadError

__all__ = [
    "DEFAULT_NPROBE",
    "INDEX_FILE",
    "INDEX_MIN_ITEMS",
    "build_item_index",
    "build_model_index",
    "check_index_vectors",
    "default_nlist",
    "load_item_index",
    "search_similar",
    "write_item_index",
]

INDEX_FILE = "item_index.faiss"
# Exporting a model builds its index from this many items on: below, exact neighbours cost a few CPU-seconds a batch.
INDEX_MIN_ITEMS = 100_000
DEFAULT_NPROBE = 16
# k-means trains on at most this many items per cluster (faiss's default is 256): the clusters need not be exact.
TRAIN_POINTS_PER_CLUSTER = 64


def default_nlist(n_items: int) -> int:
    """Clusters for ``n_items``: about 4 * sqrt(n), at least 1 and at most n / 39 (faiss warns below 39 items a cluster)."""
    return max(1, min(int(4 * math.sqrt(n_items)), n_items // 39))


def _faiss(threads: int | None = None):
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ConfigError("the item index needs faiss (pip install faiss-cpu)") from exc
    if threads is not None:
        faiss.omp_set_num_threads(max(1, threads))
    return faiss


def build_item_index(unit: np.ndarray, *, nlist: int | None = None, seed: int = 0, threads: int | None = None):
    """An ``IndexIVFFlat`` (inner product) over ``unit``: ``items x dim`` rows of unit length, in item order.

    The k-means that places the clusters starts from ``seed`` and trains on
    at most :data:`TRAIN_POINTS_PER_CLUSTER` items a cluster, drawn by faiss
    from that seed.
    """
    unit = np.ascontiguousarray(unit, np.float32)
    if unit.ndim != 2 or unit.shape[0] < 1:
        raise ConfigError(f"an item index needs an items x dim matrix with at least one item, got shape {unit.shape}")
    n, dim = unit.shape
    nlist = default_nlist(n) if nlist is None else nlist
    if not 1 <= nlist <= n:
        raise ConfigError(f"nlist must be between 1 and the number of items ({n}), got {nlist}")
    faiss = _faiss(threads)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.max_points_per_centroid = TRAIN_POINTS_PER_CLUSTER
    index.train(unit)
    index.add(unit)
    index.nprobe = min(DEFAULT_NPROBE, nlist)
    return index


def write_item_index(index, path: str) -> str:
    """Write ``index`` to ``path`` (any FileSystems location), whole or not at all; returns ``path``."""
    from transforms.io import write_bytes

    write_bytes(bytes(_faiss().serialize_index(index)), path)
    return path


def load_item_index(path: str, unit_t: np.ndarray, *, sha256: str | None = None):
    """The index at ``path``, checked against the model's embeddings ``unit_t`` (``dim x items``, unit length, as
    :func:`transforms.inference.recommend.load_item_embeddings` gives them with ``unit_t=True``); ModelLoadError
    naming the path otherwise.

    faiss reads the file's own format (no pickle). The index must be an
    inverted-file index of inner products over as many vectors of as many
    values as ``unit_t`` has, and hold ``unit_t``'s vectors
    (:func:`check_index_vectors`): one built for another version of the
    model is refused.
    """
    from transforms.inference import read_model_bytes

    data = read_model_bytes(path, sha256=sha256)
    faiss = _faiss()
    try:
        index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
    except Exception as exc:
        raise ModelLoadError(f"cannot read item index {path!r}: not a faiss index ({exc})") from exc
    if not isinstance(index, faiss.IndexIVF):
        raise ModelLoadError(f"item index {path!r} is not an inverted-file index ({type(index).__name__})")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ModelLoadError(f"item index {path!r} does not rank by inner product: rebuild it with `aisle index`")
    dim, n_items = unit_t.shape
    if index.ntotal != n_items or index.d != dim:
        raise ModelLoadError(
            f"item index {path!r} holds {index.ntotal} vectors of {index.d} values, but the model has "
            f"{n_items} items of {dim}: it was built for another version of the model; rebuild it with `aisle index`"
        )
    check_index_vectors(index, unit_t, path=path)
    return index


def check_index_vectors(index, unit_t: np.ndarray, *, path: str, sample: int = 64, seed: int = 0) -> None:
    """ModelLoadError unless ``index`` holds the vectors of ``unit_t`` (``dim x items``) for a sample of items.

    An inverted-file index of flat vectors stores each item's vector as it
    was given; one built from other embeddings (a model retrained in place,
    with as many items) gives neighbours of other items, so it is refused.
    """
    n = unit_t.shape[1]
    ids = np.unique(np.random.default_rng(seed).integers(0, n, min(sample, n)))
    index.make_direct_map()
    stored = np.stack([index.reconstruct(int(i)) for i in ids])
    if not np.allclose(stored, unit_t[:, ids].T, rtol=0, atol=1e-6):
        raise ModelLoadError(
            f"item index {path!r} was built from other item embeddings than the model's item_embeddings.npy "
            "(the model was retrained or replaced after the index was built): rebuild it with `aisle index`"
        )


def search_similar(
    index,
    unit_t: np.ndarray,
    rows: Sequence[int] | np.ndarray,
    k: int,
    *,
    nprobe: int = DEFAULT_NPROBE,
    exact_block_rows: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) of the ``k`` nearest items of each of ``rows``, through ``index``.

    ``unit_t``: the unit-length embeddings the index was built from, in
    :func:`~transforms.recommend.top_k_similar_t`'s layout (``dim x items``);
    the queries are their columns ``rows``. Lists as
    :func:`~transforms.recommend.top_k_similar_t` gives them: the item
    itself left out, best first, ties by the lower index among the ``k + 1``
    candidates faiss returns, ``k`` items (at most ``n_items - 1``). Rows whose probed clusters hold too few items
    are answered exactly.
    """
    from transforms.recommend import top_k_similar_t

    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if nprobe < 1:
        raise ConfigError(f"nprobe must be >= 1, got {nprobe}")
    rows = np.asarray(rows, np.int64)
    n = unit_t.shape[1]
    k = min(k, max(n - 1, 1))
    queries = np.ascontiguousarray(unit_t[:, rows].T)
    index.nprobe = min(nprobe, index.nlist)
    # one more than k: the item itself is (nearly always) its own best match
    scores, found = index.search(queries, k + 1)
    not_self = found != rows[:, None]
    valid = not_self & (found >= 0)
    # ties by the lower index: order each row by (-score, index), invalid entries last
    order_scores = np.where(valid, -scores, np.inf)
    order = np.lexsort((np.where(valid, found, np.iinfo(np.int64).max), order_scores), axis=1)[:, :k]
    out_i = np.take_along_axis(found, order, axis=1)
    out_s = np.take_along_axis(scores, order, axis=1)
    short = np.nonzero(np.take_along_axis(valid, order, axis=1).sum(axis=1) < k)[0]
    if short.size:  # the probed clusters held fewer than k other items
        ei, es = top_k_similar_t(unit_t, k, rows=rows[short], block_rows=exact_block_rows)
        out_i[short], out_s[short] = ei, es
    return out_i, out_s


def build_model_index(model_dir: str, *, nlist: int | None = None, seed: int = 0, threads: int | None = None) -> dict:
    """Build ``item_index.faiss`` beside the model's ``item_embeddings.npy``; returns what was built."""
    import time

    from transforms.inference import usable_cores
    from transforms.inference.recommend import load_item_embeddings
    from transforms.io import join_path

    start = time.perf_counter()
    ids, unit_t = load_item_embeddings(model_dir, unit_t=True)
    index = build_item_index(unit_t.T, nlist=nlist, seed=seed, threads=threads or usable_cores())
    path = write_item_index(index, join_path(model_dir, INDEX_FILE))
    return {"path": path, "items": len(ids), "dim": int(unit_t.shape[0]), "nlist": int(index.nlist),
            "seconds": round(time.perf_counter() - start, 2)}

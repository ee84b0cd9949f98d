"""Recommendation transforms: co-occurrence counts, nearest neighbours, blending, cold-start fallbacks.

Pure functions (used by training, evaluation and the Beam steps alike):

* :func:`top_k_similar`: exact cosine nearest neighbours of every item over
  an embedding matrix, computed in row blocks so a 100k-item catalog fits in
  memory (one block of ``block_rows x n_items`` scores at a time);
* :func:`blend_lists`: a convex blend of two ranked lists, each scaled to
  max 1 first (learned and co-occurrence scores live on different scales);
* :func:`cosine_normalize`: co-occurrence counts divided by ``sqrt(n_a * n_b)``.

Reading events: :func:`purchases_of_batch` gives the baskets of a record
batch of UserEvents column by column (:func:`purchase_or_reason` row by
row gives the same).

Beam pieces:

* :class:`ItemCounts`: baskets -> ``(item, baskets holding it)``, counted
  per bundle in a dict (one update per basket, not one element per item);
* :class:`CooccurrenceCounts`: baskets -> ``(item, [(other, score), ...])``
  top-k lists, raw or cosine-normalized, from sparse products over shards
  of the item index, so a basket of L items crosses the shuffle as a few
  int32 rows, never as L squared pairs;
* :class:`NearestNeighboursFn`: a DoFn scoring batches of item rows
  against the whole embedding matrix; :class:`SimilarItemsFn` does that and
  the cold items' title lookup (:class:`TitleIndex`) in one step;
* :class:`ApplyFallback`: keys with no usable list get the fallback list,
  flagged.

Every output row is a :data:`Recommendation`: ``(key, results, fallback)``
with ``results`` a tuple of ``(item_id, score)`` best first and
``fallback`` ``None`` or the name of the fallback used (``"popularity"``).

>>> import numpy as np
>>> emb = np.array([[1, 0], [0.9, 0.1], [0, 1]], np.float32)
>>> [(i, [int(j) for j in row]) for i, row in enumerate(top_k_similar(emb, 1)[0])]
[(0, [1]), (1, [0]), (2, [1])]
>>> blend_lists([("a", 2.0), ("b", 1.0)], [("b", 5.0)], alpha=0.5)
[('b', 0.75), ('a', 0.5)]
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from json.encoder import encode_basestring_ascii as _json_str
from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.counts import sum_counts
from transforms.errors import ConfigError
from transforms.item_index import DEFAULT_NPROBE, search_similar
from transforms.recommend_vocab import is_product_code
from transforms.shards import RowLayout

__all__ = [
    "MODEL_TYPES",
    "Recommendation",
    "RECOMMENDATION_SCHEMA",
    "recommendation_row",
    "RecommendationLayout",
    "retail_prediction",
    "retail_prediction_json",
    "top_k_similar",
    "top_k_similar_t",
    "unit_transposed",
    "blend_lists",
    "cosine_normalize",
    "rank_cooccurring",
    "top_cooccurring",
    "popular_items",
    "DROP_REASONS",
    "purchase_or_reason",
    "purchase_from_event",
    "purchases_of_batch",
    "purchases_of_rows",
    "time_micros",
    "ITEM_SEP",
    "pack_items",
    "unpack_items",
    "ItemTable",
    "CooccurrenceCounts",
    "ItemCounts",
    "MAX_BLOCK_SCORES",
    "NearestNeighboursFn",
    "score_block_rows",
    "ApplyFallback",
    "SimilarItemsFn",
    "TitleIndex",
    "title_neighbours",
]

# The Retail API's recommendation model types that the outputs correspond to.
MODEL_TYPES = ("similar-items", "frequently-bought-together", "recommended-for-you")


# Joins a basket's item ids into the one string that crosses a shuffle (pack_items).
ITEM_SEP = "\x1f"


def pack_items(items: Sequence[str]) -> str | tuple[str, ...]:
    """A basket's item ids as one string joined by :data:`ITEM_SEP`, or as a tuple when one of them is empty or holds it.

    For values that cross a shuffle: the local runner decodes every value it
    groups and encodes it again for the stage that reads the group, and a
    coder spends its time per object, so one string costs it about a third
    of what a tuple of 25 ids does (measured on Beam's FastPrimitivesCoder:
    143,000 baskets of 25 random ids decoded in 0.13 s against 0.41 s).
    :func:`unpack_items` reverses it.
    """
    joined = ITEM_SEP.join(items)
    if all(items) and joined.count(ITEM_SEP) == len(items) - 1:
        return joined
    return tuple(items)


def unpack_items(packed: str | Sequence[str]) -> Sequence[str]:
    """The item ids :func:`pack_items` packed, in their order."""
    if isinstance(packed, str):
        return packed.split(ITEM_SEP) if packed else ()
    return packed


class Recommendation(NamedTuple):
    """Top-k items for one key (a product id or a visitor id)."""

    key: str
    results: tuple[tuple[str, float], ...]
    fallback: Optional[str] = None


RECOMMENDATION_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("model_type", pa.string(), nullable=False),
        pa.field(
            "results",
            pa.list_(pa.struct([pa.field("id", pa.string()), pa.field("score", pa.float64())])),
        ),
        pa.field("fallback", pa.string(), nullable=True),
    ]
)


def recommendation_row(rec: Recommendation, model_type: str) -> dict:
    """A Recommendation as a row of :data:`RECOMMENDATION_SCHEMA`."""
    return {
        "key": rec.key,
        "model_type": model_type,
        "results": [{"id": i, "score": float(s)} for i, s in rec.results],
        "fallback": rec.fallback,
    }


def retail_prediction(rec: Recommendation, model_type: str) -> dict:
    """A Recommendation in the shape of a Retail API ``PredictResponse`` (plus the key it answers for)."""
    out = {
        "key": rec.key,
        "modelType": model_type,
        "results": [{"id": i, "metadata": {"score": round(float(s), 6)}} for i, s in rec.results],
    }
    if rec.fallback:
        out["fallback"] = rec.fallback
    return out


def retail_prediction_json(rec: Sequence, model_type: str) -> str:
    """``json.dumps(retail_prediction(rec, model_type), sort_keys=True)``, the same text, written without the dicts.

    ``rec``: a :class:`Recommendation` or a plain ``(key, results, fallback)``
    tuple. The JSON lines of an output are one such text per key; building
    the dicts and sorting their keys for each took 0.76 s of 18,600
    similar-items rows, and this 0.35 s. A score that is not finite falls
    back to ``json.dumps`` (which writes ``NaN`` and ``Infinity``).
    """
    key, results, fallback = rec
    scores = [round(float(s), 6) for _, s in results]
    if not all(map(math.isfinite, scores)):
        return json.dumps(retail_prediction(Recommendation(key, tuple(results), fallback), model_type), sort_keys=True)
    items = ", ".join(f'{{"id": {_json_str(i)}, "metadata": {{"score": {s!r}}}}}' for (i, _), s in zip(results, scores))
    head = f'{{"fallback": {_json_str(fallback)}, ' if fallback else "{"
    return f'{head}"key": {_json_str(key)}, "modelType": {_json_str(model_type)}, "results": [{items}]}}'


class RecommendationLayout(RowLayout):
    """:class:`transforms.shards.WriteSortedShards` over ``(key, results, fallback)`` tuples, one output of ``model_type``.

    What crosses the writer's shuffle is the tuple, not the dict row of
    :func:`recommendation_row` (a dict per row and per result), and the
    shard's table is built column by column. For 18,600 similar-items rows:
    the coder decoded the dict rows in 0.36 s and the tuples in 0.09 s (the
    local runner decodes and encodes what it groups, and the worker decodes
    it again), and the rows, their sort and ``Table.from_pylist`` took 0.48 s
    against 0.06 s for the sort and the columns; the tables are equal.
    """

    def __init__(self, model_type: str):
        super().__init__(("key",))
        self.model_type = model_type

    def sort_key(self, element) -> tuple:
        return (element[0],)

    def row(self, element) -> dict:
        return recommendation_row(Recommendation(*element), self.model_type)

    def table(self, ordered: list, schema: pa.Schema) -> pa.Table:
        offsets, ids, scores = [0], [], []
        for _, results, _ in ordered:
            for i, s in results:
                ids.append(i)
                scores.append(float(s))
            offsets.append(len(ids))
        item_type = schema.field("results").type.value_type
        results = pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()),
            pa.StructArray.from_arrays([pa.array(ids, pa.string()), pa.array(scores, pa.float64())], fields=list(item_type)),
        )
        columns = {
            "key": pa.array([e[0] for e in ordered], pa.string()),
            "model_type": pa.array([self.model_type] * len(ordered), pa.string()),
            "results": results,
            "fallback": pa.array([e[2] for e in ordered], pa.string()),
        }
        return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)

    def jsonl(self, element) -> str:
        """The element's JSON line (without the newline): :func:`retail_prediction_json`."""
        return retail_prediction_json(element, self.model_type)


# Why an event read by ``aisle recommend`` adds nothing to a basket (the summary counts them per reason).
DROP_REASONS = {
    "NOT_A_PURCHASE": "not a purchase-complete event (views and carts do not make baskets)",
    "REFUND": "a purchase with negative revenue (a refund or cancellation)",
    "EMPTY_BASKET": "a purchase with no product details",
    "NO_PURCHASED_PRODUCT": "every product detail has a quantity <= 0 or a non-product id (postage, bank charges, ...)",
}

Purchase = tuple[str, Optional[str], object, tuple[str, ...]]


def purchase_or_reason(row: Mapping) -> Purchase | str:
    """``(basket_id, visitor, event_time, product ids)`` of a purchase event row, or the DROP_REASONS code why not.

    ``row`` is a UserEvent as a plain dict (an Arrow ``to_pylist`` row).
    The basket id is ``purchaseTransaction.id`` (the visitor and time when it
    has none). Product details with a non-positive quantity or a
    non-product id are left out; a negative revenue (a refund) drops the
    event. The product ids come back stripped, each once, in their order.

    >>> purchase_or_reason({"eventType": "detail-page-view"})
    'NOT_A_PURCHASE'
    >>> purchase_or_reason({"eventType": "purchase-complete", "visitorId": "v", "eventTime": None,
    ...     "purchaseTransaction": {"id": "t1", "revenue": 3.0},
    ...     "productDetails": [{"product": {"id": "POST"}, "quantity": 1}, {"product": {"id": "85123A"}, "quantity": 2}]})
    ('t1', 'v', None, ('85123A',))
    """
    if row.get("eventType") != "purchase-complete":
        return "NOT_A_PURCHASE"
    tx = row.get("purchaseTransaction") or {}
    if tx.get("revenue") is not None and tx["revenue"] < 0:
        return "REFUND"
    details = row.get("productDetails") or ()
    if not details:
        return "EMPTY_BASKET"
    t = row.get("eventTime")
    visitor = row.get("visitorId") or None
    basket_id = tx.get("id") or f"{visitor}@{t.isoformat() if t is not None else ''}"
    items: dict[str, None] = {}
    for detail in details:
        detail = detail or {}
        pid = (detail.get("product") or {}).get("id")
        qty = detail.get("quantity")
        if (qty is not None and qty <= 0) or not is_product_code(pid):
            continue
        items[pid.strip()] = None
    if not items:
        return "NO_PURCHASED_PRODUCT"
    return basket_id, visitor, t, tuple(items)


# (basket_id, visitor, event time in microseconds since the epoch, product ids): a Purchase as the job shuffles it
TimedPurchase = tuple[str, Optional[str], Optional[int], tuple[str, ...]]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def time_micros(t: Optional[dt.datetime]) -> Optional[int]:
    """Microseconds since the epoch (a naive time read as UTC): an int crosses a shuffle far cheaper than a datetime."""
    if t is None:
        return None
    return ((t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)) - _EPOCH) // dt.timedelta(microseconds=1)


def _struct_fields(array: pa.Array, names: Sequence[str]) -> Optional[list[pa.Array]]:
    """The named children of a struct array, each null where the struct is (None when a field is missing)."""
    if not pa.types.is_struct(array.type) or any(array.type.get_field_index(n) < 0 for n in names):
        return None
    children = array.flatten()  # the struct's validity merged into each child
    return [children[array.type.get_field_index(n)] for n in names]


def _columns_of_batch(batch: pa.RecordBatch):
    """The UserEvent columns :func:`purchases_of_batch` reads, as Python lists, or None for another layout."""
    schema = batch.schema
    names = ("eventType", "visitorId", "eventTime", "productDetails", "purchaseTransaction")
    if any(schema.get_field_index(n) < 0 for n in names):
        return None
    time, details, tx = batch.column("eventTime"), batch.column("productDetails"), batch.column("purchaseTransaction")
    if not (pa.types.is_timestamp(time.type) and time.type.unit == "us" and pa.types.is_list(details.type)):
        return None
    tx_fields = _struct_fields(tx, ("revenue", "id"))
    values = details.flatten()  # the list elements of the non-null lists, in order
    detail_fields = _struct_fields(values, ("product", "quantity"))
    if tx_fields is None or detail_fields is None:
        return None
    product, quantity = detail_fields
    (pid,) = _struct_fields(product, ("id",)) or (None,)
    if pid is None or not (pa.types.is_string(pid.type) or pa.types.is_large_string(pid.type)):
        return None
    if not (pa.types.is_integer(quantity.type) or pa.types.is_floating(quantity.type)):
        return None
    lengths = details.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    micros = time.cast(pa.int64())  # naive times are read as UTC, as time_micros reads them
    return (
        batch.column("eventType").to_pylist(),
        batch.column("visitorId").to_pylist(),
        micros.to_pylist(),
        details.is_null().to_pylist(),
        lengths.tolist(),
        pid.to_pylist(),
        quantity.to_pylist(),
        tx_fields[0].to_pylist(),
        tx_fields[1].to_pylist(),
    )


def purchases_of_rows(rows: Sequence[Mapping]) -> tuple[list[TimedPurchase], Counter]:
    """:func:`purchases_of_batch` for UserEvent rows as dicts: :func:`purchase_or_reason` row by row."""
    counts: Counter = Counter(read=len(rows))
    purchases = []
    for row in rows:
        out = purchase_or_reason(row)
        if isinstance(out, str):
            counts[out] += 1
        else:
            counts["used"] += 1
            purchases.append((out[0], out[1], time_micros(out[2]), out[3]))
    return purchases, counts


def purchases_of_batch(batch: pa.RecordBatch | pa.Table) -> tuple[list[TimedPurchase], Counter]:
    """:func:`purchase_or_reason` over a record batch of UserEvents, column by column.

    Returns ``(purchases, counts)``: ``(basket_id, visitor, event time in
    microseconds, product ids)`` per purchase, and ``read``, ``used`` and one
    count per DROP_REASONS code. The same baskets and reasons as
    :func:`purchase_or_reason` row by row (a property test holds them
    equal), without building a dict per event and per product line: at 26
    lines a basket that was most of the read. A batch of another layout
    (missing or differently typed columns) is read row by row.
    """
    if isinstance(batch, pa.Table):  # what Beam's batched Parquet read gives
        purchases, counts = [], Counter(read=0)
        for part in batch.to_batches():
            more, part_counts = purchases_of_batch(part)
            purchases += more
            counts.update(part_counts)
        return purchases, counts
    columns = _columns_of_batch(batch)
    if columns is None:
        return purchases_of_rows(batch.to_pylist())
    counts: Counter = Counter(read=batch.num_rows)
    purchases = []
    event_type, visitor_id, micros, no_details, lengths, pids, quantities, revenue, tx_id = columns
    product_id: dict[Optional[str], Optional[str]] = {}  # raw id -> stripped id, or None when not a product
    unseen = object()
    start = 0
    for r in range(batch.num_rows):
        end = start + lengths[r]
        first, start = start, end
        if event_type[r] != "purchase-complete":
            counts["NOT_A_PURCHASE"] += 1
            continue
        if revenue[r] is not None and revenue[r] < 0:
            counts["REFUND"] += 1
            continue
        if no_details[r] or end == first:
            counts["EMPTY_BASKET"] += 1
            continue
        items: dict[str, None] = {}
        for k in range(first, end):
            qty = quantities[k]
            if qty is not None and qty <= 0:
                continue
            raw = pids[k]
            pid = product_id.get(raw, unseen)
            if pid is unseen:
                pid = product_id[raw] = raw.strip() if is_product_code(raw) else None
            if pid is not None:
                items[pid] = None
        if not items:
            counts["NO_PURCHASED_PRODUCT"] += 1
            continue
        visitor = visitor_id[r] or None
        basket_id = tx_id[r]
        if not basket_id:
            t = batch.column("eventTime")[r].as_py()
            basket_id = f"{visitor}@{t.isoformat() if t is not None else ''}"
        counts["used"] += 1
        purchases.append((basket_id, visitor, micros[r], tuple(items)))
    return purchases, counts


def purchase_from_event(row: Mapping) -> Optional[Purchase]:
    """The purchase of :func:`purchase_or_reason`, or None where it gives a reason."""
    out = purchase_or_reason(row)
    return None if isinstance(out, str) else out


# --------------------------------------------------------------------------
# NumPy
# --------------------------------------------------------------------------


def _best_k_in_order(cols: np.ndarray | None, vals: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top ``k`` of candidates given in column order (``cols``; None: column ``j`` is ``j``), ties by that order.

    Only the candidates that reach a row's k-th best value are sorted (k of
    them, more on ties): a stable sort of all of them gives the same lists.
    """
    rows, width = vals.shape
    kth = np.partition(vals, width - k, axis=1)[:, width - k, None]
    k_rows, k_slots = np.nonzero(vals >= kth)  # row-major: a row's candidates stay in column order
    kept = np.bincount(k_rows, minlength=rows)
    if kept.min() < k:  # a NaN score reaches no threshold: sort all the candidates, NaN last
        order = np.argsort(-vals, axis=1, kind="stable")[:, :k]
        return (order if cols is None else np.take_along_axis(cols, order, axis=1)), np.take_along_axis(vals, order, axis=1)
    k_pos = np.arange(k_rows.size) - np.repeat(np.cumsum(kept) - kept, kept)
    top_cols = np.zeros((rows, int(kept.max())), np.int64)
    top_vals = np.full((rows, int(kept.max())), -np.inf, vals.dtype)
    top_cols[k_rows, k_pos] = k_slots if cols is None else cols[k_rows, k_slots]
    top_vals[k_rows, k_pos] = vals[k_rows, k_slots]
    order = np.argsort(-top_vals, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(top_cols, order, axis=1), np.take_along_axis(top_vals, order, axis=1)


def _top_k(scores: np.ndarray, k: int, *, group: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top ``k`` (indices, values), best first, ties by lower index.

    Wide rows use a two-step selection that reads the score block once: the
    maximum of every group of ``group`` columns is computed, the k-th largest
    group maximum is a lower bound of each row's k-th largest score, so only
    the (at most ~k) groups whose maximum reaches it are searched. On a
    1024 x 100k block this is several times faster than ``np.argpartition``.
    The candidates are then ranked by :func:`_best_k_in_order`: at 37,200
    items, a block of 112 rows took 11.1 ms with a stable sort of all of
    them and 4.5 ms this way (the neighbours stage of recommend at 10x: 6.6-6.9 s -> 5.3 s with two workers).
    """
    rows, n = scores.shape
    k = min(k, n)
    if n < 8 * group or n // group < 2 * k:
        return _best_k_in_order(None, scores, k)
    gmax = np.maximum.reduceat(scores, np.arange(0, n, group), axis=1)  # no copy of the block
    n_groups = gmax.shape[1]
    tau = np.partition(gmax, n_groups - k, axis=1)[:, n_groups - k]
    r_idx, g_idx = np.nonzero(gmax >= tau[:, None])  # row-major: groups of a row in column order
    counts = np.bincount(r_idx, minlength=rows)
    pos = np.arange(r_idx.size) - np.repeat(np.cumsum(counts) - counts, counts)
    width = int(counts.max()) * group
    cand_cols = np.zeros((rows, width), np.int64)
    cand_vals = np.full((rows, width), -np.inf, scores.dtype)
    cols = g_idx[:, None] * group + np.arange(group)[None, :]
    valid = cols < n
    cols = np.where(valid, cols, 0)
    slots = pos[:, None] * group + np.arange(group)[None, :]
    cand_cols[r_idx[:, None], slots] = cols
    cand_vals[r_idx[:, None], slots] = np.where(valid, scores[r_idx[:, None], cols], -np.inf)
    return _best_k_in_order(cand_cols, cand_vals, k)


def top_k_similar(
    embeddings: np.ndarray,
    k: int,
    *,
    rows: Sequence[int] | np.ndarray | None = None,
    block_rows: int = 1024,
    normalized: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k neighbours of ``rows`` (default: every item), the item itself excluded.

    Returns ``(indices, scores)``, each ``(len(rows), k)``, best first.
    Memory: ``block_rows x n_items`` float32 at a time (1024 x 100k = 400 MB
    would be too much on a small worker, so lower ``block_rows`` there), and
    one transposed copy of the embeddings.
    """
    return top_k_similar_t(unit_transposed(embeddings, normalized=normalized), k, rows=rows, block_rows=block_rows)


def unit_transposed(embeddings: np.ndarray, *, normalized: bool = False) -> np.ndarray:
    """A float32 copy of ``embeddings`` (``items x dim``) in :func:`top_k_similar_t`'s layout (``dim x items``,
    C-contiguous), each item scaled to unit length unless ``normalized``; the input is left as it was.

    The norms are taken over the rows as given and the copy is divided in
    place: at most two copies exist at once, and the scores are the same to
    the bit as from the rows divided before the transpose.
    """
    emb = np.asarray(embeddings, np.float32)
    emb_t = np.array(emb.T, order="C")
    if not normalized:
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        emb_t /= np.where(norms > 0, norms, 1.0).T
    return emb_t


def top_k_similar_t(
    embeddings_t: np.ndarray,
    k: int,
    *,
    rows: Sequence[int] | np.ndarray | None = None,
    block_rows: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k_similar` over normalized embeddings given transposed (``dim x n_items``, C-contiguous).

    A block of scores is the product of a few item rows and the whole
    transposed matrix; with that matrix contiguous, BLAS reads it in the
    order it is stored. At 37,200 items (one thread, blocks of 112 rows),
    the neighbours of 1,024 items in random order took 202-205 ms against
    218-233 ms from the row-major matrix (three rounds), with the same lists
    and the same scores to the bit.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    emb_t = np.asarray(embeddings_t, np.float32)
    n = emb_t.shape[1]
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    k = min(k, max(n - 1, 1))
    out_i = np.zeros((rows.size, k), np.int64)
    out_s = np.zeros((rows.size, k), np.float32)
    for start in range(0, rows.size, block_rows):
        block = rows[start : start + block_rows]
        scores = np.ascontiguousarray(emb_t[:, block].T) @ emb_t
        scores[np.arange(block.size), block] = -np.inf
        idx, val = _top_k(scores, k)
        out_i[start : start + block.size] = idx
        out_s[start : start + block.size] = val
    return out_i, out_s


def blend_lists(
    a: Sequence[tuple[str, float]],
    b: Sequence[tuple[str, float]],
    *,
    alpha: float,
    k: int | None = None,
) -> list[tuple[str, float]]:
    """``alpha * a + (1 - alpha) * b`` per item, each list scaled to max 1 first; best first, top ``k``."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"blend alpha must be in [0, 1], got {alpha}")
    out: dict[str, float] = {}
    for weight, lst in ((alpha, a), (1.0 - alpha, b)):
        if not lst:
            continue
        top = max(abs(s) for _, s in lst) or 1.0
        for item, s in lst:
            out[item] = out.get(item, 0.0) + weight * s / top
    ranked = sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:k] if k else ranked


def cosine_normalize(count: float, n_a: float, n_b: float) -> float:
    """Co-occurrence ``count`` normalized for the popularity of both items."""
    return count / math.sqrt(max(n_a, 1e-12) * max(n_b, 1e-12))


def popular_items(counts: Mapping[str, float], k: int, *, exclude: Iterable[str] = ()) -> tuple[tuple[str, float], ...]:
    """The ``k`` most frequent items (ties by id), scores scaled to max 1."""
    skip = set(exclude)
    ranked = sorted(((i, c) for i, c in counts.items() if i not in skip), key=lambda kv: (-kv[1], kv[0]))[:k]
    top = ranked[0][1] if ranked else 1.0
    return tuple((i, c / top) for i, c in ranked)


# --------------------------------------------------------------------------
# Beam
# --------------------------------------------------------------------------


class ItemTable(NamedTuple):
    """Every item of the baskets, sorted, with the number of baskets holding it.

    The global index of an item is its position in ``ids``; Python's string
    order, so ordering by index is ordering by id. One string and one int
    per distinct item: bounded by the catalog, not by the number of baskets.
    """

    ids: tuple[str, ...]
    counts: np.ndarray  # int64, baskets per item, aligned with ids

    @classmethod
    def from_counts(cls, pairs: Iterable[tuple[str, int]]) -> "ItemTable":
        ordered = sorted(pairs)
        return cls(tuple(i for i, _ in ordered), np.fromiter((c for _, c in ordered), np.int64, len(ordered)))

    def index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.ids)}


def _basket_group(items: Sequence[str], n_groups: int) -> tuple[int, str | tuple[str, ...]]:
    """A basket -> ``(group, its distinct items, sorted and packed)``: the group is a CRC-32 of them, stable across runs."""
    distinct = tuple(sorted(set(items)))
    packed = pack_items(distinct)
    joined = packed if isinstance(packed, str) else ITEM_SEP.join(distinct)  # joined once, for the shuffle and the hash
    return zlib.crc32(joined.encode("utf-8")) % n_groups, packed


def _basket_rows(indptr: np.ndarray, indices: np.ndarray, n_items: int):
    """Baskets as a binary CSR matrix (a row per basket, a column per item index)."""
    import scipy.sparse as sp

    return sp.csr_matrix((np.ones(len(indices), np.int32), indices, indptr), shape=(len(indptr) - 1, n_items))


def _item_shards(n_items: int, items_per_shard: int) -> int:
    """How many item shards: item ``i`` belongs to shard ``i % n_shards``.

    Interleaved rather than ranges of ids, so every shard gets about the
    same number of items (at most ``items_per_shard``) and the same mix of
    popular and rare ones: the shards' top-k are the work units the workers
    share, and with ranges the last shard of the 10x catalog held 1,336
    items against 4,096.
    """
    return max(1, -(-n_items // items_per_shard))


def _baskets_by_shard(kv, table: ItemTable, items_per_shard: int):
    """A group of baskets -> ``(shard, (indptr, indices))``: the group's baskets that hold an item of each shard.

    A basket becomes one CSR row of global item indices (int32); it goes to
    every shard it holds an item of (see :func:`_item_shards`), so a shard
    sees every basket its items share.
    """
    baskets = [unpack_items(b) for b in kv[1]]
    index = table.index()
    lengths = np.fromiter((len(b) for b in baskets), np.int64, len(baskets))
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    indices = np.fromiter((index[i] for b in baskets for i in b), np.int32, int(indptr[-1]))
    matrix = _basket_rows(indptr, indices, len(table.ids))
    n_shards = _item_shards(len(table.ids), items_per_shard)
    rows = np.repeat(np.arange(len(baskets), dtype=np.int64), lengths)
    pairs = np.unique(rows * n_shards + indices % n_shards)
    for shard in np.unique(pairs % n_shards):
        sub = matrix[pairs[pairs % n_shards == shard] // n_shards]
        yield int(shard), (sub.indptr.astype(np.int64), sub.indices.astype(np.int32))


def _shard_top_k(kv, table: ItemTable, items_per_shard: int, k: int, normalize: str, min_count: int):
    """``(shard, [(indptr, indices), ...])`` -> ``(item, top-k co-occurring items)`` for the shard's items.

    The shard's rows of the co-occurrence matrix ``C = B^T B`` (``B``: the
    baskets it received, one row each) come from one sparse product, and
    each row is ranked by :func:`rank_cooccurring`, as :func:`top_cooccurring` ranks.
    """
    shard, parts = kv
    parts = list(parts)
    n_items = len(table.ids)
    lengths = np.concatenate([np.diff(indptr) for indptr, _ in parts])
    indices = np.concatenate([ind for _, ind in parts])
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    baskets = _basket_rows(indptr, indices, n_items)
    items = np.arange(shard, n_items, _item_shards(n_items, items_per_shard))
    shared = (baskets.tocsc()[:, items].T @ baskets).tocsr()  # len(items) x n_items: baskets shared per pair
    for row, item in enumerate(items.tolist()):
        cols = shared.indices[shared.indptr[row] : shared.indptr[row + 1]]  # in no order: ties go by index, which is id order
        vals = shared.data[shared.indptr[row] : shared.indptr[row + 1]]
        others = cols != item
        cols, vals = cols[others], vals[others]
        positions, scores = rank_cooccurring(vals, table.counts[item], table.counts[cols], k, normalize=normalize,
                                             min_count=min_count, tie_order=cols)
        if len(positions):
            yield table.ids[item], tuple((table.ids[int(c)], float(sc)) for c, sc in zip(cols[positions], scores))


# ItemCounts' partial counts travel as this many dicts a bundle, items dealt by a hash of their id
ITEM_COUNT_SHARDS = 16


def _count_shard(item: str) -> int:
    return zlib.crc32(item.encode("utf-8")) % ITEM_COUNT_SHARDS  # the same in every process (str's hash is salted)


class _CountPerBundle(beam.DoFn):
    """Baskets -> ``(shard, {item: baskets holding it})`` counted over the bundle, emitted when the bundle ends.

    One dict update per basket instead of one element per item: the
    per-element path through Beam costs microseconds an element, and a basket
    holds 26 items on average in the retail data. The counts leave the bundle
    as :data:`ITEM_COUNT_SHARDS` dicts, not one element per item: a job cut
    into many bundles (the local runner's, with several workers) would send
    most of the catalog through the shuffle once a bundle. Held in memory: one
    count per distinct item of the bundle (bounded by the catalog).
    """

    def start_bundle(self):
        self._counts: dict = {}

    def process(self, items, window=beam.DoFn.WindowParam):
        counts = self._counts.get(window)
        if counts is None:
            counts = self._counts[window] = Counter()
        counts.update(set(items))

    def finish_bundle(self):
        from apache_beam.utils.windowed_value import WindowedValue

        for window, counts in self._counts.items():
            shards: dict[int, dict] = {}
            for item, n in counts.items():
                shards.setdefault(_count_shard(item), {})[item] = n
            for shard, part in shards.items():
                yield WindowedValue((shard, part), window.max_timestamp(), (window,))
        self._counts = {}


class ItemCounts(beam.PTransform):
    """Baskets (sequences of item ids) -> ``(item, number of baskets holding it)``, one row per item."""

    def expand(self, baskets):
        return (
            baskets
            | "CountInBundle" >> beam.ParDo(_CountPerBundle())
            | "SumBundles" >> beam.CombinePerKey(sum_counts)
            | "PerItem" >> beam.FlatMap(lambda shard_counts: shard_counts[1].items())
        )


class CooccurrenceCounts(beam.PTransform):
    """Baskets -> ``(item, ((other, score), ...))``, the ``k`` best co-occurring items of every item.

    ``normalize="cosine"`` scores ``count / sqrt(n_item * n_other)``;
    ``"none"`` scores the raw count. Items that never share a basket with
    another item get no row (callers give them a fallback).
    ``min_count`` drops pairs seen fewer times (noise on large data).

    How: the items, sorted, get global indices (:class:`ItemTable`, a side
    input of one id and one count per distinct item: bounded by the
    catalog). Baskets are grouped (about ``baskets_per_group`` per group)
    and turned into sparse rows of indices; the items are dealt into shards
    of at most ``items_per_shard`` (index modulo the number of shards), and
    each group sends every shard the rows of its baskets that hold one of
    the shard's items. A shard's rows of the
    co-occurrence matrix are then one SciPy sparse product, and its top-k
    one pass over them. What crosses the shuffle is each basket once as
    strings and then a few times as int32 arrays, never a pair per element;
    a worker holds one group of baskets, or one shard's baskets and its
    ``items_per_shard`` rows of counts. A basket travels to every shard it
    holds an item of: at 10x the retail volume (37,200 items, 26 items a
    basket), shards of 4,096 items should take each basket about 9 times
    and shards of 1,024 about 19 (expected for items spread evenly over 10
    or 37 shards); measured, the local runner's largest buffer went from
    346 to 194 MiB, with the same output.

    ``item_counts``: the baskets' :class:`ItemCounts`, when the pipeline
    already has them (counted here otherwise). ``n_baskets``: a singleton
    PCollection with the number of baskets, or an estimate of it, made
    upstream (the purchase events, say): counted here otherwise, and that
    count holds the baskets back in the runner until the last one is made,
    to be read again in a stage of their own. It only sets how many groups
    the baskets are dealt into: the counts, and so the lists, are the same
    for any number.
    """

    def __init__(self, k: int = 10, *, normalize: str = "cosine", min_count: int = 1,
                 items_per_shard: int = 4096, baskets_per_group: int = 4096, item_counts=None, n_baskets=None):
        super().__init__()
        if k < 1:
            raise ConfigError(f"CooccurrenceCounts k must be >= 1, got {k}")
        if normalize not in ("none", "cosine"):
            raise ConfigError(f"CooccurrenceCounts normalize must be 'none' or 'cosine', got {normalize!r}")
        if items_per_shard < 1 or baskets_per_group < 1:
            raise ConfigError(f"items_per_shard and baskets_per_group must be >= 1, got {items_per_shard} and {baskets_per_group}")
        self.k, self.normalize, self.min_count = k, normalize, min_count
        self.items_per_shard, self.baskets_per_group = items_per_shard, baskets_per_group
        self.item_counts, self.n_baskets = item_counts, n_baskets

    def expand(self, baskets):
        per_group, per_shard = self.baskets_per_group, self.items_per_shard
        counts = self.item_counts if self.item_counts is not None else baskets | "ItemCounts" >> ItemCounts()
        table = beam.pvalue.AsSingleton(
            counts
            | "AllItemCounts" >> beam.combiners.ToList()
            | "ItemTable" >> beam.Map(ItemTable.from_counts)
        )
        n_baskets = self.n_baskets if self.n_baskets is not None else baskets | "CountBaskets" >> beam.combiners.Count.Globally()
        n_groups = beam.pvalue.AsSingleton(n_baskets | "GroupCount" >> beam.Map(lambda n: max(1, -(-n // per_group))))
        return (
            baskets
            | "AssignGroup" >> beam.Map(_basket_group, n_groups=n_groups)
            | "GroupBaskets" >> beam.GroupByKey()
            | "BasketRows" >> beam.FlatMap(_baskets_by_shard, table=table, items_per_shard=per_shard)
            | "GroupShards" >> beam.GroupByKey()
            | "TopK"
            >> beam.FlatMap(_shard_top_k, table=table, items_per_shard=per_shard, k=self.k,
                            normalize=self.normalize, min_count=self.min_count)
        )


def rank_cooccurring(
    shared: np.ndarray, n_item: float, n_other: np.ndarray | None, k: int, *, normalize: str = "cosine", min_count: int = 1,
    tie_order: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions and scores of the ``k`` best of one item's candidates, best first, ties by position (or ``tie_order``).

    ``shared``: baskets each candidate shares with the item; ``n_other``:
    baskets holding each candidate (needed for ``normalize="cosine"``).
    Give the candidates in id order and ties go by id, or give
    ``tie_order`` (one value per candidate, e.g. its index in id order):
    ties then go by it, and the candidates may come in any order. Scores are the raw
    counts or :func:`cosine_normalize` of them, the same float64 operations
    over all candidates at once; only those that reach the k-th best score
    are sorted. Candidates seen in fewer than ``min_count`` baskets are left out.
    """
    keep = np.flatnonzero(shared >= min_count)
    if not len(keep):
        return keep, np.zeros(0, np.float64)
    counts = shared[keep].astype(np.float64)
    if normalize == "none":
        scores = counts
    else:
        scores = counts / np.sqrt(max(float(n_item), 1e-12) * np.maximum(n_other[keep].astype(np.float64), 1e-12))
    if len(keep) > k:
        kth = np.partition(scores, len(keep) - k)[len(keep) - k]
        top = np.flatnonzero(scores >= kth)  # ties at the k-th score included, then ordered by position
        keep, scores = keep[top], scores[top]
    order = np.lexsort((keep if tie_order is None else tie_order[keep], -scores))[:k]
    return keep[order], scores[order]


def top_cooccurring(
    others: Mapping[str, int], item_counts: Mapping[str, int], n_item: int, k: int, *, normalize: str = "cosine", min_count: int = 1
) -> tuple[tuple[str, float], ...]:
    """The ``k`` best of one item's co-occurrence ``others`` (other -> shared baskets), best first, ties by id.

    :func:`rank_cooccurring` over the candidates in id order.

    >>> top_cooccurring({"b": 2, "c": 2, "d": 1}, {"b": 4, "c": 1, "d": 1}, 4, 2)
    (('c', 1.0), ('b', 0.5))
    """
    ids = sorted(others)
    shared = np.fromiter((others[o] for o in ids), np.int64, len(ids))
    n_other = np.fromiter((item_counts.get(o, 0) for o in ids), np.float64, len(ids))
    positions, scores = rank_cooccurring(shared, n_item, n_other, k, normalize=normalize, min_count=min_count)
    return tuple((ids[p], float(s)) for p, s in zip(positions, scores))


# The most scores a block of the exact nearest-neighbour search holds (16 MiB of float32).
MAX_BLOCK_SCORES = 1 << 22


def score_block_rows(n_items: int, block_rows: int = 1024, max_block_scores: int = MAX_BLOCK_SCORES) -> int:
    """Rows of a block of scores against ``n_items`` items: at most ``block_rows``, and ``max_block_scores`` scores."""
    return max(1, min(block_rows, max_block_scores // max(1, n_items)))


class NearestNeighboursFn(beam.DoFn):
    """Batches of item ids -> ``(item, ((neighbour, cosine), ...))`` over an embedding matrix.

    ``load`` returns ``(ids, embeddings)`` and runs once per DoFn instance
    (``setup``); the matrix is normalized and transposed once, in a copy of
    its own, unless ``unit_t``: then ``load`` gives it in that layout
    already (:func:`unit_transposed`'s, as
    ``load_item_embeddings(..., unit_t=True)`` reads it) and no copy is made.
    Ids not in the matrix are emitted on the ``"unknown"`` tagged
    output for a fallback.

    A block of scores is at most ``block_rows`` rows and ``max_block_scores``
    floats (16 MiB by default), so a larger catalog means shorter blocks, not
    a larger one: at 37,200 items, blocks of 112 rows instead of 1,024 (152
    MB). The neighbours depend only on the batches, which the pipeline
    fixes by the data, so any number of workers finds the same ones; a
    different batch or block size can change a score's last bits (with
    batches of 512 items instead of 1,024, one of 37,200 lists at 10x
    did: BLAS may sum in another order for a block of another shape).

    ``load_index``: a callable ``(unit_t) -> index`` of this matrix (as
    :func:`transforms.item_index.load_item_index` with its path bound, which
    checks that the index holds the matrix's vectors), called once in
    ``setup``; the neighbours are then searched in that
    approximate index (:func:`transforms.item_index.search_similar`,
    ``nprobe`` clusters a query) instead of among all items.
    """

    def __init__(
        self,
        load,
        k: int,
        *,
        block_rows: int = 1024,
        max_block_scores: int = MAX_BLOCK_SCORES,
        unit_t: bool = False,
        load_index=None,
        nprobe: int | None = None,
    ):
        if block_rows < 1 or max_block_scores < 1:
            raise ConfigError(f"block_rows and max_block_scores must be >= 1, got {block_rows} and {max_block_scores}")
        self._load, self.k, self.block_rows, self.max_block_scores = load, k, block_rows, max_block_scores
        self.unit_t = unit_t
        self._load_index, self.nprobe = load_index, nprobe

    def setup(self):
        ids, emb = self._load()
        self._ids = list(ids)
        items_axis = 1 if self.unit_t else 0
        if np.ndim(emb) != 2 or np.shape(emb)[items_axis] != len(self._ids):
            layout = "dim x items (unit_t=True)" if self.unit_t else "items x dim"
            raise ConfigError(
                f"the loader gave {len(self._ids)} ids and a matrix of shape {np.shape(emb)}, expected {layout}: "
                "a loader and unit_t that disagree about the layout?"
            )
        self._emb_t = np.ascontiguousarray(emb, np.float32) if self.unit_t else unit_transposed(emb)
        del emb
        self._index = {item: i for i, item in enumerate(self._ids)}
        self._block_rows = score_block_rows(len(self._ids), self.block_rows, self.max_block_scores)
        self._ann = None
        if self._load_index is not None:
            self._ann = self._load_index(self._emb_t)

    def process(self, batch: Sequence[str]):
        known = [item for item in batch if item in self._index]
        for item in batch:
            if item not in self._index:
                yield beam.pvalue.TaggedOutput("unknown", item)
        if not known:
            return
        rows = [self._index[i] for i in known]
        if self._ann is None:
            idx, val = top_k_similar_t(self._emb_t, self.k, rows=rows, block_rows=self._block_rows)
        else:
            idx, val = search_similar(
                self._ann, self._emb_t, rows, self.k, nprobe=self.nprobe or DEFAULT_NPROBE, exact_block_rows=self._block_rows
            )
        for item, row_i, row_s in zip(known, idx, val):
            yield item, tuple((self._ids[j], float(s)) for j, s in zip(row_i, row_s))


class ApplyFallback(beam.PTransform):
    """``(keys, lists, fallback_list[, keyed_fallbacks])`` -> one :class:`Recommendation` per key.

    ``keys``: every key that must get an answer (duplicates answered once);
    ``lists``: ``(key, ((item, score), ...))`` for some of them, the primary
    answer; ``fallback_list``: a singleton ``((item, score), ...)``, used minus
    the key itself and flagged ``fallback_name``; ``keyed_fallbacks``
    (optional): ``(key, list)`` second-choice answers for some keys (e.g.
    title-similar items of a cold product), flagged ``keyed_fallback_name``.
    ``fallback_list`` is a side input of ``k + 1`` items whatever the data
    size; everything else is joined per key (CoGroupByKey).
    A key is answered by the first non-empty of: its list, its keyed
    fallback, the global fallback.
    """

    def __init__(self, k: int, *, fallback_name: str = "popularity", keyed_fallback_name: str = "title"):
        super().__init__()
        self.k, self.fallback_name, self.keyed_fallback_name = k, fallback_name, keyed_fallback_name

    def expand(self, pcolls):
        if len(pcolls) == 4:
            keys, lists, fallback_list, keyed = pcolls
        else:
            (keys, lists, fallback_list), keyed = pcolls, None
        k, name, keyed_name = self.k, self.fallback_name, self.keyed_fallback_name
        tagged_keys = keys | "KeyAll" >> beam.Map(lambda key: (key, None))
        joined = {"keys": tagged_keys, "lists": lists}
        if keyed is not None:
            joined["keyed"] = keyed

        def finish(kv, fallback):
            key, grouped = kv
            found = [lst for lst in grouped["lists"] if lst]
            second = [lst for lst in grouped.get("keyed", ()) if lst]
            if not grouped["keys"]:
                pass  # a list for a key nobody asked for
            elif found:
                yield Recommendation(key, tuple(found[0])[:k], None)
            elif second:
                yield Recommendation(key, tuple(second[0])[:k], keyed_name)
            else:
                yield Recommendation(key, tuple((i, s) for i, s in fallback if i != key)[:k], name)

        return (
            joined
            | "JoinLists" >> beam.CoGroupByKey()
            | "Fallback" >> beam.FlatMap(finish, fallback=beam.pvalue.AsSingleton(fallback_list))
        )


class TitleIndex:
    """The titles of candidate items as TF-IDF vectors, fitted once; :meth:`neighbours` ranks them for query titles.

    The content-based fallback for a product no purchase has taught the
    model about: a new "RED RETROSPOT MUG" gets the known mugs and
    retrospot items. Words are runs of two or more letters, lower-cased;
    term frequencies are sublinear.
    """

    def __init__(self, candidates: Mapping[str, str], *, min_score: float = 0.1):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.min_score = min_score
        # sorted: a side input dict's order follows arrival order, and float sums follow the matrix order
        self.ids = sorted(i for i, t in candidates.items() if t and t.strip())
        self._vectorizer = TfidfVectorizer(lowercase=True, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b", sublinear_tf=True)
        try:
            self._matrix = self._vectorizer.fit_transform([candidates[i] for i in self.ids]) if self.ids else None
        except ValueError:  # no usable word in any candidate title
            self._matrix = None

    def neighbours(self, queries: Mapping[str, str], k: int) -> dict[str, tuple[tuple[str, float], ...]]:
        """For each query item, the ``k`` candidates with the most similar title (TF-IDF cosine).

        Scores below ``min_score`` are dropped, and so is the query item
        itself; a query whose title shares no word with any candidate gets
        no entry.
        """
        q_ids = sorted(i for i, t in queries.items() if t and t.strip())
        if not q_ids or self._matrix is None:
            return {}
        sims = (self._vectorizer.transform([queries[i] for i in q_ids]) @ self._matrix.T).tocsr()
        c_ids, out = self.ids, {}
        for r, qid in enumerate(q_ids):
            # the row's stored scores, read in place (getrow built a matrix per query: 410 queries against
            # 37,610 titles took 0.42 s that way and 0.04 s this way)
            cols, vals = sims.indices[sims.indptr[r] : sims.indptr[r + 1]], sims.data[sims.indptr[r] : sims.indptr[r + 1]]
            own = bisect.bisect_left(c_ids, qid)  # the query's own column, if it is a candidate (the ids are sorted)
            keep = (vals >= self.min_score) & (cols != (own if own < len(c_ids) and c_ids[own] == qid else -1))
            cols, vals = cols[keep], vals[keep]
            best = np.lexsort((cols, -vals))[:k]  # best score first, ties by id: the ids are sorted, so by column
            if best.size:
                out[qid] = tuple((c_ids[j], float(v)) for j, v in zip(cols[best], vals[best]))
        return out


def title_neighbours(
    queries: Mapping[str, str],
    candidates: Mapping[str, str],
    k: int,
    *,
    min_score: float = 0.1,
) -> dict[str, tuple[tuple[str, float], ...]]:
    """For each query item, the ``k`` candidate items with the most similar title (:class:`TitleIndex`)."""
    return TitleIndex(candidates, min_score=min_score).neighbours(queries, k)


class SimilarItemsFn(NearestNeighboursFn):
    """Tagged batches of :class:`transforms.shards.TaggedFixedBatches` -> similar items, by embedding or by title.

    * ``("embeddings", ((item, _), ...))``: the items' nearest neighbours over
      the embeddings (:class:`NearestNeighboursFn`), on the main output; items
      the embeddings do not hold go to ``"unknown"``;
    * ``("titles", ((item, title), ...))``: cold items' title-similar known
      items (:class:`TitleIndex` over the ``known_titles`` side input of
      ``(item, title)`` pairs, an iterable or a dict, read and fitted once
      per DoFn instance, and only by one that gets a titles batch), on the
      ``"title"`` output.

    The known items' titles are one per item the model knows: bounded by the
    model's vocabulary, not by events or visitors.
    """

    EMBEDDINGS, TITLES = "embeddings", "titles"

    def setup(self):
        super().setup()
        self._titles, self._titles_of = None, None

    def process(self, element, known_titles=None):
        tag, batch = element
        if tag == self.EMBEDDINGS:
            yield from super().process([item for item, _ in batch])
        elif tag == self.TITLES:
            if self._titles_of is not known_titles:  # the side input is one object per window
                self._titles, self._titles_of = TitleIndex(dict(known_titles or ())), known_titles
            for item, lst in self._titles.neighbours(dict(batch), self.k).items():
                yield beam.pvalue.TaggedOutput("title", (item, lst))
        else:
            raise ValueError(f"unknown batch tag {tag!r}: expected {self.EMBEDDINGS!r} or {self.TITLES!r}")

"""ModelHandlers for the recommender: SavedModel and TFLite, query in, top-k items out.

Both handlers take a query, a tuple of vocabulary rows (the items of a
basket, a visitor's history, or one item), run the model
``(ids, weights) -> scores`` on a batch of queries and return, per query,
the ``top_k`` best rows and their scores with the query's own items
excluded: post-processing happens inside the handler so a 100k-item score
vector never travels between Beam steps. Wrap them in
``KeyedModelHandler`` to keep the product or visitor id alongside::

    handler = KeyedModelHandler(SavedModelQueryHandler("out/model/saved_model", top_k=10))
    results = keyed_queries | RunInference(handler)   # (key, PredictionResult(query, (rows, scores)))

Why not Beam's ``tensorflow_inference.TFModelHandlerNumpy``: in Beam 2.77
that module imports ``tensorflow_hub`` at import time, which in turn needs
``tf-keras`` and ``pkg_resources``; neither comes with ``tensorflow-cpu``
2.21 and Keras 3, and its loader (``tf.keras.models.load_model``) cannot read
a Keras 3 ``model.export()`` SavedModel anyway. The handler below loads the
SavedModel with ``tf.saved_model.load`` and calls its serving endpoint.
Beam has no TFLite handler; :class:`TFLiteQueryHandler` fills that gap with
the LiteRT interpreter (``ai_edge_litert``), the successor of
``tf.lite.Interpreter`` (deprecated in TensorFlow 2.20). It is a separate
0.1 s import of about 40 MiB, where TensorFlow is 5-7 s and about 580 MiB,
so a worker that serves the quantized model never imports TensorFlow; the
same flatbuffer gives bit-identical scores in both interpreters.

Models load through Beam's ``FileSystems``, so ``gs://`` works like a local
path (a SavedModel folder is copied to a local temporary folder first).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import numpy as np

from transforms.beam_ml import ModelHandler, PredictionResult
from transforms.errors import ConfigError, ModelLoadError
from transforms.inference import empty_model_file, open_model_file, read_model_bytes, thread_budget
from transforms.recommend_vocab import encode_queries

__all__ = [
    "QueryModel",
    "REASONS",
    "SERVING_TFLITE",
    "SavedModelQueryHandler",
    "TFLiteQueryHandler",
    "load_tflite_predict",
    "load_saved_model_predict",
    "top_k_excluding",
    "load_vocab",
    "load_item_embeddings",
]

METRICS_NAMESPACE = "aisle_recommend"

# The quantized model beside an exported one (components.recommend_quantize.write_serving_tflite)
# that ``aisle recommend --engine auto`` serves when it is there.
SERVING_TFLITE = "model_int8.tflite"

# Every reason code a recommendation dead letter (pipelines.recommend) can carry, with what it means.
REASONS = {
    "INFERENCE_FAILED": "the model failed on the batch of queries holding this product or visitor (the detail has the error)",
}


class QueryModel:
    """A loaded model: ``predict(ids, weights) -> scores`` and its ``max_query_items``.

    ``scores_view`` (default: ``predict``) may return the runtime's own
    output buffer instead of a copy: valid until the next call, for a caller
    that reads the scores at once (the handlers' top-k). A TFLite model's
    scores for one batch of 256 over 37,200 items are 38 MB, and copying
    them out of the interpreter took longer than the model itself (41 ms
    against 25 ms, measured).

    ``n_items`` is the number of items it scores (a score per item and
    query), where the model declares it (None otherwise).
    """

    def __init__(self, predict, max_query_items: int, name: str, *, scores_view=None, n_items: int | None = None):
        self.predict, self.max_query_items, self.name = predict, max_query_items, name
        self.scores_view = scores_view or predict
        self.n_items = n_items


def top_k_excluding(
    scores: np.ndarray, queries: Sequence[Sequence[int]], k: int, *, block: int = 32, overwrite: bool = False
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row: the ``k`` best (rows, scores), the query's own rows excluded, best first, ties by row.

    The columns are dealt into ``ceil(n / block)`` strided blocks (block
    ``j`` holds columns ``j, j + n_blocks, ...``); a row's ``k`` best scores
    lie in its ``k`` blocks with the highest maxima, so only those
    ``k * block`` candidates are ranked: one vectorized maximum over the
    row instead of a selection over all of it. A tie at the k-th score
    that reaches outside those blocks looks up the tied columns.
    Excluded and non-finite scores are never returned.

    ``overwrite=True`` lets the function write into ``scores`` (a float32
    array the caller discards) instead of copying it, when some block size
    from ``block`` to ``2 * block - 1`` divides the number of columns, so
    that no padding is needed (37,200 items: blocks of 40).
    """
    scores = np.asarray(scores, np.float32)
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k < 1 or n_rows == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(n_rows)]
    exact = next((b for b in range(block, 2 * block) if n_cols % b == 0), None) if overwrite else None
    if exact is not None and scores.flags.c_contiguous and scores.flags.writeable:
        block, n_blocks = exact, n_cols // exact
        padded = scores  # exclusions and NaN are written over the caller's scores
    else:
        n_blocks = -(-n_cols // block)
        padded = _scratch((n_rows, n_blocks * block))  # the one copy: padding, exclusions, NaN
        padded[:, :n_cols] = scores
        padded[:, n_cols:] = -np.inf
    for r, q in enumerate(queries):
        if len(q):
            padded[r, np.asarray(q, np.int64)] = -np.inf
    block_max = padded.reshape(n_rows, block, n_blocks).max(axis=1)  # strided blocks: a reduction over contiguous slices
    if np.isnan(block_max).any() or np.isposinf(block_max).any():
        padded[~np.isfinite(padded)] = -np.inf
        block_max = padded.reshape(n_rows, block, n_blocks).max(axis=1)
    top_blocks = min(k, n_blocks)
    best = np.argpartition(-block_max, top_blocks - 1, axis=1)[:, :top_blocks]  # (rows, top_blocks)
    others = block_max.copy()
    np.put_along_axis(others, best, -np.inf, axis=1)
    others_max = others.max(axis=1)  # the best score outside the chosen blocks
    cand = (best[:, :, None] + n_blocks * np.arange(block)[None, None, :]).reshape(n_rows, -1)  # column indices
    vals = np.take_along_axis(padded, cand, axis=1)
    order = np.lexsort((cand, -vals), axis=-1)[:, :k]  # best score first, ties by column
    cand, vals = np.take_along_axis(cand, order, axis=1), np.take_along_axis(vals, order, axis=1)
    out = []
    for r in range(n_rows):
        c, v = cand[r], vals[r]
        if others_max[r] > -np.inf and others_max[r] >= v[-1]:
            # a tie at the k-th score reaches outside the chosen blocks (common with an INT8 model's
            # 256 output levels): the scores above the k-th, ranked, then the k-th score's columns in order
            c = _top_k_with_ties(padded[r, :n_cols], c, v, k)
            v = padded[r, c]
        keep = v > -np.inf
        out.append((c[keep].astype(np.int64), v[keep]))
    return out


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, int]) -> np.ndarray:
    """A float32 work array of ``shape``, the same one again for the same shape in this thread.

    A fresh 256 x 37,200 array costs its page faults on every batch (18 ms
    of the 54 ms of one top-k, measured); a reused one is warm. Nothing
    returned by :func:`top_k_excluding` is a view of it.
    """
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.shape != shape:
        buf = _SCRATCH.buf = np.empty(shape, np.float32)
    return buf


def _top_k_with_ties(row: np.ndarray, cand: np.ndarray, vals: np.ndarray, k: int, *, chunk: int = 4096) -> np.ndarray:
    """The columns of the ``k`` best scores of ``row``, best first, ties by column, when the k-th
    best score (``vals[-1]``) also sits outside the candidate columns ``cand`` (ranked, ``vals``).

    Every score above the k-th is a candidate already (the columns left out
    score at most the k-th), so only the columns that hold the k-th score
    itself are looked up: the first ones of the row, in chunks, stopping as
    soon as there are enough.
    """
    kth = vals[-1]
    above = cand[vals > kth]
    need = k - len(above)
    at: list[np.ndarray] = []
    for start in range(0, len(row), chunk):
        hits = np.flatnonzero(row[start : start + chunk] == kth)[:need] + start
        at.append(hits)
        need -= len(hits)
        if need == 0:
            break
    return np.concatenate([above, *at])


def _localize_dir(path: str) -> str:
    """A local folder with the content of ``path`` (itself when it is already local)."""
    if os.path.isdir(path):
        return path
    from apache_beam.io.filesystems import FileSystems

    root = path.rstrip("/") + "/"
    try:
        files = [m.path for m in FileSystems.match([root + "**"])[0].metadata_list]
    except Exception as exc:
        raise ModelLoadError(f"cannot list SavedModel folder {path!r}: {exc}") from exc
    if not files:
        raise ModelLoadError(f"SavedModel folder {path!r} is empty or missing; export it with components.recommend_model.export_model")
    local = tempfile.mkdtemp(prefix="aisle-savedmodel-")
    for f in files:
        target = os.path.join(local, f[len(root) :])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:  # a SavedModel may hold legitimately empty files, so no read_model_bytes here
            with FileSystems.open(f) as src, open(target, "wb") as out:
                out.write(src.read())
        except Exception as exc:
            raise ModelLoadError(f"cannot copy {f!r} of SavedModel folder {path!r}: {exc}") from exc
    return local


def load_tflite_predict(model_content: bytes, *, num_threads: int = 2, source: str = "<bytes>") -> QueryModel:
    """A :class:`QueryModel` over a TFLite flatbuffer held in memory (``source``: where it came from, for messages)."""
    from ai_edge_litert.interpreter import Interpreter

    if not model_content:
        raise ModelLoadError(f"TFLite model {source!r} is empty (0 bytes): convert it again with components.recommend_quantize.convert_tflite")
    try:
        interpreter = Interpreter(model_content=model_content, num_threads=num_threads)
    except Exception as exc:
        raise ModelLoadError(f"cannot load TFLite model {source!r}: {exc}") from exc
    details = interpreter.get_input_details()
    by_role = {("ids" if np.dtype(d["dtype"]) == np.int32 else "weights"): d for d in details}
    if set(by_role) != {"ids", "weights"} or len(details) != 2:
        raise ModelLoadError(
            f"TFLite model {source!r}: inputs {[d['name'] for d in details]} are not (ids int32, weights float); "
            "convert it with components.recommend_quantize.convert_tflite"
        )
    out = interpreter.get_output_details()[0]
    state = {"shape": None}

    def scores_view(ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        if state["shape"] != ids.shape:
            interpreter.resize_tensor_input(by_role["ids"]["index"], ids.shape)
            interpreter.resize_tensor_input(by_role["weights"]["index"], weights.shape)
            interpreter.allocate_tensors()
            state["shape"] = ids.shape
        wd = by_role["weights"]
        w = weights.astype(np.float32)
        if np.dtype(wd["dtype"]) != np.float32:
            scale, zero = wd["quantization"]
            w = np.clip(np.round(w / scale + zero), np.iinfo(wd["dtype"]).min, np.iinfo(wd["dtype"]).max).astype(wd["dtype"])
        interpreter.set_tensor(by_role["ids"]["index"], ids.astype(np.int32))
        interpreter.set_tensor(wd["index"], w)
        interpreter.invoke()
        scores = interpreter.tensor(out["index"])()  # a view of the output buffer: no copy
        if np.dtype(out["dtype"]) != np.float32:
            scale, zero = out["quantization"]
            scores = scores.astype(np.float32)  # a new array, the view released
            scores -= zero  # in place: one score array per batch, not three
            scores *= scale
        return scores

    def predict(ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.array(scores_view(ids, weights), np.float32, copy=True)

    n_items = int(out["shape"][-1]) if len(out["shape"]) == 2 and out["shape"][-1] > 0 else None
    return QueryModel(predict, int(by_role["ids"]["shape"][1]), "tflite", scores_view=scores_view, n_items=n_items)


def load_saved_model_predict(path: str) -> QueryModel:
    """A :class:`QueryModel` over a SavedModel folder written by ``keras.Model.export``."""
    import tensorflow as tf

    local = _localize_dir(path)
    graph = os.path.join(local, "saved_model.pb")
    if not os.path.isfile(graph) or os.path.getsize(graph) == 0:
        state = "is empty (0 bytes)" if os.path.isfile(graph) else "is missing"
        raise ModelLoadError(
            f"cannot load SavedModel {path!r}: its saved_model.pb {state}; export it with components.recommend_model.export_model"
        )
    try:
        loaded = tf.saved_model.load(local)
        fn = loaded.signatures["serving_default"]
    except Exception as exc:
        raise ModelLoadError(f"cannot load SavedModel {path!r}: {exc}") from exc
    spec = fn.structured_input_signature[1]
    if set(spec) != {"ids", "weights"}:
        raise ModelLoadError(f"SavedModel {path!r} takes {sorted(spec)}, expected ids and weights")
    (out_name,) = list(fn.structured_outputs)[:1]

    def predict(ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        result = fn(ids=tf.constant(ids, tf.int32), weights=tf.constant(weights, tf.float32))
        return result[out_name].numpy()

    out_shape = fn.structured_outputs[out_name].shape
    n_items = int(out_shape[-1]) if out_shape.rank == 2 and out_shape[-1] is not None else None
    model = QueryModel(predict, int(spec["ids"].shape[1]), "saved_model", n_items=n_items)
    model._keep_alive = loaded  # the signature holds weak references to the loaded object
    return model


class _QueryHandler(ModelHandler[Sequence[int], tuple[np.ndarray, np.ndarray], QueryModel]):
    def __init__(
        self,
        model_uri: str,
        *,
        top_k: int = 10,
        exclude_query_items: bool = True,
        min_batch_size: int = 1,
        max_batch_size: int = 256,
        max_batch_duration_secs: Optional[int] = None,
        share_across_processes: bool = False,
        max_block_scores: int = 1 << 22,
    ):
        super().__init__()
        if max_block_scores < 1:
            raise ConfigError(f"max_block_scores must be >= 1, got {max_block_scores}")
        self.max_block_scores = max_block_scores
        self.model_uri = model_uri
        self.top_k = top_k
        self.exclude_query_items = exclude_query_items
        self._batching = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}
        if max_batch_duration_secs is not None:
            self._batching["max_batch_duration_secs"] = max_batch_duration_secs
        self._share = share_across_processes

    def run_inference(
        self,
        batch: Sequence[Sequence[int]],
        model: QueryModel,
        inference_args: Optional[dict[str, Any]] = None,
    ) -> Iterable[PredictionResult]:
        queries = [tuple(int(r) for r in q) for q in batch]
        excluded = queries if self.exclude_query_items else [()] * len(queries)
        rows = self.block_rows(model, len(queries))
        top: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(queries), rows):
            block = queries[start : start + rows]
            # a short last block is padded to the others' shape: the interpreter is not resized for it
            ids, w = encode_queries(block + [()] * (rows - len(block)) if len(queries) > rows else block, model.max_query_items)
            scores = model.scores_view(ids, w)[: len(block)]
            top += top_k_excluding(scores, excluded[start : start + rows], self.top_k, overwrite=True)  # this call's to spend
            del scores  # the interpreter refuses to run again while a view of its buffer lives
        return [PredictionResult(q, t, model_id=self.model_uri) for q, t in zip(batch, top)]

    def block_rows(self, model: QueryModel, n_queries: int) -> int:
        """Queries scored per model call: all of them, unless their scores would pass ``max_block_scores``.

        A block's scores (``rows x n_items`` floats, in the runtime's output
        buffer and in its top-k) are what a worker holds for a batch, so a
        larger catalog means shorter blocks, not more memory: at the default
        16 MiB and 37,200 items, a batch of 256 queries is scored in 3 blocks
        of 86 instead of one (38 MB). Each query's scores are its own row:
        the lists came out byte-identical to one call per batch (all 27
        output files of recommend at 10x; a test checks both engines), and
        the blocks, like the batches, are fixed by the data.
        """
        most = max(1, self.max_block_scores // model.n_items) if model.n_items else n_queries
        blocks = -(-n_queries // most) if n_queries else 1
        return max(1, -(-n_queries // blocks))  # blocks of even size: 256 queries in 3 blocks of 86, not 112 + 112 + 32

    def get_num_bytes(self, batch: Sequence[Sequence[int]]) -> int:
        return sum(4 * len(q) for q in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self):
        return dict(self._batching)

    def share_model_across_processes(self) -> bool:
        return self._share


class SavedModelQueryHandler(_QueryHandler):
    """RunInference over the recommender's SavedModel (``tf.saved_model.load``, serving signature)."""

    def load_model(self) -> QueryModel:
        return load_saved_model_predict(self.model_uri)


class TFLiteQueryHandler(_QueryHandler):
    """RunInference over a ``.tflite`` recommender (FP32, FP16, INT8 dynamic or full INT8)."""

    def __init__(self, model_uri: str, *, num_threads: int | None = None, **kwargs):
        super().__init__(model_uri, **kwargs)
        self.num_threads = num_threads

    def load_model(self) -> QueryModel:
        threads = self.num_threads or thread_budget()
        return load_tflite_predict(read_model_bytes(self.model_uri), num_threads=threads, source=self.model_uri)


def load_vocab(model_dir: str):
    """The :class:`~transforms.recommend_vocab.ItemVocab` saved beside a model (``vocab.json``)."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.recommend_vocab import ItemVocab

    return ItemVocab.from_json(read_model_bytes(FileSystems.join(model_dir, "vocab.json")).decode("utf-8"))


def load_item_embeddings(model_dir: str, *, unit_t: bool = False) -> tuple[tuple[str, ...], np.ndarray]:
    """(item ids, embedding matrix) saved beside a model (``vocab.json``, ``item_embeddings.npy``).

    With ``unit_t`` the matrix comes in :func:`transforms.recommend.top_k_similar_t`'s
    layout (each item scaled to unit length, transposed to ``dim x items``,
    C-contiguous), read a few MiB of rows at a time into that one array: the
    file's bytes and a row-major copy are never held beside it, so loading
    needs about one matrix of memory where reading the file whole and then
    transposing needs three (at 37,200 items of 128 floats, an 18 MiB
    matrix: tracemalloc peaked at 34 MiB with the vocabulary, against 57).
    The values are the same to the bit as :func:`transforms.recommend.unit_transposed`'s
    of the whole file.
    """
    import io

    from apache_beam.io.filesystems import FileSystems

    vocab = load_vocab(model_dir)
    path = FileSystems.join(model_dir, "item_embeddings.npy")
    try:  # never unpickle: a plain array file only
        if unit_t:
            emb = _read_unit_transposed(path)
        else:
            emb = np.load(io.BytesIO(read_model_bytes(path)), allow_pickle=False)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot read item embeddings {path!r}: {exc}") from exc
    n_rows = emb.shape[1] if unit_t else emb.shape[0]
    if n_rows != len(vocab):
        raise ModelLoadError(
            f"{model_dir!r}: item_embeddings.npy has {n_rows} rows but vocab.json {len(vocab)} ids; re-export the model"
        )
    return vocab.ids, emb


def _read_up_to(f, n: int) -> bytes:
    """``n`` bytes of ``f``, fewer only at its end (a stream may return less than asked before it)."""
    parts, got = [], 0
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _read_exactly(f, n: int, path: str) -> bytes:
    data = _read_up_to(f, n)
    if len(data) < n:
        raise ModelLoadError(f"{path!r} is truncated: {n - len(data)} bytes of its array are missing")
    return data


def _read_unit_transposed(path: str, *, chunk_bytes: int = 4 << 20) -> np.ndarray:
    """A 2-D ``.npy`` of item rows -> unit rows, transposed (``dim x items``, float32, C-contiguous), read in chunks."""
    from transforms.recommend import unit_transposed

    fmt = np.lib.format
    with open_model_file(path) as f:
        magic = _read_up_to(f, fmt.MAGIC_LEN)
        if not magic:
            raise empty_model_file(path)
        if len(magic) < fmt.MAGIC_LEN or not magic.startswith(fmt.MAGIC_PREFIX):
            raise ModelLoadError(f"{path!r} is not a .npy file: its magic string is {magic!r}, not {fmt.MAGIC_PREFIX!r} and a version")
        version = (magic[-2], magic[-1])
        readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
        if version not in readers:
            raise ModelLoadError(f"{path!r}: .npy format version {version} is not supported (1.0 and 2.0 are)")
        shape, fortran_order, dtype = readers[version](f)
        if dtype.hasobject or dtype.kind not in "fiu":
            raise ModelLoadError(f"{path!r} holds {dtype} values, not numbers (object arrays would need pickle, which is refused)")
        if len(shape) != 2:
            raise ModelLoadError(f"{path!r} is not a 2-D matrix of item rows: shape {shape}")
        n_items, dim = shape
        if fortran_order:  # columns on disk: rare, and a whole read is no worse than the transposed copy
            data = _read_exactly(f, n_items * dim * dtype.itemsize, path)
            return unit_transposed(np.frombuffer(data, dtype).reshape(dim, n_items).T)
        emb_t = np.empty((dim, n_items), np.float32)
        step = max(1, chunk_bytes // max(1, dim * dtype.itemsize))
        for start in range(0, n_items, step):
            rows = min(step, n_items - start)
            chunk = np.frombuffer(_read_exactly(f, rows * dim * dtype.itemsize, path), dtype).reshape(rows, dim)
            emb_t[:, start : start + rows] = unit_transposed(chunk)
        return emb_t

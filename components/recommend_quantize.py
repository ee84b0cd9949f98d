"""TFLite conversions of the recommender's SavedModel: FP32, FP16, INT8 dynamic-range, full INT8.

All four start from the SavedModel that
:func:`components.recommend_model.export_model` writes and use TensorFlow's
own converter (``tf.lite.TFLiteConverter``), not a hand-written quantizer:

* ``fp32``: plain conversion, the reference;
* ``fp16``: weights stored as float16, computed in float32;
* ``dynamic``: INT8 weights, activations quantized on the fly (``Optimize.DEFAULT``);
* ``int8``: full integer, activations calibrated on a representative
  dataset of real queries (``TFLITE_BUILTINS_INT8`` only; the ids input
  stays int32 and the scores output float32, so callers are unchanged).

:class:`TFLiteScorer` runs a converted model through the LiteRT interpreter
with the same ``score(queries)`` shape as every other scorer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np

from components.recommend_model import EmbeddingScorer
from transforms.errors import ConfigError, ModelLoadError
from transforms.inference.recommend import SERVING_TFLITE, load_tflite_predict, load_vocab
from transforms.recommend_vocab import encode_queries

__all__ = ["MODES", "SERVING_TFLITE", "convert_tflite", "convert_all", "write_serving_tflite", "TFLiteScorer"]

MODES = ("fp32", "fp16", "dynamic", "int8")


def convert_tflite(
    saved_model_dir: str,
    out_path: str,
    *,
    mode: str = "fp32",
    representative_queries: Sequence[Sequence[int]] | None = None,
    max_query_items: int | None = None,
    calibration_steps: int = 200,
) -> str:
    """Convert ``saved_model_dir`` to a ``.tflite`` file at ``out_path`` in ``mode``; returns the path.

    ``mode="int8"`` needs ``representative_queries`` (vocabulary rows, e.g.
    training baskets with one item hidden) and the model's
    ``max_query_items``; up to ``calibration_steps`` of them are used.
    """
    import tensorflow as tf

    if mode not in MODES:
        raise ConfigError(f"TFLite mode must be one of {MODES}, got {mode!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if mode == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if not representative_queries or not max_query_items:
            raise ConfigError(
                "full INT8 conversion needs representative_queries (a few hundred real queries) and max_query_items"
            )
        ids, weights = encode_queries(list(representative_queries)[:calibration_steps], max_query_items)

        def representative() -> Iterable[list[np.ndarray]]:
            for i in range(len(ids)):
                yield {"ids": ids[i : i + 1], "weights": weights[i : i + 1]}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_output_type = tf.float32
    try:
        blob = converter.convert()
    except Exception as exc:  # the converter raises several unrelated types
        raise ModelLoadError(f"TFLite conversion ({mode}) of {saved_model_dir!r} failed: {exc}") from exc
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "wb") as fh:
        fh.write(blob)
    return out_path


def convert_all(
    saved_model_dir: str,
    out_dir: str,
    *,
    representative_queries: Sequence[Sequence[int]],
    max_query_items: int,
    modes: Sequence[str] = MODES,
) -> dict[str, str]:
    """Every TFLite candidate under ``out_dir`` as ``model_<mode>.tflite``; mode -> path."""
    return {
        mode: convert_tflite(
            saved_model_dir,
            os.path.join(out_dir, f"model_{mode}.tflite"),
            mode=mode,
            representative_queries=representative_queries,
            max_query_items=max_query_items,
        )
        for mode in modes
    }


def write_serving_tflite(model_dir: str, baskets: Sequence[Sequence[str]], *, seed: int = 0) -> str:
    """Full INT8 of the model exported under ``model_dir``, as ``<model_dir>/model_int8.tflite``; returns its path.

    Calibrated on hide-one-item queries made from ``baskets`` (item ids, the
    model's training baskets), as the ``quantize_recommender`` component
    does; ``aisle recommend`` serves this file by default when it exists.
    """
    import json

    from components.recommend_eval import make_queries

    vocab = load_vocab(model_dir)
    with open(os.path.join(model_dir, "model.json")) as fh:
        max_query_items = int(json.load(fh)["config"]["max_query_items"])
    queries = make_queries(baskets, vocab, seed=seed).rows[:500]
    if not queries:  # baskets of one item only: single-item queries calibrate as well
        queries = [vocab.encode(list(dict.fromkeys(b))) for b in baskets if b][:500]
    return convert_tflite(
        os.path.join(model_dir, "saved_model"),
        os.path.join(model_dir, SERVING_TFLITE),
        mode="int8",
        representative_queries=queries,
        max_query_items=max_query_items,
    )


class TFLiteScorer(EmbeddingScorer):
    """``score(queries)`` through a ``.tflite`` file."""

    def __init__(self, path: str, max_query_items: int | None = None, *, batch_size: int = 256, num_threads: int = 2, name: str | None = None):
        try:
            with open(path, "rb") as fh:
                content = fh.read()
        except OSError as exc:
            raise ModelLoadError(f"cannot read TFLite model {path!r}: {exc}") from exc
        model = load_tflite_predict(content, num_threads=num_threads)
        super().__init__(
            model.predict,
            max_query_items or model.max_query_items,
            batch_size=batch_size,
            name=name or os.path.basename(path),
        )

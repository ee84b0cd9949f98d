"""KFP component ``quantize_recommender``: TFLite candidates of the recommender (``components.recommend_quantize``).

FP32, FP16, dynamic-range INT8 and full INT8 (activations calibrated on
real training queries) conversions of the exported SavedModel, with
TensorFlow's own converter; the SavedModel itself stays a candidate
(``saved_model``). Writes ``candidates.json`` for ``evaluate``.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.kfp.images import AISLE_IMAGE


@dsl.component(base_image=AISLE_IMAGE, install_kfp_package=False)
def quantize_recommender(
    model: Input[Model],
    heldout: Input[Dataset],
    candidates: Output[Model],
    metrics: Output[Metrics],
    include: list = ["fp32", "fp16", "dynamic", "int8"],  # noqa: B006
):
    """Convert the SavedModel of ``model`` to the TFLite modes in ``include``."""
    import json
    import os
    import shutil

    from components.kfp._common import check_choice, dump_json, log_metrics
    from components.recommend_quantize import MODES, convert_all

    for mode in include:
        check_choice("include", mode, MODES)
    out = candidates.path
    base = os.path.join(out, "base")
    shutil.copytree(model.path, base, dirs_exist_ok=True)
    with open(os.path.join(heldout.path, "calibration_queries.json")) as fh:
        queries = json.load(fh)
    max_query_items = int(model.metadata.get("max_query_items") or json.load(open(os.path.join(base, "model.json")))["config"]["max_query_items"])
    paths = convert_all(os.path.join(base, "saved_model"), os.path.join(out, "tflite"), representative_queries=queries,
                        max_query_items=max_query_items, modes=list(include))
    manifest = {
        "family": "recommender",
        "reference": "fp32" if "fp32" in paths else "saved_model",
        "base": "base",
        "candidates": {"saved_model": "base/saved_model", **{m: os.path.relpath(p, out) for m, p in paths.items()}},
        "framework": {"saved_model": "tensorflow", **{m: "tflite" for m in paths}},
    }
    dump_json(os.path.join(out, "candidates.json"), manifest)
    candidates.metadata.update({"family": "recommender", "candidates": sorted(manifest["candidates"])})
    log_metrics(metrics, {"size_mb": {m: os.path.getsize(p) / 2**20 for m, p in paths.items()}, "candidates": len(manifest["candidates"])})

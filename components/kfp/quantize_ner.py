"""KFP component ``quantize_ner``: optimize and quantize the NER model into candidates.

Wraps ``components.ner_candidates.build_candidates``: ONNX export (the FP32
reference), graph fusion, dynamic INT8, static INT8 calibrated on the
tune sentences, and mixed precision within ``max_f1_drop`` F1 points.
Writes one folder per candidate and ``candidates.json`` (name -> folder,
framework, build notes): the input of ``evaluate``.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.kfp.images import AISLE_IMAGE


@dsl.component(base_image=AISLE_IMAGE, install_kfp_package=False)
def quantize_ner(
    model: Input[Model],
    heldout: Input[Dataset],
    candidates: Output[Model],
    metrics: Output[Metrics],
    include: list = ["fp32", "fp32_fused", "int8_dynamic", "int8_static", "int8_mixed"],  # noqa: B006
    max_f1_drop: float = 1.0,
    max_length: int = 64,
):
    """Build the NER candidates named in ``include`` from the trained PyTorch model."""
    import os
    import shutil

    from components.kfp._common import check_choice, dump_json, log_metrics
    from components.kfp._ner import read_sentences
    from components.ner_candidates import build_candidates

    for name in include:
        check_choice("include", name, ("torch_fp32", "fp32", "fp32_fused", "int8_dynamic", "int8_dynamic_fused", "int8_static", "int8_mixed"))
    tune = read_sentences(os.path.join(heldout.path, "tune.txt"))
    out = candidates.path
    os.makedirs(out, exist_ok=True)
    folders, notes = build_candidates(
        model.path, out, calibration=tune, tuning=tune, max_f1_drop=max_f1_drop, max_length=max_length, include=list(include)
    )
    if "torch_fp32" in folders:  # keep the artifact self-contained
        shutil.copytree(model.path, os.path.join(out, "torch_fp32"), dirs_exist_ok=True)
        folders["torch_fp32"] = os.path.join(out, "torch_fp32")
    manifest = {
        "family": "ner",
        "reference": "fp32",
        "candidates": {name: os.path.relpath(path, out) for name, path in folders.items()},
        "framework": {name: "pytorch" if name == "torch_fp32" else "onnx" for name in folders},
        "notes": notes,
        "max_length": max_length,
    }
    dump_json(os.path.join(out, "candidates.json"), manifest)
    candidates.metadata.update({"family": "ner", "candidates": sorted(folders)})
    sizes = {}
    for name, path in folders.items():
        sizes[name] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 2**20
    log_metrics(metrics, {"size_mb": sizes, "candidates": len(folders)})

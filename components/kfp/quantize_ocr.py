"""KFP component ``quantize_ocr``: calibrate and quantize the OCR models (``components.ocr_quantize``).

The PP-OCRv4 detector, recognizer and orientation classifier that ship
with rapidocr-onnxruntime are the FP32 starting point (OCR is not
retrained here). The images of ``images`` are split into calibration and
evaluation sets, kept apart: the calibration half drives static INT8 and
the mixed-precision search; the evaluation half goes to ``heldout`` for
``evaluate``.
"""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Model, Output

from components.kfp.images import AISLE_IMAGE


@dsl.component(base_image=AISLE_IMAGE, install_kfp_package=False)
def quantize_ocr(
    images: str,
    candidates: Output[Model],
    heldout: Output[Dataset],
    metrics: Output[Metrics],
    include: list = ["fp32", "fp16", "int8_dynamic", "int8_static", "mixed"],  # noqa: B006
    max_rec_drop: float = 0.01,
    calibration_share: float = 0.5,
    threads: int = 1,
):
    """Build the OCR candidates in ``include`` from the packaged models, calibrated on part of ``images``."""
    import json
    import os
    import shutil

    from components.kfp._common import dump_json, log_metrics
    from components.kfp._ocr import image_uris, load_images, split_images
    from components.ocr_quantize import build_ocr_candidates

    uris = image_uris(images)
    calibration, evaluation = split_images(uris, calibration_share=calibration_share)
    os.makedirs(heldout.path, exist_ok=True)
    with open(os.path.join(heldout.path, "images.json"), "w") as fh:
        json.dump({"calibration": calibration, "evaluation": evaluation}, fh, indent=2)
    include = list(include) if "fp32" in include else ["fp32", *include]  # the reference is always built
    built = build_ocr_candidates(candidates.path, load_images(calibration), candidates=include, max_rec_drop=max_rec_drop, threads=threads)
    shutil.rmtree(os.path.join(candidates.path, "_tmp"), ignore_errors=True)
    manifest = {
        "family": "ocr",
        "reference": "fp32",
        "candidates": {name: os.path.relpath(info.model_dir, candidates.path) for name, info in built.items()},
        "framework": {name: "onnx" for name in built},
        "notes": {name: {"notes": info.notes, "agreement": info.agreement} for name, info in built.items()},
    }
    dump_json(os.path.join(candidates.path, "candidates.json"), manifest)
    candidates.metadata.update({"family": "ocr", "candidates": sorted(built)})
    heldout.metadata.update({"family": "ocr", "calibration_images": len(calibration), "evaluation_images": len(evaluation)})
    log_metrics(metrics, {"images": {"calibration": len(calibration), "evaluation": len(evaluation)},
                          "calibration_agreement": {n: i.agreement for n, i in built.items()}})

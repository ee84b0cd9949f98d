"""KFP component ``quantize_ocr``: calibrate and quantize the OCR models (``components.ocr_quantize``).

The PP-OCRv4 detector, recognizer and orientation classifier that ship
with rapidocr-onnxruntime are the FP32 starting point. With
``labelled_pages`` (a local or ``gs://`` folder in the SROIE layout:
``img/``, ``box/``), the recognizer's CTC head is first fine-tuned on them
(``components.ocr_finetune``; every ``dev_every``-th page picks the epoch
and the space threshold) and the candidates are built from the result;
the same pages then retrain the FP32 candidate's recognizer with INT8
simulated (``components.ocr_qat``) for ``int8_qat``; without them that
candidate is left out, with the reason under ``skipped`` in the
candidates' metadata.
The images of ``images`` are split into calibration and evaluation sets,
kept apart: the calibration half drives static INT8 and the
mixed-precision search; the evaluation half goes to ``heldout`` for
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
    include: list = ["fp32", "fp16", "int8_dynamic", "int8_static", "int8_detector", "int8_fp32_small", "mixed", "int8_qat"],  # noqa: B006
    max_rec_drop: float = 0.01,
    calibration_share: float = 0.5,
    threads: int = 1,
    labelled_pages: str = "",
    finetune_epochs: int = 6,
    dev_every: int = 3,
    qat_epochs: int = 1,
):
    """Build the OCR candidates in ``include`` from the packaged models, calibrated on part of ``images``."""
    import json
    import os
    import shutil

    from components.kfp._common import dump_json, log_metrics
    from components.kfp._ocr import image_uris, load_images, split_images
    from components.ocr_quantize import QAT_CANDIDATE, build_ocr_candidates

    uris = image_uris(images)
    calibration, evaluation = split_images(uris, calibration_share=calibration_share)
    os.makedirs(heldout.path, exist_ok=True)
    with open(os.path.join(heldout.path, "images.json"), "w") as fh:
        json.dump({"calibration": calibration, "evaluation": evaluation}, fh, indent=2)
    include = list(include) if "fp32" in include else ["fp32", *include]  # the reference is always built
    skipped = {}
    if QAT_CANDIDATE in include and not labelled_pages:
        include.remove(QAT_CANDIDATE)
        skipped[QAT_CANDIDATE] = "quantization-aware training needs labelled_pages"
    qat = QAT_CANDIDATE in include
    base, finetuned, train, dev = None, {}, [], []
    if labelled_pages:
        import tempfile

        from components.kfp._common import copy_tree
        from components.ocr_eval import load_sroie
        from components.ocr_finetune import FinetuneConfig, finetune_recognizer
        from transforms.inference.ocr import OcrModelPaths

        local = tempfile.mkdtemp(prefix="aisle-ocr-pages-")
        copy_tree(labelled_pages, local)
        pages = load_sroie(local)
        dev = pages[::dev_every] if dev_every > 1 and len(pages) > 1 else []
        train = [p for p in pages if p not in dev]
        out = os.path.join(candidates.path, "_finetuned")
        result = finetune_recognizer(None, train, out, dev_pages=dev, config=FinetuneConfig(epochs=finetune_epochs, threads=threads))
        base = OcrModelPaths.from_dir(out)
        finetuned = {"train_lines": result.train_lines, "dev_lines": result.dev_lines, "best_epoch": result.best_epoch,
                     "space_prob": result.space_prob or 0.0, "dev_word_f1": result.dev_word_f1}
    from components.ocr_qat import QatConfig

    built = build_ocr_candidates(candidates.path, load_images(calibration), base=base, candidates=include, max_rec_drop=max_rec_drop,
                                 threads=threads, qat_pages=(train, dev) if qat else None, qat_config=QatConfig(epochs=qat_epochs, threads=threads))
    if qat:
        q = built[QAT_CANDIDATE].training
        finetuned["qat"] = {"train_lines": q["train_lines"], "dev_lines": q["dev_lines"], "space_prob": q["space_prob"] or 0.0,
                            "dev_line_word_f1": q["dev_line_word_f1"] or 0.0}
    shutil.rmtree(os.path.join(candidates.path, "_tmp"), ignore_errors=True)
    if labelled_pages:  # the candidates carry the fine-tuned weights; keep the record, not a fourth copy of the models
        shutil.rmtree(local, ignore_errors=True)  # the local copy of the pages, read by the fine-tuning and the QAT above
        shutil.copyfile(os.path.join(candidates.path, "_finetuned", "finetune.json"), os.path.join(candidates.path, "finetune.json"))
        shutil.rmtree(os.path.join(candidates.path, "_finetuned"), ignore_errors=True)
    manifest = {
        "family": "ocr",
        "reference": "fp32",
        "candidates": {name: os.path.relpath(info.model_dir, candidates.path) for name, info in built.items()},
        "framework": {name: "onnx" for name in built},
        "notes": {name: {"notes": info.notes, "agreement": info.agreement} for name, info in built.items()},
    }
    dump_json(os.path.join(candidates.path, "candidates.json"), manifest)
    candidates.metadata.update({"family": "ocr", "candidates": sorted(built), "skipped": skipped})
    heldout.metadata.update({"family": "ocr", "calibration_images": len(calibration), "evaluation_images": len(evaluation)})
    log_metrics(metrics, {"images": {"calibration": len(calibration), "evaluation": len(evaluation)},
                          "calibration_agreement": {n: i.agreement for n, i in built.items()}, "finetune": finetuned})

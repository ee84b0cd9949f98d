"""OCR glue of the KFP components over ``components.ocr_quantize`` and ``transforms.inference.ocr``.

The sample catalog's product photos carry no transcripts, so the OCR
candidates are compared with the FP32 models on held-out images:
``agreement`` is the character agreement of a candidate's text with the
FP32 text (1 - edit distance / reference length, per image, averaged).
With a labelled set (SROIE, ``components.ocr_eval``) the same step can
score against ground truth instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from transforms.errors import ConfigError

__all__ = ["image_uris", "load_images", "split_images", "evaluate_ocr_candidates"]


def image_uris(images: str) -> list[str]:
    """Image URIs from a catalog (ingest folder, .jsonl/.parquet products) or a folder/glob of image files."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines.enrich import catalog_files, image_refs

    if images.lower().endswith((".jpg", ".jpeg", ".png")) or any(c in images for c in "*?["):
        return sorted(m.path for m in FileSystems.match([images])[0].metadata_list)
    try:
        files, root = catalog_files(images)
    except Exception:
        pattern = FileSystems.join(images.rstrip("/"), "*")
        found = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        return sorted(p for p in found if p.lower().endswith((".jpg", ".jpeg", ".png")))
    return sorted({ref.uri for f in files for ref in image_refs(f, root)})


def load_images(uris: Sequence[str]):
    """BGR arrays of ``uris`` (any FileSystems scheme)."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.inference.ocr import decode_image

    out = []
    for uri in uris:
        with FileSystems.open(uri) as fh:
            out.append(decode_image(fh.read()))
    return out


def split_images(uris: Sequence[str], *, calibration_share: float = 0.5) -> tuple[list[str], list[str]]:
    """(calibration, evaluation) URIs, disjoint, by a stable order."""
    uris = sorted(uris)
    if len(uris) < 2:
        raise ConfigError(f"OCR quantization needs at least 2 images (calibration and evaluation kept apart); got {len(uris)}")
    cut = min(len(uris) - 1, max(1, int(round(len(uris) * calibration_share))))
    return uris[:cut], uris[cut:]


def _agreement(text: str, ref: str) -> float:
    from components.ocr_eval import levenshtein

    if not ref:
        return 1.0 if not text else 0.0
    return max(0.0, 1.0 - levenshtein(text, ref) / len(ref))


def evaluate_ocr_candidates(candidates_dir: str, heldout_dir: str, *, repeats: int = 3, threads: int = 1) -> list:
    """Agreement with FP32 text, latency per image and size of every OCR candidate on the held-out images."""
    from components.candidates import CandidateResult, measure_latency
    from transforms.inference.ocr import OcrEngine, OcrModelPaths, full_text

    manifest = json.loads(open(os.path.join(candidates_dir, "candidates.json")).read())
    uris = json.loads(open(os.path.join(heldout_dir, "images.json")).read())["evaluation"]
    images = load_images(uris)
    engines = {
        name: OcrEngine.load(OcrModelPaths.from_dir(os.path.join(candidates_dir, rel)), threads=threads)
        for name, rel in manifest["candidates"].items()
    }
    reference = manifest.get("reference", "fp32")
    if reference not in engines:
        raise ConfigError(f"the OCR candidates have no reference {reference!r}: include fp32")
    texts = {name: [full_text(r.lines) for r in engine.read_images(images)] for name, engine in engines.items()}
    results = []
    for name, engine in engines.items():
        agreement = sum(_agreement(t, r) for t, r in zip(texts[name], texts[reference])) / len(images)
        folder = os.path.join(candidates_dir, manifest["candidates"][name])
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".onnx"))
        timing = measure_latency(lambda engine=engine: engine.read_images(images[:1]), warmup=1, repeats=repeats)
        results.append(
            CandidateResult(
                name=name,
                model_path=folder,
                size_bytes=size,
                metrics={"agreement": agreement, "chars": float(sum(len(t) for t in texts[name]))},
                latency_ms_p50=timing["p50_ms"],
                latency_ms_p95=timing["p95_ms"],
                throughput_per_s=1000.0 / timing["mean_ms"] if timing["mean_ms"] > 0 else float("inf"),
                notes=f"{len(images)} held-out images; agreement with {reference} text; latency per image",
            )
        )
    return results

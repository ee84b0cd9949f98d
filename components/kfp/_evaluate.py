"""Per-family candidate evaluation for the ``evaluate`` component: measure, then build the chosen serving folder.

Every family measures its candidates on the same held-out data with the
shared toolkit (:mod:`components.candidates`) and returns
``CandidateResult`` rows; the choice and the report are common.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from transforms.errors import ConfigError

__all__ = ["FAMILIES", "FamilySpec", "measure", "materialize"]


@dataclass(frozen=True)
class FamilySpec:
    metric: str  # the accuracy metric candidates are chosen on
    higher_is_better: bool = True


FAMILIES = {
    "ner": FamilySpec("f1"),
    "recommender": FamilySpec("recall@10"),
    "ocr": FamilySpec("agreement"),
}


def _manifest(candidates_dir: str) -> dict:
    path = os.path.join(candidates_dir, "candidates.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{candidates_dir!r} has no candidates.json: pass the output of a quantize_* step")
    return json.loads(open(path).read())


def measure(family: str, candidates_dir: str, heldout_dir: str, *, repeats: int = 10, threads: int = 1) -> list:
    """CandidateResult for every candidate of ``candidates_dir`` on ``heldout_dir``."""
    manifest = _manifest(candidates_dir)
    if manifest.get("family") != family:
        raise ConfigError(f"evaluate family={family!r} got candidates of family {manifest.get('family')!r}")
    if family == "ner":
        from components.kfp._ner import read_sentences
        from components.ner_candidates import evaluate_ner_candidates

        folders = {n: os.path.join(candidates_dir, rel) for n, rel in manifest["candidates"].items()}
        test = read_sentences(os.path.join(heldout_dir, "test.txt"))
        return evaluate_ner_candidates(folders, test, threads=threads, repeats=repeats, max_length=int(manifest.get("max_length", 128)))
    if family == "recommender":
        from components.kfp._recommender import evaluate_recommender_candidates

        return evaluate_recommender_candidates(candidates_dir, heldout_dir, repeats=repeats)
    if family == "ocr":
        from components.kfp._ocr import evaluate_ocr_candidates

        return evaluate_ocr_candidates(candidates_dir, heldout_dir, repeats=repeats, threads=threads)
    raise ConfigError(f"family={family!r}: expected one of {sorted(FAMILIES)}")


def materialize(family: str, candidates_dir: str, chosen_name: str, out_dir: str) -> dict:
    """Write the chosen candidate's serving folder to ``out_dir``; returns metadata (framework, ...)."""
    manifest = _manifest(candidates_dir)
    framework = manifest.get("framework", {}).get(chosen_name, "unknown")
    if family == "recommender":
        from components.kfp._recommender import serving_folder

        return {"framework": framework, **serving_folder(candidates_dir, chosen_name, out_dir)}
    src = os.path.join(candidates_dir, manifest["candidates"][chosen_name])
    if os.path.isdir(src):
        shutil.copytree(src, out_dir, dirs_exist_ok=True)
    else:
        os.makedirs(out_dir, exist_ok=True)
        shutil.copy2(src, out_dir)
    return {"framework": framework, "candidate": chosen_name}

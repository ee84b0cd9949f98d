"""Beam's RunInference API, imported without the PyTorch import it does not need here.

Every aisle module takes ``RunInference``, ``ModelHandler`` and
``PredictionResult`` from here, not from ``apache_beam.ml.inference.base``.
"""

import sys


def _import_run_inference_without_torch() -> None:
    """Import ``apache_beam.ml.inference.base`` without the PyTorch import it does not need here.

    Beam 2.77's ``base`` imports its optional ``ModelManager`` at import time,
    and that module imports torch: 2.2 s of the 4.2 s it takes to import
    ``pipelines.enrich`` on this project's 2-core machine, paid again by every
    Beam worker process that imports an aisle module before it unpickles a
    RunInference step (the first stage of a job names aisle functions).
    ``base`` already treats a failed import as "no
    ModelManager" and imports it again when a pipeline asks for one
    (``RunInference`` with a model manager), so here ``torch`` is hidden for
    that one import and then put back: ``import torch`` works as before
    afterwards. ``resource``, which Beam imports in the same ``try`` for its
    memory metric, is restored.
    """
    if "apache_beam.ml.inference.base" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # makes ``import torch`` raise ImportError
    try:
        import apache_beam.ml.inference.base as base
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    if getattr(base, "resource", None) is None:
        import resource

        base.resource = resource


_import_run_inference_without_torch()

from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference  # noqa: E402

__all__ = ["KeyedModelHandler", "ModelHandler", "PredictionResult", "RunInference"]

"""The job modules import without PyTorch, and RunInference keeps what Beam imports beside it."""

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_jobs_import_without_torch_and_torch_still_imports():
    out = _run(
        """
        import sys
        import transforms.errors, pipelines.config
        assert "apache_beam.ml.inference.base" not in sys.modules  # light modules stay light
        import pipelines.enrich, pipelines.recommend, pipelines.ingest
        before = "torch" in sys.modules
        import apache_beam.ml.inference.base as base
        import torch
        from apache_beam.ml.inference.model_manager import ModelManager
        print(before, base.resource is not None, torch.tensor([2]).item(), ModelManager.__name__)
        """
    )
    assert out == "False True 2 ModelManager"


def test_an_earlier_beam_import_is_left_as_it_is():
    out = _run(
        """
        import sys
        import apache_beam.ml.inference.base as base
        import transforms.beam_ml
        print("torch" in sys.modules, base.ModelManager is not None)
        """
    )
    assert out == "True True"

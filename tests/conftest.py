"""Shared fixtures: the local Beam runner, paths to bundled and shared data."""

from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTDATA = ROOT / "tests" / "testdata"
SAMPLES = ROOT / "samples"
SHARED_DATA = pathlib.Path(os.environ.get("AISLE_SHARED_DATA", ROOT.parent / "shared" / "data"))

try:  # property tests: random examples locally; CI (.ci/run sets AISLE_HYPOTHESIS_PROFILE=ci) runs a fixed, reproducible set
    from hypothesis import HealthCheck, settings

    settings.register_profile("aisle", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("ci", parent=settings.get_profile("aisle"), derandomize=True, database=None)
    settings.load_profile(os.environ.get("AISLE_HYPOTHESIS_PROFILE", "aisle"))
except ImportError:  # the test extra is not installed: the property tests skip themselves
    pass


@pytest.fixture
def local_runner():
    """The in-process FnApiRunner (never the Prism download path)."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return FnApiRunner()


def shared_data(relative: str) -> pathlib.Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: this test reads a dataset that may not be copied into the repo")
    return path

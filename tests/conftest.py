"""Shared fixtures: the local Beam runner, paths to bundled and shared data."""

from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTDATA = ROOT / "tests" / "testdata"
SAMPLES = ROOT / "samples"
SHARED_DATA = pathlib.Path(os.environ.get("AISLE_SHARED_DATA", ROOT.parent / "shared" / "data"))


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

"""Beam's own ``FnApiRunner`` test suite, run on aisle's local runner.

:class:`pipelines.local_bundles.LocalFnApiRunner` changes how stages are
planned (:mod:`pipelines.local_stages`) and, with more than one worker, how
a stage's input is cut into bundles. Beam's tests of its runner (joins,
flattens, side inputs, timers and state, splittable DoFns, windowing,
metrics) then run on it unchanged: in-process, with two workers, with
bundles repeated, and with splits.
"""

import pytest
from apache_beam.runners.portability import fn_api_runner
from apache_beam.runners.portability.fn_api_runner import fn_runner_test as beam_tests

from pipelines.local_bundles import LocalFnApiRunner


@pytest.fixture(autouse=True)
def _aisle_runner(monkeypatch):
    # Beam's tests make their runner as fn_api_runner.FnApiRunner(...) when they build a pipeline
    monkeypatch.setattr(fn_api_runner, "FnApiRunner", LocalFnApiRunner)
    assert beam_tests.fn_api_runner.FnApiRunner is LocalFnApiRunner


# named as Beam's classes: Beam skips its tests of known runner issues by the test class's name


class FnApiRunnerTest(beam_tests.FnApiRunnerTest):  # in-process
    pass


class FnApiRunnerTestWithGrpcAndMultiWorkers(beam_tests.FnApiRunnerTestWithGrpcAndMultiWorkers):  # two workers
    pass


class FnApiRunnerTestWithBundleRepeatAndMultiWorkers(beam_tests.FnApiRunnerTestWithBundleRepeatAndMultiWorkers):
    pass


class FnApiRunnerSplitTest(beam_tests.FnApiRunnerSplitTest):
    pass


def test_the_suite_runs_on_aisles_runner():
    p = FnApiRunnerTestWithGrpcAndMultiWorkers().create_pipeline()
    assert isinstance(p.runner, LocalFnApiRunner)

"""Runner and pipeline options shared by every aisle job.

Beam 2.77's ``DirectRunner`` first tries the Prism runner, whose binary it
downloads from the internet. aisle's local default is the Python
``FnApiRunner`` named directly, so a local run never attempts a download;
any other runner (``--runner DataflowRunner --project ... --region ...``,
Flink, Spark) is chosen through the standard Beam pipeline options.
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

__all__ = ["LOCAL_RUNNERS", "is_local", "make_pipeline", "pipeline_options"]

# Runner names that mean "run here": all of them map to the FnApiRunner.
LOCAL_RUNNERS = frozenset({None, "", "DirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "local"})


def pipeline_options(
    beam_args: Sequence[str] = (),
    *,
    workers: int = 1,
    worker_mode: str = "processes",
    **overrides,
) -> PipelineOptions:
    """Pipeline options from Beam command-line flags.

    ``workers`` sets the local runner's parallelism: 1 runs in-process; more
    runs that many workers, as processes (``direct_running_mode=
    multi_processing``: for per-element Python work) or as threads of this
    process (``multi_threading``: enough when the work is in Arrow/numpy
    kernels that release the GIL, and it starts instantly). Remote runners
    ignore both.
    """
    if worker_mode not in ("processes", "threads"):
        raise ValueError(f"worker_mode must be 'processes' or 'threads', got {worker_mode!r}")
    options = PipelineOptions(list(beam_args), **overrides)
    if is_local(options):
        direct = options.view_as(DirectOptions)
        if workers > 1:
            direct.direct_running_mode = "multi_processing" if worker_mode == "processes" else "multi_threading"
            direct.direct_num_workers = workers
        else:
            direct.direct_running_mode = "in_memory"
            direct.direct_num_workers = 1
    return options


def is_local(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner
    return runner in LOCAL_RUNNERS


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Pipeline on the runner the options name; the FnApiRunner when local."""
    if is_local(options):
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)

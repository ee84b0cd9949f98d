"""Runner and pipeline options shared by every aisle job.

Beam 2.77's ``DirectRunner`` first tries the Prism runner, whose binary it
downloads from the internet. aisle's local default is the Python
``FnApiRunner`` named directly, so a local run never attempts a download;
any other runner (``--runner DataflowRunner --project ... --region ...``,
Flink, Spark) is chosen through the standard Beam pipeline options.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo
from google.protobuf import struct_pb2

from transforms.inference import usable_cores

__all__ = ["LOCAL_RUNNERS", "THREAD_ENV", "WORKER_PLUGIN", "is_local", "make_pipeline", "pipeline_options", "worker_threads"]

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
    ignore both. ``--direct_running_mode`` or ``--direct_num_workers`` given
    in ``beam_args`` win over ``workers``: ``--direct_running_mode=
    multi_processing --direct_num_workers=1`` runs one worker process.
    """
    if worker_mode not in ("processes", "threads"):
        raise ValueError(f"worker_mode must be 'processes' or 'threads', got {worker_mode!r}")
    options = PipelineOptions(list(beam_args), **overrides)
    explicit = any(arg.startswith(("--direct_running_mode", "--direct_num_workers")) for arg in beam_args)
    if is_local(options) and not explicit:
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


# The thread pools of numpy's BLAS, OpenMP and TensorFlow, each sized to every core of the machine by default.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


# glibc's malloc gives every thread that allocates an arena of its own (up to 8 per core). A worker or
# runner process has a dozen gRPC and data-plane threads, and memory freed in those arenas is seldom given
# back, so a long-lived process grows stage after stage (as it does from the bundle processors it keeps:
# pipelines/local_worker.py). Two arenas, measured on recommend at 10x
# with two workers (two runs each): the largest worker 1,092 / 1,073 -> 1,006 / 981 MiB, the runner
# 671 / 726 -> 513 / 525 MiB, no slower (54.7 / 53.7 s -> 47.7 / 52.1 s).
MALLOC_ARENAS = 2


@contextlib.contextmanager
def worker_threads(threads: int) -> Iterator[None]:
    """Processes started inside the block size their thread pools (:data:`THREAD_ENV`) to ``threads``
    and keep glibc to :data:`MALLOC_ARENAS` arenas (``MALLOC_ARENA_MAX``).

    Variables the user has set are left as they are; the environment is
    restored on exit.
    """
    wanted = {name: str(threads) for name in THREAD_ENV} | {"MALLOC_ARENA_MAX": str(MALLOC_ARENAS)}
    saved = {name: os.environ.get(name) for name in wanted}
    for name, value in saved.items():
        if value is None:
            os.environ[name] = wanted[name]
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


class _LocalPipeline(beam.Pipeline):
    """A Pipeline on the FnApiRunner whose worker processes share the cores instead of each taking them all.

    With ``direct_running_mode=multi_processing`` every worker process would
    start BLAS and TensorFlow thread pools as wide as the machine: N workers
    on C cores run N x C busy threads. Each worker gets ``C // N`` threads.
    Workers, in-process or not, drop a stage's bundle processor once the
    stage is done (:mod:`pipelines.local_worker`).
    """

    def run(self, test_runner_api="AUTO"):
        from pipelines.local_worker import release_idle_bundle_processors

        release_idle_bundle_processors()  # in-process and threaded workers; worker processes import WORKER_PLUGIN
        direct = self._options.view_as(DirectOptions)
        if direct.direct_running_mode != "multi_processing":
            return super().run(test_runner_api)
        cores = usable_cores()
        workers = direct.direct_num_workers or cores  # 0: one worker per core
        _limit_malloc_arenas()  # this process is the runner: it buffers every shuffle between stages
        with worker_threads(max(1, cores // max(1, workers))):
            return super().run(test_runner_api)


def _limit_malloc_arenas() -> bool:
    """Cap this process's glibc malloc arenas at :data:`MALLOC_ARENAS` (``mallopt(M_ARENA_MAX)``), as
    ``MALLOC_ARENA_MAX`` does for a process started with it; arenas made later obey it, for the rest of
    the process's life (a job's launcher is its local runner).

    Not where the user set ``MALLOC_ARENA_MAX``, nor where the C library is
    not glibc. Returns whether the cap was set.
    """
    from pipelines.local_worker import glibc

    libc = glibc()
    if "MALLOC_ARENA_MAX" in os.environ or libc is None:
        return False
    m_arena_max = -8  # glibc's malloc.h
    return bool(libc.mallopt(m_arena_max, MALLOC_ARENAS))


# Imported by each local worker process before its harness starts (Beam's ``beam_plugins``).
WORKER_PLUGIN = "pipelines.local_worker"


def _worker_provision_info() -> ExtendedProvisionInfo:
    """What the FnApiRunner tells its worker processes at start: the pipeline options they run with.

    Its default tells them none, so they run with Beam's defaults; these
    name :data:`WORKER_PLUGIN`, which the worker imports before it starts
    its harness.
    """
    options = struct_pb2.Struct()
    options.update({"beam_plugins": [WORKER_PLUGIN]})
    return ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=options))  # no artifacts to retrieve


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Pipeline on the runner the options name; the FnApiRunner when local."""
    if is_local(options):
        return _LocalPipeline(runner=FnApiRunner(provision_info=_worker_provision_info()), options=options)
    return beam.Pipeline(options=options)

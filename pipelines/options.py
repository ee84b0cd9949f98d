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
import signal
import threading
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo
from apache_beam.runners.portability.fn_api_runner.worker_handlers import SubprocessSdkWorkerHandler, WorkerHandler
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


def _fail_pending_instructions(conn, error: str) -> None:
    """Answer every instruction the runner awaits from the worker on ``conn``, and every later one, with ``error``.

    An answer that carries an error makes the runner stop reading the
    bundle's output and raise it (an aborted future would not: the runner
    polls the data channel while the future is unanswered).
    """
    from apache_beam.portability.api import beam_fn_api_pb2

    def answer(future):
        future.set(beam_fn_api_pb2.InstructionResponse(instruction_id=future.instruction_id, error=error))

    push = conn.push

    def push_to_lost_worker(req):
        future = push(req)
        if future is not None:  # None: the end-of-job marker
            answer(future)
        return future

    conn.push = push_to_lost_worker
    for future in list(conn._futures_by_id.values()):  # Beam keeps the unanswered instructions there
        answer(future)


# Seconds a local worker process has to end after the runner closed its connection (a normal end takes < 1 s).
WORKER_STOP_S = 10.0


def _processes_of_worker(worker_id: str) -> list[int]:
    """This process's descendants started for the local worker ``worker_id`` (its shell and its Python process).

    Beam's handler keeps no reference to the process; each one's environment
    holds ``WORKER_ID``. Linux's ``/proc`` only: elsewhere, none is found.
    """
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    children.setdefault(int(fh.read().rsplit(b")", 1)[1].split()[1]), []).append(int(name))
            except (OSError, IndexError, ValueError):
                continue
    found, stack, tag = [], list(children.get(os.getpid(), ())), f"WORKER_ID={worker_id}".encode()
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if tag in fh.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            continue
    return found


def _signal_of(message: str) -> str:
    """`` (SIGKILL)`` for a message that ends in a shell's exit status for a signal (128 + 9), or a negative one (-9)."""
    code = message.rsplit(" ", 1)[-1]
    if not code.lstrip("-").isdigit():
        return ""
    number = -int(code) if int(code) < 0 else int(code) - 128
    try:
        name = signal.Signals(number).name
    except ValueError:
        return ""
    return f" ({name}: killed, by a person or by the out-of-memory killer)" if name == "SIGKILL" else f" ({name})"


class _WatchedSubprocessWorkerHandler(SubprocessSdkWorkerHandler):
    """The local runner's handler of a worker process, which fails the job when the process ends early.

    Beam's own handler starts the process in a thread that only raises when
    the process exits with an error, while the runner waits on the worker's
    reply with no time limit: a killed worker (SIGKILL, the kernel's
    out-of-memory killer) or one that fails to start left the job waiting
    forever. Here the runner's pending and later instructions to that worker
    are answered with an error, so the job ends with an error naming the
    worker and its exit status, and its outputs stay uncommitted.
    """

    def start_worker(self):
        from apache_beam.runners.portability.local_job_service import SubprocessSdkWorker

        self.worker = SubprocessSdkWorker(self._worker_command_line, self.control_address, self.provision_info, self.worker_id)
        self.worker_thread = threading.Thread(name="run_worker", target=self._run_worker, daemon=True)
        self.worker_thread.start()

    def stop_worker(self):
        """Wait for the worker process to end once the runner has closed its connection; kill it after
        :data:`WORKER_STOP_S` (a worker left in a bundle whose job failed would never end)."""
        self.worker_thread.join(WORKER_STOP_S)
        if self.worker_thread.is_alive():
            for pid in _processes_of_worker(self.worker_id):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.worker_thread.join()

    def _run_worker(self):
        try:
            self.worker.run()
        except RuntimeError as exc:  # "Worker subprocess exited with return code N"
            _fail_pending_instructions(self.control_conn, f"local worker process {self.worker_id} ended while the job ran: {exc}"
                                       f"{_signal_of(str(exc))}")


def _watch_worker_processes() -> None:
    """Run local worker processes under :class:`_WatchedSubprocessWorkerHandler` (Beam's registry of handlers)."""
    WorkerHandler.register_environment(python_urns.SUBPROCESS_SDK, bytes)(_WatchedSubprocessWorkerHandler)


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Pipeline on the runner the options name; the FnApiRunner when local."""
    if is_local(options):
        _watch_worker_processes()
        return _LocalPipeline(runner=FnApiRunner(provision_info=_worker_provision_info()), options=options)
    return beam.Pipeline(options=options)

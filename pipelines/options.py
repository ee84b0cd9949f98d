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
import weakref
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo
from apache_beam.runners.portability.fn_api_runner.worker_handlers import SubprocessSdkWorkerHandler, WorkerHandler
from google.protobuf import struct_pb2

from pipelines.local_bundles import LocalFnApiRunner
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


def _worker_env(threads: int) -> dict[str, str]:
    """The variables :func:`worker_threads` sets, less those the user has set."""
    wanted = {name: str(threads) for name in THREAD_ENV} | {"MALLOC_ARENA_MAX": str(MALLOC_ARENAS)}
    return {name: value for name, value in wanted.items() if name not in os.environ}


@contextlib.contextmanager
def worker_threads(threads: int) -> Iterator[None]:
    """Processes started inside the block size their thread pools (:data:`THREAD_ENV`) to ``threads``
    and keep glibc to :data:`MALLOC_ARENAS` arenas (``MALLOC_ARENA_MAX``).

    Variables the user has set are left as they are; the environment is
    restored on exit.
    """
    wanted = _worker_env(threads)  # only variables the user has not set
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name in wanted:
            os.environ.pop(name, None)


class _LocalPipeline(beam.Pipeline):
    """A Pipeline on the FnApiRunner whose worker processes share the cores instead of each taking them all.

    With ``direct_running_mode=multi_processing`` every worker process would
    start BLAS and TensorFlow thread pools as wide as the machine: N workers
    on C cores run N x C busy threads. Each worker gets ``C // N`` threads.
    Workers, in-process or not, drop a stage's bundle processor once the
    stage is done, end a bundle without waiting out a long sleep of its
    state sampler, and collect garbage less often
    (:mod:`pipelines.local_worker`). Worker processes are forked from a
    server started with the pipeline, which imports Beam's SDK worker while
    the graph is built (:mod:`pipelines.worker_pool`).
    """

    def __init__(self, *args, preload: Sequence[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self._fork_server = None
        processes = self._worker_processes()
        if processes is not None:
            # started now, so that it imports Beam while the job's graph is built (pipelines/worker_pool.py)
            from pipelines.worker_pool import ForkServer

            workers, threads = processes
            self._fork_server = ForkServer.start(workers, _worker_env(threads), preload=preload)
            if self._fork_server is not None:
                weakref.finalize(self, self._fork_server.close)  # a pipeline that is never run

    def _worker_processes(self) -> tuple[int, int] | None:
        """``(worker processes, threads each)`` when the local runner will start worker processes, else None."""
        direct = self._options.view_as(DirectOptions)
        if direct.direct_running_mode != "multi_processing":
            return None
        cores = usable_cores()
        workers = direct.direct_num_workers or cores  # 0: one worker per core
        return workers, max(1, cores // max(1, workers))

    def run(self, test_runner_api="AUTO"):
        from pipelines.local_worker import collecting_less, prompt_state_sampling, release_idle_bundle_processors
        from pipelines.worker_pool import serving

        release_idle_bundle_processors()  # in-process and threaded workers; worker processes import WORKER_PLUGIN
        prompt_state_sampling()
        processes = self._worker_processes()
        with collecting_less():  # the graph built and the modules imported live through the run
            if processes is None:
                return super().run(test_runner_api)
            _limit_malloc_arenas()  # this process is the runner: it buffers every shuffle between stages
            mark = _LostWorkers.mark()
            try:
                with worker_threads(processes[1]), serving(self._fork_server):
                    return super().run(test_runner_api)
            except Exception as exc:
                named = _named_lost_worker(exc, mark)
                if named is None:
                    raise
                raise named from exc


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


class _ForkedSdkWorker:
    """Beam's ``SubprocessSdkWorker``, run by a process forked from the job's fork server when it has one.

    The worker gets the environment Beam would start it with (the runner's
    addresses, the pipeline options, its id) and a logging service of its
    own, as Beam's does; it fails the same way, with
    ``RuntimeError("Worker subprocess exited with return code N")`` (``-N``:
    killed by signal N). Without a server, or where the server cannot fork
    one, Beam's own start is used: a shell that runs the SDK worker.
    """

    def __init__(self, beam_worker, server, control_address: str, provision_info, worker_id: str | None):
        self._beam_worker, self._server = beam_worker, server
        self._control_address, self._provision_info, self._worker_id = control_address, provision_info, worker_id
        self._pid: int | None = None

    def pids(self) -> list[int]:
        """The forked worker's process id, once it has one (empty for a worker Beam started)."""
        return [self._pid] if self._pid else []

    def run(self) -> None:
        if self._server is None:
            return self._beam_worker.run()
        from apache_beam.portability.api import beam_fn_api_pb2_grpc, endpoints_pb2
        from apache_beam.runners.portability.local_job_service import BeamFnLoggingServicer
        from apache_beam.utils import thread_pool_executor
        from google.protobuf import json_format, text_format

        from pipelines.worker_pool import wait_exit_code

        import grpc

        logging_server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                                     options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)])
        logging_port = logging_server.add_insecure_port("[::]:0")
        logging_server.start()
        beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(BeamFnLoggingServicer(), logging_server)
        try:
            env = dict(
                os.environ,
                CONTROL_API_SERVICE_DESCRIPTOR=text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=self._control_address)),
                LOGGING_API_SERVICE_DESCRIPTOR=text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=f"localhost:{logging_port}")),
                PIPELINE_OPTIONS=json_format.MessageToJson(self._provision_info.provision_info.pipeline_options),
            )
            if self._worker_id:
                env["WORKER_ID"] = self._worker_id
            self._pid = self._server.spawn(env)
            if self._pid is None:  # the server has ended or failed: start the worker as Beam does
                logging_server.stop(0)
                return self._beam_worker.run()
            code = wait_exit_code(self._pid)
            if code:
                raise RuntimeError(f"Worker subprocess exited with return code {code}")
        finally:
            logging_server.stop(0)


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

        from pipelines.worker_pool import active_server

        beam_worker = SubprocessSdkWorker(self._worker_command_line, self.control_address, self.provision_info, self.worker_id)
        self.worker = _ForkedSdkWorker(beam_worker, active_server(), self.control_address, self.provision_info, self.worker_id)
        self.worker_thread = threading.Thread(name="run_worker", target=self._run_worker, daemon=True)
        self.worker_thread.start()

    def stop_worker(self):
        """Wait for the worker process to end once the runner has closed its connection; kill it after
        :data:`WORKER_STOP_S` (a worker left in a bundle whose job failed would never end)."""
        self.worker_thread.join(WORKER_STOP_S)
        if self.worker_thread.is_alive():
            for pid in self.worker.pids() or _processes_of_worker(self.worker_id):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.worker_thread.join()

    def _run_worker(self):
        try:
            self.worker.run()
        except RuntimeError as exc:  # "Worker subprocess exited with return code N"
            message = f"local worker process {self.worker_id} ended while the job ran: {exc}{_signal_of(str(exc))}"
            with _LostWorkers.lock:
                _LostWorkers.messages.append(message)
            _fail_pending_instructions(self.control_conn, message)


class _LostWorkers:
    """What the handlers said of the local worker processes that ended while their job ran, in order."""

    lock = threading.Lock()
    messages: list[str] = []

    @classmethod
    def mark(cls) -> int:
        with cls.lock:
            return len(cls.messages)

    @classmethod
    def since(cls, mark: int) -> list[str]:
        with cls.lock:
            return cls.messages[mark:]


def _named_lost_worker(exc: Exception, mark: int) -> Exception | None:
    """The error to raise instead of ``exc`` when ``exc`` is the runner losing its connection to a worker
    process that died (a data or control stream that closed), and a handler has said which worker it was.

    Which of the two the runner sees first is a race: a worker killed while
    it sends a bundle's output closes the data stream as it dies, and the
    runner reports the closed stream, not the worker.
    """
    import grpc

    lost = _LostWorkers.since(mark)
    symptom = isinstance(exc, grpc.RpcError) or "Channel closed prematurely" in str(exc)
    if lost and symptom and not any(message in str(exc) for message in lost):
        return RuntimeError(lost[0])
    return None


def _watch_worker_processes() -> None:
    """Run local worker processes under :class:`_WatchedSubprocessWorkerHandler` (Beam's registry of handlers)."""
    WorkerHandler.register_environment(python_urns.SUBPROCESS_SDK, bytes)(_WatchedSubprocessWorkerHandler)


def make_pipeline(options: PipelineOptions, *, preload: Sequence[str] = ()) -> beam.Pipeline:
    """A Pipeline on the runner the options name; the FnApiRunner when local.

    ``preload``: modules that local worker processes import before they are
    forked (the job's own module, whose functions its DoFns unpickle), so
    that they have them when the first stage runs (:mod:`pipelines.worker_pool`).
    """
    if is_local(options):
        _watch_worker_processes()
        return _LocalPipeline(runner=LocalFnApiRunner(provision_info=_worker_provision_info()), options=options, preload=preload)
    return beam.Pipeline(options=options)

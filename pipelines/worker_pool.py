"""A fork server for the local runner's worker processes: Beam's SDK worker imported once, while the job is built.

A local worker process spends 1.3-1.8 s importing Beam before it can
connect to the runner, and the FnApiRunner starts its workers only when
the first stage runs, after the launcher has built and translated the job
graph (about 2.5 s for ``aisle recommend``, on one core while the other
waits). So the launcher of a job with worker processes starts one server
process as soon as the pipeline is made (:class:`ForkServer`); the server
imports Beam's SDK worker and :mod:`pipelines.local_worker` while the graph
is built, then forks one process per worker the runner asks for, and each
starts its harness at once.

Each worker is forked by a child of the server that exits at once, so the
worker becomes the launcher's child (the launcher is the subreaper of its
descendants while the server runs: Linux's ``PR_SET_CHILD_SUBREAPER``),
and the launcher waits for it and reads its exit status as for a worker
it had started itself. The server ends once it has forked the job's
workers, or when the launcher closes its pipe. Where that is not available (not Linux, no glibc), or the
server has failed, the workers start as Beam starts them.

A forked worker is named ``aisle-worker`` (``/proc/<pid>/comm``, ``ps``):
its command line is the server's.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

__all__ = ["ForkServer", "SERVER_ENV", "WORKER_NAME", "active_server", "serving"]

# Set in the server's environment (its workers take the runner's instead), to tell it apart from the launcher.
SERVER_ENV = "AISLE_WORKER_FORK_SERVER"
# The name (comm) a forked worker process takes.
WORKER_NAME = "aisle-worker"
# Seconds a request for a worker waits for the server (which imports Beam in 1.3-1.8 s on 2 cores).
SPAWN_TIMEOUT_S = 120.0

_PR_SET_NAME = 15
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value) -> bool:
    from pipelines.local_worker import glibc

    libc = glibc()
    if libc is None or not sys.platform.startswith("linux") or not hasattr(libc, "prctl"):
        return False
    return libc.prctl(option, value, 0, 0, 0) == 0


_subreaper_lock = threading.Lock()
_subreaper_users = 0


def _hold_subreaper() -> bool:
    """Make this process the subreaper of its descendants (counted: released by :func:`_release_subreaper`)."""
    global _subreaper_users
    with _subreaper_lock:
        if _subreaper_users == 0 and not _prctl(_PR_SET_CHILD_SUBREAPER, 1):
            return False
        _subreaper_users += 1
        return True


def _release_subreaper() -> None:
    global _subreaper_users
    with _subreaper_lock:
        _subreaper_users -= 1
        if _subreaper_users == 0:
            _prctl(_PR_SET_CHILD_SUBREAPER, 0)


class ForkServer:
    """Launcher side: a server process that forks up to ``workers`` SDK worker processes on request.

    ``env`` is added to the server's environment when it starts (the thread
    pool sizes and ``MALLOC_ARENA_MAX`` of the workers: they are read when a
    library loads, which is in the server). The server imports the modules
    named in ``preload`` after Beam's SDK worker (one it cannot import is
    left to the workers, where the error shows). :meth:`spawn` asks for a worker
    and returns its process id; once ``workers`` have been asked for, or
    :meth:`close` is called, the server ends.
    The workers are this process's children (see the module's docstring).
    Use :meth:`start`, which returns None where no server can be used.
    """

    def __init__(self, workers: int, env: Mapping[str, str], preload: Sequence[str] = ()):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        from pipelines.local_worker import FORK_SERVER_MAIN  # this module, as the workers' plugin knows it

        req_r, req_w = os.pipe()
        pid_r, pid_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", FORK_SERVER_MAIN, str(req_r), str(pid_w), *preload],
                pass_fds=(req_r, pid_w),
                env={**os.environ, **env, SERVER_ENV: "1"},
            )
        except BaseException:
            os.close(req_w)
            os.close(pid_r)
            raise
        finally:  # the server's ends of the pipes
            os.close(req_r)
            os.close(pid_w)
        self._requests = os.fdopen(req_w, "w")
        self._pids = os.fdopen(pid_r, "r")
        self._left = workers
        self._lock = threading.Lock()
        self._released = threading.Event()

    @classmethod
    def start(cls, workers: int, env: Mapping[str, str], preload: Sequence[str] = ()) -> "ForkServer | None":
        """A started server, or None where forked workers could not be waited for (see the module's docstring)."""
        if not hasattr(os, "fork") or not _hold_subreaper():
            return None
        try:
            return cls(workers, env, preload)
        except OSError:
            _release_subreaper()
            return None

    def spawn(self, env: Mapping[str, str]) -> int | None:
        """Fork a worker that runs with environment ``env``; its process id, or None if the server cannot.

        Blocks until the server has imported Beam (started with the pipeline,
        it usually has by the time the first stage runs), for at most
        :data:`SPAWN_TIMEOUT_S`: a server that does not answer by then is
        killed.
        """
        with self._lock:
            if self._released.is_set() or self._left <= 0:
                return None
            self._left -= 1
            line = ""
            try:
                self._requests.write(json.dumps(dict(env)) + "\n")
                self._requests.flush()
                if select.select([self._pids], [], [], SPAWN_TIMEOUT_S)[0]:
                    line = self._pids.readline()
                else:
                    self._proc.kill()
            except (OSError, ValueError):  # the server has ended: a broken pipe, or a closed file
                pass
            if not line.strip().isdigit() or self._left == 0:
                self._release()
            return int(line) if line.strip().isdigit() else None

    def _release(self) -> None:
        """End the server (it forks no more workers) and wait for it to exit; called under the lock."""
        if self._released.is_set():
            return
        for stream in (self._requests, self._pids):
            with contextlib.suppress(OSError):
                stream.close()
        self._proc.wait()
        _release_subreaper()  # the workers it forked stay this process's children
        self._released.set()

    def close(self) -> None:
        """End the server if it still runs; the workers it forked are not touched."""
        with self._lock:
            self._release()

    @property
    def ended(self) -> bool:
        """Whether the server has ended (it forks no more workers)."""
        return self._released.is_set()


class _Active:
    server: ForkServer | None = None
    lock = threading.Lock()


def active_server() -> ForkServer | None:
    """The fork server of the pipeline this process runs now (:func:`serving`), if any."""
    return _Active.server


@contextlib.contextmanager
def serving(server: ForkServer | None):
    """Within the block, the local runner's worker handlers take their workers from ``server``.

    On exit the server is closed (the workers it forked are not touched).
    """
    if server is None:
        yield
        return
    with _Active.lock:
        taken = _Active.server is None
        if taken:
            _Active.server = server
    try:
        yield
    finally:
        if taken:
            with _Active.lock:
                _Active.server = None
        server.close()


def wait_exit_code(pid: int) -> int:
    """Wait for the child ``pid``; its exit code as :class:`subprocess.Popen` gives it (``-N``: killed by signal N)."""
    _, status = os.waitpid(pid, 0)  # retried by Python when a signal interrupts it
    return os.waitstatus_to_exitcode(status)


# --------------------------------------------------------------------------- server


def _run_worker(sdk_worker_main, env: Mapping[str, str]) -> None:
    """In a forked child: run Beam's SDK worker with ``env`` as the environment; never returns."""
    import atexit
    import traceback

    code = 1
    try:
        os.environ.clear()
        os.environ.update(env)
        _prctl(_PR_SET_NAME, WORKER_NAME.encode())
        sys.argv = [sdk_worker_main.__file__]
        sdk_worker_main.main(sys.argv)  # a harness that ends normally exits at once (pipelines.local_worker)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def _fork_worker(requests, pids, sdk_worker_main, env: Mapping[str, str]) -> int:
    """Fork a worker that the launcher can wait for; its process id.

    The worker is forked by a short-lived child of the server, which exits
    at once: the worker, orphaned, becomes the child of the launcher (the
    subreaper). Its id is returned only once that child has been waited
    for, so by then the launcher is the worker's parent.
    """
    read_fd, write_fd = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(read_fd)
            requests.close()
            pid = os.fork()
            if pid == 0:
                os.close(write_fd)
                pids.close()
                _run_worker(sdk_worker_main, env)
            os.write(write_fd, f"{pid}\n".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        line = fh.read()
    os.waitpid(middle, 0)
    return int(line)


def main(argv: list[str]) -> int:
    """Server: import the SDK worker and the modules named after the two pipe descriptors in ``argv``, then
    fork a worker for each environment read, one JSON line each."""
    requests = os.fdopen(int(argv[1]), "r")
    pids = os.fdopen(int(argv[2]), "w")
    import apache_beam.runners.worker.sdk_worker_main as sdk_worker_main

    import pipelines.local_worker  # the workers' plugin, applied here once for all of them

    for name in argv[3:]:  # the job's modules, which its DoFns' functions live in
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001  the worker that needs it imports it again, and reports the error
            pass
    pipelines.local_worker.collect_less()  # what is imported now lives as long as the workers: none of it is collected
    for line in requests:
        pids.write(f"{_fork_worker(requests, pids, sdk_worker_main, json.loads(line))}\n")
        pids.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

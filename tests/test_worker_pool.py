"""The local runner's fork server: workers forked from a process that imported Beam while the job was built."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

def _can_fork_workers() -> bool:
    from pipelines.local_worker import glibc

    return sys.platform.startswith("linux") and glibc() is not None


pytestmark = pytest.mark.skipif(not _can_fork_workers(), reason="forked workers need Linux's child subreaper, set through glibc")

PROBE_JOB = """
import json, os, sys
import apache_beam as beam
from pipelines.options import make_pipeline, pipeline_options

def probe(_):
    with open("/proc/self/comm") as fh:
        comm = fh.read().strip()
    return json.dumps([os.getpid(), os.getppid(), comm, os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("WORKER_ID"),
                       "tabnanny" in sys.modules])

with make_pipeline(pipeline_options([], workers=2), preload=["tabnanny", "no_such_module_here"]) as p:
    p | beam.Create(range(16)) | beam.Reshuffle() | beam.Map(probe) | beam.io.WriteToText(sys.argv[1], shard_name_template="")
print(os.getpid())
"""


def _clean_env(**extra) -> dict:
    from pipelines.options import THREAD_ENV

    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV and k != "MALLOC_ARENA_MAX"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_workers_are_forked_children_of_the_launcher_with_their_thread_settings(tmp_path):
    from transforms.inference import usable_cores

    out = tmp_path / "probe.txt"
    job = subprocess.run([sys.executable, "-c", PROBE_JOB, str(out)], cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=180)
    assert job.returncode == 0, job.stderr[-3000:]
    launcher = int(job.stdout.split()[-1])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 16
    pids, ppids, comms, threads, worker_ids, preloaded = zip(*rows)
    assert set(comms) == {"aisle-worker"}  # forked by the server, not started through a shell
    assert set(ppids) == {launcher}  # the launcher's own children, so it can wait for them
    assert 1 <= len(set(pids)) <= 2
    assert set(threads) == {str(max(1, usable_cores() // 2))}
    assert all(worker_ids)  # the environment the runner gave each worker
    assert all(preloaded)  # imported by the server before it forked them; a module it cannot import is skipped


def test_fork_server_reports_exit_codes_and_forks_no_more_than_asked():
    from pipelines.worker_pool import ForkServer, wait_exit_code

    server = ForkServer.start(2, {})
    assert server is not None
    try:
        failing = server.spawn(dict(os.environ, PYTHONPATH=str(ROOT)))  # no runner address: the harness cannot start
        assert wait_exit_code(failing) == 1  # a child of this process: its status is read here
        waiting = server.spawn(dict(os.environ, PYTHONPATH=str(ROOT), CONTROL_API_SERVICE_DESCRIPTOR='url: "localhost:1"'))
        time.sleep(0.3)
        os.kill(waiting, signal.SIGKILL)
        assert wait_exit_code(waiting) == -signal.SIGKILL
        assert server.spawn(dict(os.environ)) is None  # two were asked for: the server has ended
        assert server.ended
    finally:
        server.close()


TINY_JOB = """
import apache_beam as beam
from pipelines.options import make_pipeline, pipeline_options
with make_pipeline(pipeline_options([], workers=2)) as p:
    p | beam.Create(range(10)) | beam.Map(lambda x: x * 2)
"""


def test_a_fork_server_that_cannot_start_leaves_workers_to_start_as_beam_starts_them(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import os\nif os.environ.get('AISLE_WORKER_FORK_SERVER'):\n    raise SystemExit(3)\n")
    env = _clean_env(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    job = subprocess.run([sys.executable, "-c", TINY_JOB], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert job.returncode == 0, job.stderr[-3000:]

"""Run a command in a fresh process and sample the RSS of its whole process tree, and of each process in it."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _tree_rss(pid: int) -> dict[int, int]:
    """RSS bytes of ``pid`` and of every process under it."""
    tree, rss, stack = _children(), {}, [pid]
    while stack:
        p = stack.pop()
        stack.extend(tree.get(p, []))
        try:
            with open(f"/proc/{p}/statm") as f:
                rss[p] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return rss


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _steal_secs() -> float | None:
    """Seconds of CPU time the hypervisor has taken from this machine's CPUs so far (``steal`` in ``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _is_worker(pid: int) -> bool:
    """A Beam SDK worker process: forked by a job's fork server (``pipelines/worker_pool.py``), or started through a shell."""
    from pipelines.worker_pool import WORKER_NAME

    try:
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == WORKER_NAME:
                return True
    except OSError:
        return False
    cmdline = _cmdline(pid)
    return "sdk_worker_main" in cmdline and not cmdline.startswith("/bin/sh")


def run_measured(argv: list[str], *, interval_secs: float = 0.2, env: dict | None = None) -> dict:
    """Wall seconds, peak RSS (MiB) and the last stdout line parsed as JSON.

    ``peak_rss_mib``: the peak of the whole tree's summed RSS;
    ``peak_rss_mib_main``: the peak of the command's own process (for a
    local Beam job: the launcher and runner, which holds the runner's
    buffers between steps); ``peak_rss_mib_worker``: the largest peak of any
    Beam SDK worker process (0 when the job ran in one process).
    """
    t0, steal0, cpu0 = time.perf_counter(), _steal_secs(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak, per_pid, workers = 0, {}, set()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            rss = _tree_rss(proc.pid)
            peak = max(peak, sum(rss.values()))
            for p, b in rss.items():
                if p not in workers and _is_worker(p):
                    workers.add(p)
                per_pid[p] = max(per_pid.get(p, 0), b)
            done.wait(interval_secs)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    done.set()
    t.join()
    wall = time.perf_counter() - t0
    cpu1, steal1 = resource.getrusage(resource.RUSAGE_CHILDREN), _steal_secs()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}):\n{err[-3000:]}")
    last = out.strip().splitlines()[-1] if out.strip() else "{}"
    return {
        "process_secs": wall,
        "peak_rss_mib": peak / 2**20,
        "peak_rss_mib_main": per_pid.get(proc.pid, 0) / 2**20,
        "peak_rss_mib_worker": max((per_pid[p] for p in workers), default=0) / 2**20,
        # CPU seconds of the command and every process under it that ended with it, and of the machine
        # taken by the hypervisor meanwhile (a run with much steal ran on a slower machine than the others)
        "cpu_secs": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "steal_secs": None if steal0 is None or steal1 is None else steal1 - steal0,
        "result": json.loads(last),
    }

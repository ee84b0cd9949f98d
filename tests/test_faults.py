"""Faults: a job killed mid-run leaves no partial output, and a re-run gives the undisturbed result."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

from tests.conftest import ROOT, SAMPLES

NOW = "2026-01-01T00:00:00+00:00"
SCRIPT = """
import datetime as dt, sys
from pipelines.ingest import run_ingest
run_ingest([sys.argv[1]], sys.argv[2], format="online-retail", workers=2, worker_mode="processes",
           chunk_mb=0.25, partitions=3, now=dt.datetime.fromisoformat(sys.argv[3]))
"""


def digest(folder: pathlib.Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.parquet")) if not any(part.startswith("_") for part in p.relative_to(folder).parts)}


def run_job(src, out, env):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(src), str(out), NOW], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = pathlib.Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(name))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _comm(pid: int) -> bytes:
    try:
        return pathlib.Path(f"/proc/{pid}/comm").read_bytes().strip()
    except OSError:
        return b""


def sdk_workers(pid: int) -> list[int]:
    """The Python SDK worker processes under ``pid``: forked by the job's fork server (named ``aisle-worker``),
    or started by Beam through ``/bin/sh -c`` where there is none."""
    from pipelines.worker_pool import WORKER_NAME

    found, stack = [], children(pid)
    while stack:
        child = stack.pop()
        argv = _cmdline(child).split(b"\0")
        if _comm(child) == WORKER_NAME.encode() or (b"sdk_worker_main" in b" ".join(argv) and not argv[0].endswith(b"sh")):
            found.append(child)
        stack.extend(children(child))
    return sorted(found)


def kill_a_worker_mid_run(argv: list[str], ready=lambda: True) -> tuple[int, str]:
    """Start a local job with two worker processes, SIGKILL one of them mid-run; the job's exit status and stderr.

    The local runner starts its two SDK worker processes when the first stage
    runs and keeps them to the end of the job; outputs are committed only
    after the last stage. Killing a worker as soon as both exist is therefore
    always mid-run (waiting for staged output files instead could land after
    the last bundle, and the job would complete). ``ready`` delays the kill
    until it returns true (e.g. once intermediate files exist). The job must
    end soon after: a job that waits on its dead worker fails the test.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryFile() as err:
        job = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        killed = None
        deadline = time.time() + 180
        while time.time() < deadline and job.poll() is None:
            workers = sdk_workers(job.pid)
            if len(workers) >= 2 and ready():
                time.sleep(0.2)
                killed = workers[-1]
                os.kill(killed, signal.SIGKILL)  # a worker dies mid-run
                break
            time.sleep(0.02)
        assert killed, "the job finished before a worker could be killed"
        try:
            job.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
            raise AssertionError("the job kept waiting on its dead worker") from None
        err.seek(0)
        return job.returncode, err.read().decode("utf-8", "replace")


# the worker's shell reports SIGKILL as 128 + 9; a worker started without a shell would report -9
LOST_WORKER = re.compile(r"ended while the job ran: Worker subprocess exited with return code (137|-9) \(SIGKILL")


def test_killed_worker_then_rerun_equals_undisturbed_run(tmp_path):
    src = tmp_path / "big.csv"
    lines = SAMPLES.joinpath("retail", "online_retail_sample.csv").read_bytes().splitlines(keepends=True)
    with open(src, "wb") as f:  # ten distinct copies: ~3.5 MB, 14 chunks
        f.write(lines[0])
        for k in range(10):
            for line in lines[1:]:
                inv, rest = line.split(b",", 1)
                f.write(str(k).encode() + inv.lstrip(b"C") + b"," + rest if not inv.startswith(b"C") else b"C" + str(k).encode() + inv[1:] + b"," + rest)
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    clean = tmp_path / "clean"
    assert run_job(src, clean, env).wait(timeout=300) == 0
    expected = digest(clean)
    assert expected

    out = tmp_path / "out"
    # killed once the shuffle has written intermediate files; the kill may still miss the remaining bundles
    # (the job then completes), so what is checked is that a reader sees no output or a complete one
    kill_a_worker_mid_run([sys.executable, "-c", SCRIPT, str(src), str(out), NOW],
                          ready=lambda: bool(list(out.glob("_staging-*/_shuffle/*/*.parquet"))))
    # nothing partial is visible: either no output folders, or complete ones
    visible = [p for p in out.iterdir() if not p.name.startswith("_")] if out.exists() else []
    assert all(p.name == "summary.json" or p.is_dir() for p in visible)
    assert not (out / "events").exists() or digest(out) == expected

    assert run_job(src, out, env).wait(timeout=300) == 0
    assert digest(out) == expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["conservation"]["ok"]


RECOMMEND_SCRIPT = """
import sys
from pipelines.recommend import run
run(events=sys.argv[1] + "/events", catalog=sys.argv[1] + "/products", out_dir=sys.argv[2], model_dir=sys.argv[3],
    workers=2, k=5, echo=lambda *_: None)
"""


def job_outputs(folder: pathlib.Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.suffix in (".parquet", ".jsonl")
            and not any(part.startswith("_") for part in p.relative_to(folder).parts)}


def test_recommend_killed_worker_keeps_previous_output_and_rerun_equals_it(tmp_path):
    """A recommend run whose worker process dies leaves the previous output as it was; a re-run rewrites the same bytes."""
    import pytest

    pytest.importorskip("tensorflow")
    import datetime as dt

    from components.recommend_data import read_event_baskets
    from components.recommend_model import TrainConfig, TrainedModel, build_model, export_model
    from pipelines.ingest import run_ingest
    from pipelines.recommend import run
    from transforms.recommend_vocab import ItemVocab

    data = tmp_path / "ingest"
    run_ingest([str(SAMPLES / "retail" / "online_retail_sample.csv")], str(data), format="online-retail", workers=1,
               now=dt.datetime.fromisoformat(NOW))
    vocab = ItemVocab.build([b.items for b in read_event_baskets(str(data / "events"))])
    cfg = TrainConfig(dim=8, max_query_items=8, epochs=1)
    export_model(TrainedModel(build_model(len(vocab), dim=8, max_query_items=8), vocab, cfg), str(tmp_path / "model"))

    out = tmp_path / "out"
    run(events=str(data / "events"), catalog=str(data / "products"), out_dir=str(out), model_dir=str(tmp_path / "model"),
        k=5, echo=lambda *_: None)
    previous = job_outputs(out)
    assert len(previous) == 7  # 3 outputs x (Parquet + JSON lines) + dead letters
    folders = {name: (out / name).stat().st_ino for name in ("similar_items", "frequently_bought_together", "recommended_for_you")}

    returncode, stderr = kill_a_worker_mid_run([sys.executable, "-c", RECOMMEND_SCRIPT, str(data), str(out), str(tmp_path / "model")])
    assert returncode != 0, "the killed run must not have completed"
    assert LOST_WORKER.search(stderr), stderr[-2000:]  # the job says which worker it lost, and how
    assert {name: (out / name).stat().st_ino for name in folders} == folders, "a killed run must not replace an output folder"
    assert job_outputs(out) == previous, "a killed run must leave the previous output untouched"

    run(events=str(data / "events"), catalog=str(data / "products"), out_dir=str(out), model_dir=str(tmp_path / "model"),
        k=5, echo=lambda *_: None)
    assert all((out / name).stat().st_ino != ino for name, ino in folders.items()), "the re-run commits new folders"
    assert job_outputs(out) == previous  # the killed run's _staging-* folder stays, ignored by readers


ENRICH_SCRIPT = """
import sys
from pipelines.enrich import run_enrich
run_enrich(sys.argv[1], sys.argv[2], threads=1, batch_size=2, workers=2)
"""


def test_enrich_killed_worker_keeps_previous_output_and_rerun_equals_it(tmp_path):
    """An enrich run whose worker process dies leaves the previous output as it was; a re-run rewrites the same bytes."""
    from pipelines.enrich import OUTPUTS, run_enrich

    catalog = str(SAMPLES / "catalog_images.jsonl")
    out = tmp_path / "out"
    run_enrich(catalog, str(out), threads=1, batch_size=2)
    previous = job_outputs(out)
    assert {k.split("/")[0] for k in previous} == set(OUTPUTS)
    folders = {name: (out / name).stat().st_ino for name in OUTPUTS}

    returncode, stderr = kill_a_worker_mid_run([sys.executable, "-c", ENRICH_SCRIPT, catalog, str(out)])
    assert returncode != 0, "the killed run must not have completed"
    assert LOST_WORKER.search(stderr), stderr[-2000:]
    assert {name: (out / name).stat().st_ino for name in OUTPUTS} == folders, "a killed run must not replace an output folder"
    assert job_outputs(out) == previous, "a killed run must leave the previous output untouched"

    run_enrich(catalog, str(out), threads=1, batch_size=2, workers=2)
    assert all((out / name).stat().st_ino != ino for name, ino in folders.items()), "the re-run commits new folders"
    assert job_outputs(out) == previous  # two workers write what one wrote


TINY_JOB = """
import apache_beam as beam
from pipelines.options import make_pipeline, pipeline_options
with make_pipeline(pipeline_options([], workers=2)) as p:
    p | beam.Create(range(10)) | beam.Map(lambda x: x * 2)
"""


def test_a_worker_that_cannot_start_fails_the_job(tmp_path):
    """A local worker process that exits before it connects ends the job with an error, instead of a wait with no end."""
    # workers only: the fork server too, so that the workers start through Beam's shell and fail there
    (tmp_path / "sitecustomize.py").write_text(
        "import os\nif os.environ.get('WORKER_ID') or os.environ.get('AISLE_WORKER_FORK_SERVER'):\n    raise SystemExit(3)\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    try:
        job = subprocess.run([sys.executable, "-c", TINY_JOB], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise AssertionError("the job kept waiting on a worker that never started") from None
    assert job.returncode != 0
    assert "ended while the job ran: Worker subprocess exited with return code" in job.stderr, job.stderr[-2000:]
    (tmp_path / "sitecustomize.py").unlink()  # the same job with workers that start
    assert subprocess.run([sys.executable, "-c", TINY_JOB], cwd=ROOT, env=env, timeout=120).returncode == 0

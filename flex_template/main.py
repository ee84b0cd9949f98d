"""Entry point of the Dataflow flex template launcher: run the aisle job a template names.

One image serves every aisle template; each template's metadata fixes its
``job`` parameter (``ingest`` or ``batch``). The launcher passes every
parameter as ``--name=value``; this file takes ``--job`` out and runs
``python -m pipelines.<job>`` with the rest, which includes the Beam
options the launcher adds (runner, project, region, staging and temp
locations, service account, SDK container image).
"""

from __future__ import annotations

import runpy
import sys

JOBS = ("ingest", "batch")


def split_job(argv: list[str]) -> tuple[str, list[str]]:
    """(job, the remaining arguments) from the launcher's arguments."""
    job, rest = None, []
    it = iter(argv)
    for arg in it:
        if arg == "--job":
            job = next(it, None)
        elif arg.startswith("--job="):
            job = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if job not in JOBS:
        raise SystemExit(f"flex template parameter job={job!r}: expected one of {', '.join(JOBS)}")
    return job, rest


def main() -> None:
    job, rest = split_job(sys.argv[1:])
    sys.argv = [f"pipelines.{job}", *rest]
    runpy.run_module(f"pipelines.{job}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

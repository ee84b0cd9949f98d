"""Ingestion benchmark: ``aisle ingest`` against a one-process pyarrow reference.

Side by side in one run, each configuration in a fresh process, repeated and
interleaved (this machine is noisy), medians reported:

* ``reference``: the same parsing, validation, dedupe and event/product
  building (the functions of ``transforms.online_retail``) on the whole file
  in one process with pyarrow, writing the same Parquet outputs. This is the
  floor that Beam's orchestration is measured against.
* ``beam-1``, ``beam-2-threads``, ``beam-2-processes``: ``aisle ingest`` on
  the FnApiRunner in one process, and with 2 workers as threads or processes.
* ``beam-2-auto`` at ``Nx`` (what ``--workers 2`` runs: threads under
  ``pipelines.ingest.PROCESS_BYTES`` of input, processes from there on):
  the same job on N times the real volume (ids remapped so every copy is
  distinct), for wall time, rows/s and peak memory of the whole process
  tree; at the largest N, in interleaved rounds with one worker (the
  2-vs-1 speedup) and with 2 threads.

    python -m benchmarks.ingest --json benchmarks/results/ingest.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

from benchmarks._measure import run_measured
from components.candidates import cpu_info

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "retail" / "online_retail_2010-12_2011-09.csv"
NOW = "2026-01-01T00:00:00+00:00"


def reference(path: str, out: str) -> dict:
    """The whole job in one process with pyarrow."""
    import pyarrow.parquet as pq

    from transforms import online_retail as ort

    t0 = time.perf_counter()
    data = pathlib.Path(path).read_bytes()
    now = dt.datetime.fromisoformat(NOW)
    parsed = ort.parse_chunk(data, source_file=path, base_offset=0, now=now, first_chunk=True)
    built = ort.build_events(parsed.lines, currency="GBP")
    products = ort.build_products(ort.product_partials(built["lines"]), currency="GBP")
    os.makedirs(out, exist_ok=True)
    for name, table in (("events", built["events"]), ("cancellations", built["cancellations"]), ("products", products), ("dead_letter", parsed.dead)):
        pq.write_table(table, os.path.join(out, f"{name}.parquet"), compression="zstd")
    secs = time.perf_counter() - t0
    return {"job_secs": secs, "read": parsed.read, "events": built["events"].num_rows, "products": products.num_rows}


def beam(path: str, out: str, workers: int, worker_mode: str = "processes") -> dict:
    from pipelines.ingest import run_ingest

    t0 = time.perf_counter()
    summary = run_ingest(
        [path], out, format="online-retail", workers=workers, worker_mode=worker_mode, now=dt.datetime.fromisoformat(NOW)
    )
    return {
        "job_secs": time.perf_counter() - t0,
        "read": summary["read"],
        "events": summary["records"]["events"],
        "products": summary["records"]["products"],
        "conserved": summary["conservation"]["ok"],
        "partitions": summary["partitions"],
        "worker_mode": summary.get("worker_mode"),
    }


def synthesize(path: str, copies: int, dest: str, *, same_catalog: bool = False) -> str:
    """``copies`` distinct copies of the data: invoice, stock and customer ids remapped per copy.

    ``same_catalog`` keeps the stock ids: N times the invoices and customers
    of the same products (a retailer whose traffic grows, not its catalog).
    """
    with open(path, "rb") as src, open(dest, "wb") as out:
        header = src.readline()
        lines = src.readlines()
        out.write(header)
        for k in range(copies):
            if k == 0:
                out.writelines(lines)
                continue
            tag = str(k).encode()
            for line in lines:
                inv, stock, rest = line.split(b",", 2)
                cancel = inv.startswith(b"C")
                inv = (b"C" if cancel else b"") + tag + b"9" + (inv[1:] if cancel else inv)
                head, customer, country = rest.rsplit(b",", 2)
                if customer.strip():
                    customer = tag + customer
                out.write(b",".join((inv, stock if same_catalog else stock + b"-" + tag, head, customer, country)))
    return dest


def _child(argv: list[str]) -> None:
    mode, path, out = argv[0], argv[1], argv[2]
    if mode == "reference":
        result = reference(path, out)
    else:  # beam-<workers>[-threads|-processes]
        parts = mode.split("-")
        result = beam(path, out, int(parts[1]), parts[2] if len(parts) > 2 else "processes")
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a CSV of the UCI Online Retail layout")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=int, nargs="*", default=[3, 10], help="volume multiples for the memory check")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    if not os.path.exists(args.data):
        print(f"data file {args.data} not found (it lives in ../shared/data/retail)", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="aisle-bench-ingest-")
    runs: dict[str, list[dict]] = {"reference": [], "beam-1": [], "beam-2-threads": [], "beam-2-processes": []}
    try:
        for r in range(args.repeats):
            for mode in runs:
                out = os.path.join(tmp, f"{mode}-{r}")
                m = run_measured([sys.executable, "-m", "benchmarks.ingest", "--child", mode, args.data, out])
                runs[mode].append(m)
                print(f"{mode:10s} run {r}: job {m['result']['job_secs']:.2f}s process {m['process_secs']:.2f}s peak {m['peak_rss_mib']:.0f} MiB", file=sys.stderr)
                shutil.rmtree(out, ignore_errors=True)
        rows = runs["reference"][0]["result"]["read"]
        report = {"data": args.data, "rows": rows, "machine": cpu_info(), "configs": {}}
        for mode, ms in runs.items():
            job = statistics.median(m["result"]["job_secs"] for m in ms)
            report["configs"][mode] = {
                "job_secs_median": round(job, 3),
                "process_secs_median": round(statistics.median(m["process_secs"] for m in ms), 3),
                "rows_per_sec": round(rows / job),
                "peak_rss_mib_median": round(statistics.median(m["peak_rss_mib"] for m in ms)),
                "job_secs_all": [round(m["result"]["job_secs"], 3) for m in ms],
            }
        ref = report["configs"]["reference"]["job_secs_median"]
        report["ratio_beam1_vs_reference"] = round(report["configs"]["beam-1"]["job_secs_median"] / ref, 2)
        one = report["configs"]["beam-1"]["job_secs_median"]
        for mode in ("beam-2-threads", "beam-2-processes"):
            two = report["configs"][mode]["job_secs_median"]
            report[f"ratio_{mode}_vs_reference"] = round(two / ref, 2)
            report[f"speedup_{mode}_vs_1_worker"] = round(one / two, 2)
        # what --workers 2 runs (--worker-mode auto: threads under PROCESS_BYTES of input, processes from there on)
        from pipelines.ingest import PROCESS_BYTES

        best = "beam-2-auto"
        report["scale_mode"] = f"{best} (processes from {PROCESS_BYTES >> 20} MiB of input)"
        at_1x = "beam-2-processes" if os.path.getsize(args.data) >= PROCESS_BYTES else "beam-2-threads"
        scale = {"1": {"job_secs": report["configs"][at_1x]["job_secs_median"], "rows": rows,
                       "peak_rss_mib": report["configs"][at_1x]["peak_rss_mib_median"], "worker_mode": at_1x.rsplit("-", 1)[1]}}
        for n in args.scale:
            big = synthesize(args.data, n, os.path.join(tmp, f"x{n}.csv"))
            m = run_measured([sys.executable, "-m", "benchmarks.ingest", "--child", best, big, os.path.join(tmp, f"out-x{n}")])
            scale[str(n)] = {"job_secs": round(m["result"]["job_secs"], 3), "rows": m["result"]["read"],
                             "peak_rss_mib": round(m["peak_rss_mib"]), "partitions": m["result"]["partitions"],
                             "worker_mode": m["result"]["worker_mode"]}
            if n == max(args.scale):
                # 1 vs 2 workers where the job is long enough for start-up not to dominate: rounds of one
                # worker, 2 as --workers 2 runs them and 2 threads, interleaved (the machine is noisy)
                rounds: dict[str, list[float]] = {"beam-1": [], best: [], "beam-2-threads": []}
                peaks: dict[str, list[float]] = {mode: [] for mode in rounds}
                rounds[best].append(m["result"]["job_secs"])
                peaks[best].append(m["peak_rss_mib"])
                for r in range(args.repeats):
                    for mode in rounds:
                        if r == 0 and mode == best:
                            continue  # the run above is this round's
                        shutil.rmtree(os.path.join(tmp, f"out-x{n}"), ignore_errors=True)
                        mr = run_measured([sys.executable, "-m", "benchmarks.ingest", "--child", mode, big, os.path.join(tmp, f"out-x{n}")])
                        rounds[mode].append(mr["result"]["job_secs"])
                        peaks[mode].append(mr["peak_rss_mib"])
                        print(f"{mode} @ {n}x round {r}: {mr['result']['job_secs']:.2f}s ({mr['result']['worker_mode']})", file=sys.stderr)
                one, two = statistics.median(rounds["beam-1"]), statistics.median(rounds[best])
                scale[str(n)].update({
                    "job_secs": round(two, 3),
                    "job_secs_all": [round(x, 2) for x in rounds[best]],
                    "peak_rss_mib": round(statistics.median(peaks[best])),
                    "job_secs_1_worker": round(one, 3),
                    "job_secs_1_worker_all": [round(x, 2) for x in rounds["beam-1"]],
                    "peak_rss_mib_1_worker": round(statistics.median(peaks["beam-1"])),
                    "speedup_2_vs_1_workers": round(one / two, 2),
                    "speedup_2_vs_1_workers_by_round": [round(a / b, 2) for a, b in zip(rounds["beam-1"], rounds[best])],
                    "threads": {
                        "job_secs": round(statistics.median(rounds["beam-2-threads"]), 3),
                        "job_secs_all": [round(x, 2) for x in rounds["beam-2-threads"]],
                        "peak_rss_mib": round(statistics.median(peaks["beam-2-threads"])),
                        "speedup_vs_1_worker": round(one / statistics.median(rounds["beam-2-threads"]), 2),
                        "speedup_vs_1_worker_by_round": [round(a / b, 2) for a, b in zip(rounds["beam-1"], rounds["beam-2-threads"])],
                    },
                })
            print(f"{best} @ {n}x: {scale[str(n)]}", file=sys.stderr)
            shutil.rmtree(os.path.join(tmp, f"out-x{n}"), ignore_errors=True)
            os.remove(big)
        for s in scale.values():
            s["rows_per_sec"] = round(s["rows"] / s["job_secs"])
        report["scale"] = scale
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

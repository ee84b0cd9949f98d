"""Local runner benchmark: joins (``CoGroupByKey``) planned as Beam's ``FnApiRunner`` plans them, and as aisle's local runner does.

Beam's runner gives every Flatten of several inputs a stage of its own, so
a ``CoGroupByKey`` (its tagged inputs flattened, then grouped) decodes and
encodes every joined element once more than the join needs; aisle's local
runner (:mod:`pipelines.local_stages`) writes the inputs straight into the
join's shuffle. Both plans run the same job, in fresh processes, in turns:
three inputs of ``--rows`` elements each (generated in the workers, a short
string and an int per element, about 40 keys' worth of each per key)
joined by key, and each key's group summarized; the job writes its
summary's digest, which must be the same for every run. ``--workers``
compares in-process (1) and two worker processes (2).

    python -m benchmarks.local_runner --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile

from benchmarks._measure import run_measured
from components.candidates import cpu_info

PLANS = ("beam", "aisle")


def _job(rows: int, workers: int, plan: str) -> dict:
    import time

    import apache_beam as beam

    import pipelines.local_bundles as local_bundles
    from apache_beam.runners.portability.fn_api_runner import translations
    from pipelines.options import make_pipeline, pipeline_options

    if plan == "beam":  # Beam's own phase in place of aisle's
        local_bundles.sink_flattens_into_groups = translations.sink_flattens
    keys, seeds = max(1, rows // 40), 64
    out = tempfile.NamedTemporaryFile(prefix="aisle-local-runner-", suffix=".txt", delete=False).name

    def generate(seed, tag):
        per_seed = -(-rows // seeds)
        for i in range(seed * per_seed, min(rows, (seed + 1) * per_seed)):
            yield f"key-{(i * 7919 + len(tag)) % keys:07d}", (f"{tag}-{i}", i)

    def summarize(key, groups):
        return key, tuple((tag, len(values), sum(v for _, v in values)) for tag, values in sorted(groups.items()))

    t0 = time.perf_counter()
    with make_pipeline(pipeline_options([], workers=workers, worker_mode="processes" if workers > 1 else "threads")) as p:
        inputs = {
            tag: p | f"Seeds{tag}" >> beam.Create(range(seeds)) | f"Rows{tag}" >> beam.FlatMap(generate, tag)
            for tag in ("orders", "views", "returns")
        }
        (
            inputs
            | "Join" >> beam.CoGroupByKey()
            | "Summarize" >> beam.MapTuple(summarize)
            | "Digest" >> beam.Map(lambda row: hashlib.sha256(repr(row).encode()).hexdigest())
            | "Combine" >> beam.combiners.ToList()
            | "Collect" >> beam.Map(_write_digest, out)  # in a worker process, with two workers
        )
    secs = time.perf_counter() - t0
    with open(out) as f:
        digest = f.read()
    os.unlink(out)
    return {"job_secs": secs, "digest": digest}


def _write_digest(hexes: list[str], path: str) -> None:
    with open(path, "w") as f:
        f.write(hashlib.sha256("".join(sorted(hexes)).encode()).hexdigest())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000, help="elements per joined input")
    parser.add_argument("--workers", default="1,2", help="comma-separated: 1 = in-process, 2 = two worker processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", nargs=3, metavar=("ROWS", "WORKERS", "PLAN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_job(int(args.child[0]), int(args.child[1]), args.child[2])))
        return 0
    report = {"machine": cpu_info(), "rows_per_input": args.rows, "repeats": args.repeats, "workers": {}}
    digests = set()
    for workers in [int(w) for w in args.workers.split(",") if w]:
        runs: dict[str, list[dict]] = {plan: [] for plan in PLANS}
        for r in range(args.repeats):
            for plan in PLANS if r % 2 == 0 else PLANS[::-1]:  # turns, so a slow spell of the machine hits both
                m = run_measured([sys.executable, "-m", "benchmarks.local_runner", "--child", str(args.rows), str(workers), plan])
                runs[plan].append(m)
                digests.add(m["result"]["digest"])
                print(f"{workers} worker(s), {plan}: job {m['result']['job_secs']:.2f} s, cpu {m['cpu_secs']:.1f} s, "
                      f"peak {m['peak_rss_mib']:.0f} MiB (runner {m['peak_rss_mib_main']:.0f})", file=sys.stderr)
        fig = {
            plan: {
                "job_secs": [round(m["result"]["job_secs"], 2) for m in ms],
                "job_secs_median": round(statistics.median(m["result"]["job_secs"] for m in ms), 2),
                "cpu_secs_median": round(statistics.median(m["cpu_secs"] for m in ms), 1),
                "peak_rss_mib_median": round(statistics.median(m["peak_rss_mib"] for m in ms)),
                "peak_rss_mib_runner_median": round(statistics.median(m["peak_rss_mib_main"] for m in ms)),
            }
            for plan, ms in runs.items()
        }
        fig["speedup_aisle_vs_beam"] = round(fig["beam"]["job_secs_median"] / fig["aisle"]["job_secs_median"], 2)
        fig["speedup_by_round"] = [round(b["result"]["job_secs"] / a["result"]["job_secs"], 2) for b, a in zip(runs["beam"], runs["aisle"])]
        report["workers"][str(workers)] = fig
    report["same_result_every_run"] = len(digests) == 1 and all(len(d) == 64 for d in digests)
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0 if report["same_result_every_run"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

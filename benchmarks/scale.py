"""Scale benchmark: ``aisle enrich`` (NER half) and ``aisle recommend`` at 1x, 3x and 10x the real retail volume.

The UCI Online Retail file is synthesized to N times its volume by
:func:`benchmarks.ingest.synthesize` (invoice, stock and customer ids
remapped per copy, so every copy is distinct: N times the events, the
products and the visitors; ``--same-catalog`` keeps the stock ids, for N
times the events and visitors of the same products), then ingested once
per volume (untimed). On
that data, each job runs in a fresh process in three worker configurations
(``--workers``): ``1`` (one worker, as ``--workers 1`` runs it: in the
launcher's process, no transport between processes), ``1p`` (one worker
process of the multi-process runner) and ``2`` (two worker processes), and
reports wall seconds, rows/s and peak RSS: of its whole process tree, of
its main process (the launcher, which is also the local runner and holds
what the runner buffers between steps: on Dataflow that is the shuffle
service's) and of its largest SDK worker process.
``speedup_2_vs_1_workers`` compares ``2`` with ``1`` (what a user gains
from ``--workers 2``); ``speedup_2_vs_1_processes`` compares ``2`` with
``1p`` (how the multi-process runner scales with a second process):

* ``enrich``: the NER half over the product titles of the ingested catalog
  (the retail data has titles but no images, so the OCR half has nothing to
  read), with the NER model at ``out/models/ner/candidates/int8_dynamic``
  when it exists, else a tiny random model built for the run (the JSON says
  which); one onnxruntime thread per worker. Rows: products.
* ``recommend``: similar items, frequently bought together and
  recommended-for-you from the ingested events and catalog, with a model of
  the volume's items (untrained: the weights change the job's cost only
  through ties at the k-th score, which nearly every row of an untrained
  INT8 model has, the slower path of the top-k; ``dim`` as in production
  unless ``--dim``), served as the job
  serves a trained one: its full-INT8 TFLite file through LiteRT
  (``--engine auto``; ``--engine saved_model`` measures the FP32
  SavedModel through TensorFlow instead). The model is exported as
  training exports it: with the similar-items index from 100,000 items
  (``transforms.item_index.INDEX_MIN_ITEMS``: 30x), which the job then
  searches (``model.item_index`` and ``neighbours``, what the runs searched, say so).
  Rows: purchase events.

``--threads-per-worker T`` gives every configuration's worker(s), the
in-process one included, ``T`` threads for BLAS, OpenMP and TensorFlow /
LiteRT (:data:`pipelines.options.THREAD_ENV`), as the enrich figures always
give onnxruntime one: a comparison of worker counts rather than of one
worker with all the cores' threads against several with fewer (the default,
as aisle runs: one worker takes every core, two take half each). Figures go
under ``<job>_threads<T>``.

It also records, per volume, the sizes of recommend's side inputs (item
counts, known titles) next to the number of events and visitors, and
whether the outputs of every worker configuration are byte-identical.

    python -m benchmarks.scale --json benchmarks/results/scale.json
    python -m benchmarks.scale --volumes 1 --jobs recommend        # a quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import pathlib
import pickle
import shutil
import statistics
import sys
import tempfile
import time

from benchmarks._measure import run_measured
from benchmarks.ingest import DEFAULT_DATA, synthesize

ROOT = pathlib.Path(__file__).resolve().parents[1]
NER_CANDIDATE = ROOT / "out" / "models" / "ner" / "candidates" / "int8_dynamic"
NOW = "2026-01-01T00:00:00+00:00"
JOBS = ("enrich", "recommend")


# --------------------------------------------------------------------------- children (one fresh process each)


def _ingest(csv: str, out: str) -> dict:
    from pipelines.ingest import run_ingest

    summary = run_ingest([csv], out, format="online-retail", workers=2, worker_mode="threads", now=dt.datetime.fromisoformat(NOW))
    return {"read": summary["read"], "events": summary["records"]["events"], "products": summary["records"]["products"]}


def _model(ingest_dir: str, model_dir: str, dim: int) -> dict:
    """An untrained model of every item of the volume, and the sizes of recommend's side inputs."""
    import pyarrow.parquet as pq

    from components.recommend_data import read_event_baskets
    from components.recommend_model import TrainConfig, TrainedModel, build_model, export_model
    from components.recommend_quantize import write_serving_tflite
    from transforms.item_index import INDEX_FILE
    from transforms.recommend_vocab import ItemVocab

    baskets = read_event_baskets(os.path.join(ingest_dir, "events"))
    vocab = ItemVocab.build([b.items for b in baskets])
    cfg = TrainConfig(dim=dim, epochs=1)
    export_model(TrainedModel(build_model(len(vocab), dim=cfg.dim, max_query_items=cfg.max_query_items), vocab, cfg), model_dir)
    write_serving_tflite(model_dir, [b.items for b in baskets])  # the INT8 file the job serves with --engine auto
    counts: dict[str, int] = {}
    for b in baskets:
        for item in set(b.items):
            counts[item] = counts.get(item, 0) + 1
    products = pq.read_table(os.path.join(ingest_dir, "products"), columns=["id", "title"]).to_pylist()
    titles = {p["id"]: p["title"] or "" for p in products if p["id"] in vocab}
    events = pq.read_table(os.path.join(ingest_dir, "events"), columns=["visitorId"])
    return {
        "vocab_items": len(vocab),
        "dim": dim,
        # export_model builds the similar-items index from INDEX_MIN_ITEMS items: the job then searches it
        "item_index": os.path.exists(os.path.join(model_dir, INDEX_FILE)),
        "side_inputs": {
            "item_counts": {"entries": len(counts), "pickled_bytes": len(pickle.dumps(counts))},
            "known_titles": {"entries": len(titles), "pickled_bytes": len(pickle.dumps(titles))},
            "popular_list": {"entries": 11},
        },
        "events": events.num_rows,
        "visitors": len(set(events.column("visitorId").to_pylist()) - {None, ""}),
    }


def _workers(config: str) -> tuple[int, list[str]]:
    """``"2"`` -> 2 workers as aisle runs them (1: in-process); ``"1p"`` -> one worker process (multi_processing)."""
    if config.endswith("p"):
        return int(config[:-1]), ["--direct_running_mode=multi_processing", f"--direct_num_workers={int(config[:-1])}"]
    return int(config), []


def _enrich(catalog: str, out: str, workers: str, ner_model: str) -> dict:
    import pyarrow.parquet as pq

    from pipelines.enrich import run_enrich

    rows = sum(pq.read_metadata(p).num_rows for p in pathlib.Path(catalog).glob("*.parquet"))
    t0 = time.perf_counter()
    n, beam_args = _workers(workers)
    summary = run_enrich(catalog, out, threads=1, workers=n, beam_args=beam_args, ner_model=ner_model, ner_options={"intra_op_threads": 1})
    secs = time.perf_counter() - t0
    return {"job_secs": secs, "rows": rows, "records": summary["records"]}


def _recommend(ingest_dir: str, out: str, workers: str, model_dir: str, engine: str) -> dict:
    import pyarrow.parquet as pq

    from pipelines.recommend import run

    rows = sum(pq.read_metadata(p).num_rows for p in pathlib.Path(ingest_dir, "events").glob("*.parquet"))
    t0 = time.perf_counter()
    n, beam_args = _workers(workers)
    summary = run(events=os.path.join(ingest_dir, "events"), catalog=os.path.join(ingest_dir, "products"), out_dir=out,
                  model_dir=model_dir, workers=n, beam_args=beam_args, echo=lambda *_: None, engine=engine)
    secs = time.perf_counter() - t0
    return {"job_secs": secs, "rows": rows, "outputs": summary["outputs"], "engine": summary["engine"],
            "neighbours": summary["neighbours"]}


def _tiny_ner(folder: str) -> str:
    """A 2-layer random token classifier exported to ONNX, when no NER candidate has been built."""
    from components.ner_export import export_onnx
    from tests.ner_support import build_tiny_base

    base = build_tiny_base(pathlib.Path(folder) / "base")
    return os.path.dirname(export_onnx(base, os.path.join(folder, "onnx")))


def _child(argv: list[str]) -> None:
    mode, *rest = argv
    if mode == "ingest":
        result = _ingest(*rest)
    elif mode == "model":
        result = _model(rest[0], rest[1], int(rest[2]))
    elif mode == "tiny-ner":
        result = {"model": _tiny_ner(rest[0])}
    elif mode == "enrich":
        result = _enrich(rest[0], rest[1], rest[2], rest[3])
    else:
        result = _recommend(rest[0], rest[1], rest[2], rest[3], rest[4])
    print(json.dumps(result, default=str))


# --------------------------------------------------------------------------- parent


def _digest(folder: str) -> str:
    h = hashlib.sha256()
    base = pathlib.Path(folder)
    for p in sorted(base.rglob("*")):
        rel = p.relative_to(base)
        if p.suffix in (".parquet", ".jsonl") and not any(part.startswith(("_", "model")) for part in rel.parts):
            h.update(rel.as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _child_cmd(*args) -> list[str]:
    return ["nice", "-n", "5", sys.executable, "-m", "benchmarks.scale", "--child", *map(str, args)]


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a CSV of the UCI Online Retail layout")
    parser.add_argument("--volumes", default="1,3,10", help="volume multiples, comma-separated")
    parser.add_argument("--jobs", default=",".join(JOBS), help="jobs to measure: enrich, recommend")
    parser.add_argument("--workers", default="1,1p,2",
                        help="worker configurations to compare, comma-separated: N as aisle runs N workers (1: in-process), Np: N worker processes")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration (medians reported)")
    parser.add_argument("--dim", type=int, default=128, help="embedding size of the recommendation model")
    parser.add_argument("--ner-model", default=None, help=f"NER model folder (default: {NER_CANDIDATE} if present, else a tiny one)")
    parser.add_argument("--same-catalog", action="store_true",
                        help="keep the stock ids when synthesizing: N times the events and visitors of the same catalog "
                             "(figures go under <job>_same_catalog)")
    parser.add_argument("--engine", default="auto", choices=["auto", "saved_model", "tflite"],
                        help="recommend's engine: auto serves the INT8 TFLite model through LiteRT (figures for "
                             "saved_model go under recommend_saved_model)")
    parser.add_argument("--threads-per-worker", type=int, default=None,
                        help="threads per worker for BLAS, OpenMP and TensorFlow/LiteRT in every configuration, the "
                             "in-process one included (default: as aisle runs, cores / workers)")
    parser.add_argument("--json", help="write the figures here (merged into an existing file per job and volume)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    volumes = [int(v) for v in args.volumes.split(",") if v]
    jobs = [j for j in args.jobs.split(",") if j]
    workers = [w for w in args.workers.split(",") if w]
    unknown = set(jobs) - set(JOBS)
    if unknown:
        parser.error(f"unknown jobs {sorted(unknown)}; choose from {', '.join(JOBS)}")
    if not os.path.exists(args.data):
        print(f"data file {args.data} not found (it lives in ../shared/data/retail)", file=sys.stderr)
        return 2
    from components.candidates import cpu_info

    report: dict = {}
    if args.json and os.path.exists(args.json):
        report = json.loads(pathlib.Path(args.json).read_text())
    report.update({"data": args.data, "machine": cpu_info(), "cpu_count": os.cpu_count(), "repeats": args.repeats})
    report.setdefault("jobs", {})
    child_env = None
    if args.threads_per_worker:
        from pipelines.options import THREAD_ENV

        child_env = os.environ | {name: str(args.threads_per_worker) for name in THREAD_ENV}
    tmp = tempfile.mkdtemp(prefix="aisle-bench-scale-")
    try:
        ner_model, ner_kind = args.ner_model, "given"
        if "enrich" in jobs and not ner_model:
            if (NER_CANDIDATE / "model.onnx").exists():
                ner_model, ner_kind = str(NER_CANDIDATE), "MiniLM-L6 NER candidate int8_dynamic"
                # a snapshot: the candidate folder may be rebuilt while the benchmark runs
                ner_model = shutil.copytree(ner_model, os.path.join(tmp, "ner-model"))
                ner_kind += f" (model.onnx sha256 {hashlib.sha256(pathlib.Path(ner_model, 'model.onnx').read_bytes()).hexdigest()[:16]})"
            else:
                ner_model = run_measured(_child_cmd("tiny-ner", os.path.join(tmp, "ner")))["result"]["model"]
                ner_kind = "tiny random 2-layer BERT (no NER candidate built)"
        for n in volumes:
            csv = synthesize(args.data, n, os.path.join(tmp, f"x{n}.csv"), same_catalog=args.same_catalog)
            ingest_dir = os.path.join(tmp, f"ingest-x{n}")
            ingested = run_measured(_child_cmd("ingest", csv, ingest_dir))["result"]
            os.remove(csv)
            print(f"{n}x ingested: {ingested}", file=sys.stderr)
            model_info = None
            if "recommend" in jobs:
                model_dir = os.path.join(tmp, f"model-x{n}")
                model_info = run_measured(_child_cmd("model", ingest_dir, model_dir, args.dim))["result"]
            for job in jobs:
                entry: dict = {"volume": n, "ingested": ingested, "load_average_before": _load_average(), "workers": {}}
                if job == "enrich":
                    entry["ner_model"] = {"path": ner_model, "kind": ner_kind, "onnxruntime_threads_per_worker": 1}
                else:
                    entry["model"] = {"kind": "untrained (the weights change the job's cost only through ties at the k-th score: "
                                               "nearly every row of an untrained INT8 model has them)", **model_info}
                    entry["engine"] = args.engine
                entry["threads_per_worker"] = args.threads_per_worker or "cores / workers"
                digests = {}
                by_workers: dict[str, list] = {w: [] for w in workers}
                for r in range(args.repeats):  # configurations alternate, so a slow spell of the machine hits them all
                    for w in workers:
                        out = os.path.join(tmp, f"out-{job}-x{n}-w{w}-{r}")
                        if job == "enrich":
                            cmd = _child_cmd("enrich", os.path.join(ingest_dir, "products"), out, w, ner_model)
                        else:
                            cmd = _child_cmd("recommend", ingest_dir, out, w, model_dir, args.engine)
                        m = run_measured(cmd, env=child_env)
                        by_workers[w].append(m)
                        digests.setdefault(w, _digest(out))
                        shutil.rmtree(out, ignore_errors=True)
                        print(f"{job} {n}x {w} worker(s) run {r}: job {m['result']['job_secs']:.1f}s cpu {m['cpu_secs']:.1f}s "
                              f"steal {m['steal_secs'] or 0:.1f}s peak {m['peak_rss_mib']:.0f} MiB load {_load_average()}", file=sys.stderr)
                for w, runs in by_workers.items():
                    job_secs = statistics.median(m["result"]["job_secs"] for m in runs)
                    rows = runs[0]["result"]["rows"]
                    entry["rows"] = rows
                    entry["workers"][str(w)] = {
                        "job_secs_median": round(job_secs, 2),
                        "process_secs_median": round(statistics.median(m["process_secs"] for m in runs), 2),
                        "rows_per_sec": round(rows / job_secs),
                        "peak_rss_mib_median": round(statistics.median(m["peak_rss_mib"] for m in runs)),
                        "peak_rss_mib_main_median": round(statistics.median(m["peak_rss_mib_main"] for m in runs)),
                        "peak_rss_mib_worker_median": round(statistics.median(m["peak_rss_mib_worker"] for m in runs)),
                        "job_secs_all": [round(m["result"]["job_secs"], 2) for m in runs],
                        "cpu_secs_all": [round(m["cpu_secs"], 1) for m in runs],
                        "steal_secs_all": [None if m["steal_secs"] is None else round(m["steal_secs"], 1) for m in runs],
                    }
                if job == "recommend":  # what the runs searched for similar items: "index" or "exact"
                    entry["neighbours"] = sorted({m["result"]["neighbours"] for runs in by_workers.values() for m in runs})
                secs = {w: fig["job_secs_median"] for w, fig in entry["workers"].items()}
                if "1" in secs and "2" in secs:
                    entry["speedup_2_vs_1_workers"] = round(secs["1"] / secs["2"], 2)
                if "1p" in secs and "2" in secs:
                    entry["speedup_2_vs_1_processes"] = round(secs["1p"] / secs["2"], 2)
                for base, name in (("1", "speedup_2_vs_1_workers_by_round"), ("1p", "speedup_2_vs_1_processes_by_round")):
                    if base in by_workers and "2" in by_workers:  # each round's own ratio: the runs side by side
                        entry[name] = [round(a["result"]["job_secs"] / b["result"]["job_secs"], 2)
                                       for a, b in zip(by_workers[base], by_workers["2"])]
                entry["outputs_identical_across_workers"] = len(set(digests.values())) == 1
                entry["load_average_after"] = _load_average()
                key = job + ("_saved_model" if job == "recommend" and args.engine == "saved_model" else "")
                key += ("_same_catalog" if args.same_catalog else "") + (f"_threads{args.threads_per_worker}" if args.threads_per_worker else "")
                report["jobs"].setdefault(key, {})[f"{n}x"] = entry
                _save(report, args.json)  # partial figures survive a later failure
            shutil.rmtree(ingest_dir, ignore_errors=True)
        growth(report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(_save(report, args.json))
    return 0


def growth(report: dict) -> dict:
    """Add ``vs_1x`` to every job and volume: rows, time and peak memory relative to 1x, per worker count."""
    for by_volume in report["jobs"].values():
        base = by_volume.get("1x")
        if not base:
            continue
        for entry in by_volume.values():
            entry["vs_1x"] = {
                w: {
                    "rows": round(entry["rows"] / base["rows"], 2),
                    "time": round(fig["job_secs_median"] / base["workers"][w]["job_secs_median"], 2),
                    "peak_rss": round(fig["peak_rss_mib_median"] / base["workers"][w]["peak_rss_mib_median"], 2),
                    **(
                        {"peak_rss_worker": round(fig["peak_rss_mib_worker_median"] / base["workers"][w]["peak_rss_mib_worker_median"], 2)}
                        if fig.get("peak_rss_mib_worker_median") and base["workers"][w].get("peak_rss_mib_worker_median")
                        else {}
                    ),
                }
                for w, fig in entry["workers"].items()
                if w in base["workers"]
            }
    return report


def _save(report: dict, path: str | None) -> str:
    text = json.dumps(report, indent=2)
    if path:
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(path).write_text(text + "\n")
    return text


if __name__ == "__main__":
    raise SystemExit(main())

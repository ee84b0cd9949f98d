"""OCR benchmark: stock RapidOCR FP32 vs every candidate vs Tesseract, side by side in one run.

    python -m benchmarks.ocr --data ../shared/data/ocr/sroie --json benchmarks/results/ocr.json --limit 30

Every system reads the same evaluation images; the pages are visited in
turn and the systems in rotating order on each page, so a change in the
machine's load during the run hits all systems alike. Calibration images
(for static INT8 and the mixed-precision search) are disjoint from the
evaluation ones: the last ``--n-calibration`` images of ``--data`` (or the
first of ``--calibration-data``), evaluation the first ``--limit`` of the
rest. Metric definitions: ``components.ocr_eval``.

With ``--finetune`` (the default when ``--data`` has pages left over),
the recognizer's CTC head is first fine-tuned
(:mod:`components.ocr_finetune`) on the pages that are neither evaluation
nor calibration pages: the first ``--finetune-dev`` of them pick the epoch
and the space threshold, the rest are trained on. Every candidate is then
built from the fine-tuned models, and ``fp32_shipped`` (the aisle engine
with the shipped weights) is measured beside them. The same training and
dev pages then retrain the FP32 candidate's recognizer with INT8 simulated
(:mod:`components.ocr_qat`) for the ``int8_qat`` candidate.

Writes ``--json`` (per system: word_f1, cer, secs_per_image, ...; the chosen
candidate's name; CPU flags) and a report (table + accuracy-vs-latency PNG)
under ``--report-dir``. Quantized models go under ``--work-dir`` (not git).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

from components.candidates import CandidateResult, choose_candidate, cpu_info, file_size, write_report
from components.ocr_eval import aggregate, load_sroie, page_counts, split_pages, tesseract_lines, word_f1_interval
from components.ocr_finetune import FinetuneConfig, finetune_recognizer
from components.ocr_qat import QatConfig
from components.ocr_quantize import CANDIDATES, QAT_CANDIDATE, build_ocr_candidates
from transforms.errors import AisleError, ConfigError
from transforms.inference.ocr import OcrConfig, OcrEngine, OcrModelPaths

# Engine settings of the candidates, chosen on the calibration images only.
BENCH_CONFIG = OcrConfig()


def _log(msg: str) -> None:
    print(f"[ocr-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _pages(args):
    if args.calibration_data:
        ev = load_sroie(args.data, limit=args.limit)
        cal = [p for p in load_sroie(args.calibration_data) if not (os.path.samefile(args.calibration_data, args.data) and p.id in {e.id for e in ev})]
        cal = cal[: args.n_calibration]
    else:
        ev, cal = split_pages(args.data, n_eval=args.limit, n_calibration=args.n_calibration)
    if {p.id for p in ev} & {p.id for p in cal} and not args.calibration_data:
        raise ConfigError("calibration and evaluation images overlap")
    return ev, cal


def _finetune_pages(args, ev, cal):
    """(training, dev) pages of ``--data`` that are neither evaluation nor calibration pages."""
    held = {p.id for p in ev} | ({p.id for p in cal} if not args.calibration_data else set())
    rest = [p for p in load_sroie(args.data) if p.id not in held]
    dev = rest[: args.finetune_dev]
    return rest[len(dev) :], dev


class _Stock:
    """The rapidocr-onnxruntime engine as shipped (FP32, its own settings)."""

    def __init__(self, threads: int):
        from rapidocr_onnxruntime import RapidOCR

        self.engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)

    def __call__(self, path: str, image):
        result, _ = self.engine(image)
        return [(r[1], r[0]) for r in (result or [])]


class _Ours:
    def __init__(self, model_dir: str, threads: int, config: OcrConfig):
        self.engine = OcrEngine.load(OcrModelPaths.from_dir(model_dir), threads=threads, config=config)

    def __call__(self, path: str, image):
        return [(l.text, l.box) for l in self.engine.read_image(image).lines]


class _Tesseract:
    def __init__(self, threads: int):
        self.threads = threads

    def __call__(self, path: str, image):
        return tesseract_lines(path, threads=self.threads)


def _pipeline_ratio(model_dir: str, pages, threads: int, config: OcrConfig, rounds: int = 3) -> dict:
    """Images/s of ``aisle enrich`` vs a plain loop (read, decode, OCR) on the same images and models.

    The two are timed ``rounds`` times, alternately, and the medians compared
    (one pair of runs moved between 0.71 and 1.09 from run to run here).
    """
    from pipelines.enrich import run_enrich
    from transforms.inference.ocr import decode_image

    engine = OcrEngine.load(OcrModelPaths.from_dir(model_dir), threads=threads, config=config)
    engine.read_image(decode_image(pathlib.Path(pages[0].image_path).read_bytes()))  # warm
    raw, pipe, dead = [], [], 0
    with tempfile.TemporaryDirectory(prefix="aisle-ocr-bench-") as tmp:
        cat = os.path.join(tmp, "catalog.jsonl")
        with open(cat, "w", encoding="utf-8") as f:
            for p in pages:
                f.write(json.dumps({"id": p.id, "title": p.id, "images": [{"uri": os.path.abspath(p.image_path)}]}) + "\n")
        for r in range(rounds):
            t = time.perf_counter()
            for p in pages:
                with open(p.image_path, "rb") as f:
                    engine.read_image(decode_image(f.read()))
            raw.append(time.perf_counter() - t)
            t = time.perf_counter()
            summary = run_enrich(cat, os.path.join(tmp, f"out{r}"), model_dir=model_dir, threads=threads, config=config)
            pipe.append(time.perf_counter() - t)
            dead = summary["dead_letter"]
    raw_s, pipe_s = float(np.median(raw)), float(np.median(pipe))
    return {
        "images": len(pages),
        "rounds": rounds,
        "raw_loop_secs": raw_s,
        "pipeline_secs": pipe_s,
        "raw_loop_secs_all": [round(x, 2) for x in raw],
        "pipeline_secs_all": [round(x, 2) for x in pipe],
        "pipeline_images_per_s": len(pages) / pipe_s,
        "raw_images_per_s": len(pages) / raw_s,
        "pipeline_vs_raw": raw_s / pipe_s,
        "pipeline_dead_letters": dead,
        "pid": os.getpid(),
        "note": "medians of alternating runs; pipeline time includes pipeline construction, model loading and the Parquet writes",
    }


def _build_candidates(args, ev, cal, names: list[str]) -> tuple[dict, dict | None, list[str], int]:
    """Fine-tune, then build every candidate under ``--work-dir``: (built_info, finetune_info, calibration ids, process id).

    Run in a process of its own (:func:`_in_fresh_process`): inference measured slower, and the
    pipeline ratio lower, in the process that had trained (see benchmarks/README.md).
    """
    import cv2

    built_info: dict = {}
    finetune_info = None
    base = None
    train_pages, dev_pages = _finetune_pages(args, ev, cal) if args.finetune is not False else ([], [])
    if args.finetune and not train_pages:
        raise ConfigError(f"--finetune: no pages of {args.data} are left over for training")
    if train_pages:
        _log(f"fine-tuning the recognizer on {len(train_pages)} pages ({train_pages[0].id}-{train_pages[-1].id}), "
             + (f"dev {len(dev_pages)} ({dev_pages[0].id}-{dev_pages[-1].id})" if dev_pages else "no dev pages"))
        ft = finetune_recognizer(None, train_pages, os.path.join(args.work_dir, "finetuned"), dev_pages=dev_pages,
                                 config=FinetuneConfig(epochs=args.finetune_epochs, threads=args.threads), log=_log)
        finetune_info = {"train_ids": [p.id for p in train_pages], "dev_ids": [p.id for p in dev_pages],
                         "train_lines": ft.train_lines, "dev_lines": ft.dev_lines, "best_epoch": ft.best_epoch,
                         "space_prob": ft.space_prob, "dev_word_f1": ft.dev_word_f1, "history": ft.history,
                         "skipped_lines": ft.skipped_lines, "seconds": ft.seconds}
        base = OcrModelPaths.from_dir(ft.model_dir)
        shipped = build_ocr_candidates(os.path.join(args.work_dir, "shipped"), [], candidates=["fp32"], threads=args.threads, log=_log)
        built_info["fp32_shipped"] = {"model_dir": shipped["fp32"].model_dir, "notes": "shipped weights: " + shipped["fp32"].notes, "agreement": {}}
    if QAT_CANDIDATE in names and not train_pages:
        raise ConfigError(f"{QAT_CANDIDATE} needs training pages: --finetune with pages of --data left over")
    t = time.perf_counter()
    built = build_ocr_candidates(
        args.work_dir,
        [cv2.imread(p.image_path) for p in cal],
        base=base,
        candidates=names,
        max_rec_drop=args.max_rec_drop,
        threads=args.threads,
        calibration_ids=[p.id for p in cal],
        qat_pages=(train_pages, dev_pages),
        qat_config=QatConfig(epochs=args.qat_epochs, threads=args.threads),
        log=_log,
    )
    if QAT_CANDIDATE in built:
        q = built[QAT_CANDIDATE].training
        finetune_info["qat"] = {"train_lines": q["train_lines"], "dev_lines": q["dev_lines"], "space_prob": q["space_prob"],
                                "dev_line_word_f1_simulated_int8": q["dev_line_word_f1"], "history": q["history"], "seconds": q["seconds"]}
    cal_ids_used = [p.id for p in cal]
    built_info.update({n: {"model_dir": b.model_dir, "notes": (("fine-tuned head; " if base else "") + b.notes), "agreement": b.agreement}
                       for n, b in built.items()})
    _log(f"candidates built in {time.perf_counter() - t:.0f}s (process {os.getpid()})")
    return built_info, finetune_info, cal_ids_used, os.getpid()


def _in_fresh_process(fn, *args):
    """``fn(*args)`` in a new Python process (spawned, nothing inherited), its result returned here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ocr", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder in the SROIE layout (img/, box/, text/)")
    ap.add_argument("--json", required=True, help="where to write the figures")
    ap.add_argument("--limit", type=int, default=30, help="evaluation images (default 30)")
    ap.add_argument("--calibration-data", help="calibration images from another SROIE-layout folder")
    ap.add_argument("--n-calibration", type=int, default=20, help="calibration images (default 20)")
    ap.add_argument("--candidates", default=",".join(CANDIDATES + (QAT_CANDIDATE,)),
                    help=f"comma list of {CANDIDATES + (QAT_CANDIDATE,)} ({QAT_CANDIDATE}: needs the fine-tuning pages)")
    ap.add_argument("--no-stock", action="store_true", help="skip the stock RapidOCR engine")
    ap.add_argument("--no-tesseract", action="store_true", help="skip Tesseract")
    ap.add_argument("--threads", type=int, default=2, help="threads per system (default 2)")
    ap.add_argument("--work-dir", default="out/models/ocr", help="where candidate models are built (not committed)")
    ap.add_argument("--reuse-models", action="store_true", help="reuse candidates already in --work-dir")
    ap.add_argument("--report-dir", default="benchmarks/results/ocr", help="report.html/json + PNG")
    ap.add_argument("--latency-budget-s", type=float, default=0.5, help="per-image p50 budget for the choice")
    ap.add_argument("--max-word-f1-drop", type=float, default=0.01, help="allowed word-F1 drop vs fp32 for the choice")
    ap.add_argument("--max-rec-drop", type=float, default=0.01, help="recognizer agreement budget of the mixed candidate")
    ap.add_argument("--pipeline-images", type=int, default=30, help="images for the pipeline-vs-raw-loop ratio (0: skip; the pipeline's start-up, a few seconds, weighs on fewer)")
    ap.add_argument("--pipeline-rounds", type=int, default=3, help="alternating raw/pipeline timings (medians compared)")
    ap.add_argument("--pipeline-only", metavar="CANDIDATE",
                    help="only re-measure the pipeline ratio with this built candidate (in --work-dir) and update the 'pipeline' entry of --json")
    ap.add_argument("--config", default="{}", help="JSON overrides of the engine's OcrConfig")
    ap.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=None,
                    help="fine-tune the recognizer's head on the pages of --data left over, and build the candidates from it "
                         "(default: when pages are left over)")
    ap.add_argument("--finetune-dev", type=int, default=50, help="of the pages left over, this many pick the epoch and the space threshold")
    ap.add_argument("--finetune-epochs", type=int, default=FinetuneConfig().epochs)
    ap.add_argument("--qat-epochs", type=int, default=QatConfig().epochs, help=f"quantization-aware training of {QAT_CANDIDATE}")
    args = ap.parse_args(argv)

    config = BENCH_CONFIG.replace(**json.loads(args.config))
    names = [c for c in args.candidates.split(",") if c]
    ev, cal = _pages(args)
    if args.pipeline_only:
        model_dir = os.path.join(args.work_dir, args.pipeline_only)
        if not os.path.isfile(os.path.join(model_dir, "rec.onnx")):
            raise ConfigError(f"no candidate {args.pipeline_only!r} under {args.work_dir}: build it with a full run first")
        pipeline = _pipeline_ratio(model_dir, ev[: args.pipeline_images], args.threads, config, args.pipeline_rounds)
        out = json.loads(pathlib.Path(args.json).read_text(encoding="utf-8")) if os.path.isfile(args.json) else {}
        out["pipeline"] = {**pipeline, "candidate": args.pipeline_only, "load_average": os.getloadavg()}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2, default=str)
        print(f"pipeline/raw throughput ({args.pipeline_only}): {pipeline['pipeline_vs_raw']:.2f}")
        return 0
    if not args.no_tesseract and shutil.which("tesseract") is None:  # found out now, not after the fine-tuning and the builds
        raise ConfigError("the Tesseract baseline needs the tesseract binary (Debian: apt-get install tesseract-ocr); "
                          "or pass --no-tesseract")
    _log(f"{len(ev)} evaluation images, {len(cal)} calibration images; threads={args.threads}")

    import cv2

    finetune_info = build_pid = None
    record_path = os.path.join(args.work_dir, "candidates.json")
    if args.reuse_models and os.path.isfile(record_path) and all(os.path.isfile(os.path.join(args.work_dir, n, "rec.onnx")) for n in names):
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
        overlap = set(record.get("calibration_ids", [])) & {p.id for p in ev}
        if overlap:
            raise ConfigError(f"the reused candidates were calibrated on evaluation images {sorted(overlap)}; rebuild them")
        cal_ids_used = record.get("calibration_ids", [])
        built_info = {n: {**record["candidates"][n], "model_dir": os.path.join(args.work_dir, n)} for n in names}
        _log(f"reusing candidates from {args.work_dir} (calibrated on {cal_ids_used})")
    else:
        # training and building in a child process: the measuring process stays an inference-only one, as a job is
        built_info, finetune_info, cal_ids_used, build_pid = _in_fresh_process(_build_candidates, args, ev, cal, names)

    systems = {}
    if not args.no_stock:
        systems["fp32_stock"] = _Stock(args.threads)
    for n in (["fp32_shipped"] if "fp32_shipped" in built_info else []) + names:
        systems[n] = _Ours(built_info[n]["model_dir"], args.threads, config)
    if not args.no_tesseract:
        systems["tesseract"] = _Tesseract(args.threads)

    counts = {s: [] for s in systems}
    secs = {s: [] for s in systems}
    order = list(systems)
    for k, page in enumerate(ev):
        image = cv2.imread(page.image_path)
        rot = order[k % len(order):] + order[: k % len(order)]
        for s in rot:
            t = time.perf_counter()
            pred = systems[s](page.image_path, image)
            secs[s].append(time.perf_counter() - t)
            counts[s].append(page_counts(pred, page))
        _log(f"page {k + 1}/{len(ev)} {page.id}: " + " ".join(f"{s}={secs[s][-1]:.2f}s" for s in order))

    figures = {}
    results = []
    for s in systems:
        m = aggregate(counts[s])
        ts = np.asarray(secs[s])
        fig = {
            **{k: round(v, 4) for k, v in m.items()},
            "secs_per_image": round(float(ts.mean()), 4),
            "secs_per_image_p50": round(float(np.percentile(ts, 50)), 4),
            "secs_per_image_p95": round(float(np.percentile(ts, 95)), 4),
            "images_per_s": round(float(len(ts) / ts.sum()), 4),
            # sampling error over the pages, and the paired difference to the fine-tuned FP32 reading the same pages
            "word_f1_ci95": [round(x, 4) for x in word_f1_interval(counts[s])],
        }
        if "fp32" in counts and s != "fp32":
            fig["word_f1_minus_fp32_ci95"] = [round(x, 4) for x in word_f1_interval(counts[s], counts["fp32"])]
        if s in built_info:
            d = built_info[s]["model_dir"]
            fig["size_bytes"] = sum(file_size(f) for f in OcrModelPaths.from_dir(d) if f)  # the models the engine loads from the folder
            fig["notes"] = built_info[s]["notes"]
            fig["agreement_with_fp32"] = built_info[s]["agreement"]
        figures[s] = fig
        results.append(
            CandidateResult(
                name=s,
                model_path=built_info.get(s, {}).get("model_dir", s),
                size_bytes=int(fig.get("size_bytes", 0)),
                metrics={k: fig[k] for k in ("word_f1", "cer", "word_f1_nospace", "det_recall", "det_precision", "line_cer")},
                latency_ms_p50=fig["secs_per_image_p50"] * 1000,
                latency_ms_p95=fig["secs_per_image_p95"] * 1000,
                throughput_per_s=fig["images_per_s"],
                notes=fig.get("notes", "baseline" if s in ("fp32_stock", "tesseract") else ""),
            )
        )

    choosable = [r for r in results if r.name in names]
    chosen, choice_note = None, ""
    if choosable:
        kwargs = {"metric": "word_f1", "latency_key": "latency_ms_p50"}
        if "fp32" in names:
            kwargs["max_accuracy_drop"] = args.max_word_f1_drop
        try:
            chosen = choose_candidate(choosable, latency_budget_ms=args.latency_budget_s * 1000, **kwargs)
            choice_note = "meets the accuracy-drop and latency budgets"
        except AisleError as e:
            choice_note = f"latency budget missed: {e}"
            try:
                chosen = choose_candidate(choosable, **kwargs)
            except AisleError as e2:
                choice_note += f"; accuracy budget missed too: {e2}"
                chosen = max(choosable, key=lambda r: r.metrics["word_f1"])
    pipeline = None
    if chosen is not None and args.pipeline_images > 0:
        _log(f"pipeline vs raw loop on {min(args.pipeline_images, len(ev))} images with {chosen.name}")
        # in a process of its own, as a job runs: not in this one, which holds every system's models
        pipeline = _in_fresh_process(_pipeline_ratio, built_info[chosen.name]["model_dir"], ev[: args.pipeline_images], args.threads, config,
                                     args.pipeline_rounds)

    context = {
        "data": os.path.abspath(args.data),
        "evaluation_ids": [p.id for p in ev],
        "calibration_ids": cal_ids_used,
        "threads": args.threads,
        "engine_config": config.__dict__,
        "latency_budget_s": args.latency_budget_s,
        "max_word_f1_drop": args.max_word_f1_drop,
        "choice": choice_note,
        "finetune": finetune_info,
        "cpu": cpu_info(),
        "load_average": os.getloadavg(),
        # the systems are measured in this process, which never trains (the candidates are built in another one)
        "processes": {"measured": os.getpid(), "built": build_pid},
        "metrics": "components.ocr_eval: word_f1 = page bag of whitespace words (upper-cased); cer = page whitespace-free reading-order CER (upper-cased); *_cased = case-sensitive",
    }
    report = write_report(results, chosen, args.report_dir, title="OCR candidates on SROIE", metric="word_f1", context={**context, "pipeline": pipeline})
    out = {
        "chosen": chosen.name if chosen else None,
        "systems": figures,
        "pipeline": pipeline,
        "report": report,
        **context,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2, default=str)
    for s, fig in figures.items():
        vs = fig.get("word_f1_minus_fp32_ci95")
        print(f"{s:14s} word_f1={fig['word_f1']:.3f} [{fig['word_f1_ci95'][0]:.3f}, {fig['word_f1_ci95'][1]:.3f}] cer={fig['cer']:.3f} "
              f"nospaceF1={fig['word_f1_nospace']:.3f} det_R={fig['det_recall']:.3f} {fig['secs_per_image']:.2f} s/img"
              + (f" vs fp32 [{vs[0]:+.3f}, {vs[1]:+.3f}]" if vs else ""))
    print(f"chosen: {out['chosen']} ({choice_note})")
    if pipeline:
        print(f"pipeline/raw throughput: {pipeline['pipeline_vs_raw']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

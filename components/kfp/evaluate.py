"""KFP component ``evaluate``: measure every candidate of a model family and choose one.

All candidates run on the same held-out data (accuracy metric, p50/p95
latency per call, throughput, size); ``components.candidates.choose_candidate``
picks the fastest that stays within ``max_drop`` of the reference
candidate, above ``accuracy_floor`` and under ``latency_budget_ms``
(negative / zero: no such constraint). The report (table of every
candidate + accuracy-vs-latency plot) is the HTML artifact; every
candidate's figures are logged as metrics; the chosen serving folder is
the Model artifact that ``register`` takes. No candidate meeting the
constraints fails the step, naming the closest miss: nothing is
registered.
"""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.kfp.images import AISLE_IMAGE


@dsl.component(base_image=AISLE_IMAGE, install_kfp_package=False)
def evaluate(
    family: str,
    candidates: Input[Model],
    heldout: Input[Dataset],
    chosen: Output[Model],
    report: Output[HTML],
    metrics: Output[Metrics],
    metric: str = "",
    max_drop: float = -1.0,
    accuracy_floor: float = -1.0,
    latency_budget_ms: float = 0.0,
    repeats: int = 10,
    threads: int = 1,
) -> str:
    """Evaluate ``family`` ("ner", "recommender", "ocr") candidates; returns the chosen candidate's name."""
    import base64
    import json
    import os
    import tempfile

    from components.candidates import choose_candidate, write_report
    from components.kfp._common import check_choice, log_metrics
    from components.kfp._evaluate import FAMILIES, materialize, measure

    check_choice("family", family, sorted(FAMILIES))
    spec = FAMILIES[family]
    metric = metric or spec.metric
    manifest = json.load(open(os.path.join(candidates.path, "candidates.json")))
    reference = manifest.get("reference", "fp32")
    results = measure(family, candidates.path, heldout.path, repeats=repeats, threads=threads)
    constraints = {
        "metric": metric,
        "max_accuracy_drop": max_drop if max_drop >= 0 else None,
        "accuracy_floor": accuracy_floor if accuracy_floor >= 0 else None,
        "latency_budget_ms": latency_budget_ms if latency_budget_ms > 0 else None,
        "reference": reference,
    }
    for r in results:
        log_metrics(metrics, {"metrics": r.metrics, "latency_ms_p50": r.latency_ms_p50, "latency_ms_p95": r.latency_ms_p95,
                              "throughput_per_s": r.throughput_per_s, "size_mb": r.size_bytes / 2**20}, prefix=f"{r.name}.")
    with tempfile.TemporaryDirectory(prefix="aisle-report-") as work:  # the report is inlined into one HTML file
        try:
            best = choose_candidate(results, higher_is_better=spec.higher_is_better, **constraints)
        except Exception:
            write_report(results, None, work, title=f"{family} candidates (none met the constraints)", metric=metric,
                         context={"constraints": constraints})
            os.makedirs(os.path.dirname(report.path), exist_ok=True)
            with open(os.path.join(work, "report.html")) as fh, open(report.path, "w") as out:
                out.write(fh.read())
            raise
        paths = write_report(results, best, work, title=f"{family} candidates", metric=metric, context={"constraints": constraints, "family": family})
        with open(paths["png"], "rb") as fh:
            png = base64.b64encode(fh.read()).decode()
        with open(paths["html"]) as fh:
            html = fh.read().replace(f"src='{os.path.basename(paths['png'])}'", f"src='data:image/png;base64,{png}'")
    os.makedirs(os.path.dirname(report.path), exist_ok=True)
    with open(report.path, "w") as fh:
        fh.write(html)

    extra = materialize(family, candidates.path, best.name, chosen.path)
    chosen.metadata.update(
        {
            "family": family,
            "candidate": best.name,
            "metric": metric,
            "metrics": {**best.metrics, "latency_ms_p50": best.latency_ms_p50, "latency_ms_p95": best.latency_ms_p95,
                        "throughput_per_s": best.throughput_per_s, "size_bytes": float(best.size_bytes)},
            "candidates": [r.name for r in results],
            **extra,
        }
    )
    log_metrics(metrics, {"metrics": best.metrics, "latency_ms_p95": best.latency_ms_p95, "throughput_per_s": best.throughput_per_s},
                prefix="chosen.")
    return best.name

"""Model candidates: measure them, choose one, and write a report a person can read.

Framework-agnostic: a candidate is a model file plus the figures measured on
it. The OCR, NER and recommendation stages all use the same four steps::

    results = evaluate_candidates(
        {"fp32": "m.onnx", "int8": "m.int8.onnx"},
        score=lambda path: {"f1": my_eval(path)},           # accuracy on held-out data
        make_runner=lambda path: my_batch_runner(path),     # zero-arg callable, one batch
        items_per_call=32,
    )
    chosen = choose_candidate(results, metric="f1", max_accuracy_drop=0.01,
                              latency_budget_ms=50.0)
    write_report(results, chosen, "out/report", title="NER candidates", metric="f1")

``measure_latency`` and ``choose_candidate`` are usable alone when a stage
measures in its own way (e.g. the OCR benchmark, which times whole pages).

>>> ticks = iter(range(100))
>>> measure_latency(lambda: None, warmup=0, repeats=3, clock=lambda: next(ticks) / 1000.0)["p50_ms"]
1.0
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import pathlib
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from transforms.errors import AisleError, ConfigError

__all__ = [
    "CandidateResult",
    "measure_latency",
    "evaluate_candidates",
    "choose_candidate",
    "write_report",
    "cpu_info",
    "file_size",
]


@dataclass
class CandidateResult:
    """The measured figures of one candidate model.

    ``metrics`` holds accuracy figures by name (``{"f1": 0.91, "cer": 0.05}``);
    latencies are per call of the candidate's runner (one batch), in
    milliseconds; ``throughput_per_s`` is items (not calls) per second.
    """

    name: str
    model_path: str
    size_bytes: int
    metrics: dict[str, float]
    latency_ms_p50: float
    latency_ms_p95: float
    throughput_per_s: float
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]) of sorted values."""
    if not sorted_values:
        raise ConfigError("percentile of no values: measure at least one repeat")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac)


def measure_latency(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    repeats: int = 20,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns ``{"p50_ms", "p95_ms", "mean_ms", "min_ms", "repeats"}``; ``clock``
    returns seconds (pass a fake in tests).
    """
    if repeats < 1:
        raise ConfigError(f"repeats={repeats}: measure at least 1 repeat")
    if warmup < 0:
        raise ConfigError(f"warmup={warmup}: must be >= 0")
    for _ in range(warmup):
        fn()
    times_ms = []
    for _ in range(repeats):
        start = clock()
        fn()
        times_ms.append((clock() - start) * 1000.0)
    times_ms.sort()
    return {
        "p50_ms": _percentile(times_ms, 50),
        "p95_ms": _percentile(times_ms, 95),
        "mean_ms": sum(times_ms) / len(times_ms),
        "min_ms": times_ms[0],
        "repeats": repeats,
    }


def file_size(path: str) -> int:
    """Size in bytes of a model file or of every file under a model directory."""
    p = pathlib.Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    if p.exists():
        return p.stat().st_size
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def evaluate_candidates(
    models: Mapping[str, str],
    *,
    score: Callable[[str], Mapping[str, float]],
    make_runner: Callable[[str], Callable[[], object]],
    items_per_call: int = 1,
    warmup: int = 2,
    repeats: int = 20,
    clock: Callable[[], float] = time.perf_counter,
    notes: Mapping[str, str] | None = None,
) -> list[CandidateResult]:
    """Run every candidate on the same held-out data and time the same batch.

    ``models`` maps candidate name to model path; ``score(path)`` returns the
    accuracy metrics on the held-out data; ``make_runner(path)`` returns a
    zero-argument callable that runs one batch of ``items_per_call`` items
    (model loading belongs in ``make_runner``, not in the timed call).
    """
    if not models:
        raise ConfigError("evaluate_candidates got no models: pass {name: path}")
    if items_per_call < 1:
        raise ConfigError(f"items_per_call={items_per_call}: must be >= 1")
    results = []
    for name, path in models.items():
        metrics = {k: float(v) for k, v in score(path).items()}
        timing = measure_latency(make_runner(path), warmup=warmup, repeats=repeats, clock=clock)
        results.append(
            CandidateResult(
                name=name,
                model_path=str(path),
                size_bytes=file_size(path),
                metrics=metrics,
                latency_ms_p50=timing["p50_ms"],
                latency_ms_p95=timing["p95_ms"],
                throughput_per_s=items_per_call * 1000.0 / timing["mean_ms"] if timing["mean_ms"] > 0 else math.inf,
                notes=(notes or {}).get(name, ""),
            )
        )
    return results


def _drop(value: float, reference: float, higher_is_better: bool) -> float:
    """How much worse ``value`` is than ``reference`` (positive = worse)."""
    return reference - value if higher_is_better else value - reference


def choose_candidate(
    results: Sequence[CandidateResult],
    *,
    metric: str,
    accuracy_floor: float | None = None,
    max_accuracy_drop: float | None = None,
    reference: str = "fp32",
    latency_budget_ms: float | None = None,
    latency_key: str = "latency_ms_p95",
    higher_is_better: bool = True,
) -> CandidateResult:
    """The fastest candidate (highest throughput) that meets every constraint.

    * ``accuracy_floor``: ``metrics[metric]`` must be >= it (<= when
      ``higher_is_better`` is False, e.g. for an error rate);
    * ``max_accuracy_drop``: at most this much worse than the ``reference``
      candidate, in the metric's own units;
    * ``latency_budget_ms``: ``getattr(result, latency_key)`` must be <= it.

    Raises AisleError naming the closest miss when no candidate qualifies.
    """
    if not results:
        raise ConfigError("choose_candidate got no results")
    for r in results:
        if metric not in r.metrics:
            raise ConfigError(f"candidate {r.name!r} has no metric {metric!r} (it has {sorted(r.metrics)})")
        if not hasattr(r, latency_key):
            raise ConfigError(f"latency_key={latency_key!r} is not a CandidateResult field")
    ref_value = None
    if max_accuracy_drop is not None:
        refs = [r for r in results if r.name == reference]
        if not refs:
            raise ConfigError(
                f"max_accuracy_drop needs the reference candidate {reference!r}; "
                f"candidates are {[r.name for r in results]}"
            )
        ref_value = refs[0].metrics[metric]

    def misses(r: CandidateResult) -> list[tuple[str, float]]:
        """(reason, normalised shortfall) for each constraint ``r`` misses."""
        out = []
        value = r.metrics[metric]
        if accuracy_floor is not None:
            short = _drop(value, accuracy_floor, higher_is_better)
            if short > 0:
                cmp = ">=" if higher_is_better else "<="
                out.append((f"{metric}={value:.4g} not {cmp} floor {accuracy_floor:.4g}", short / max(abs(accuracy_floor), 1e-9)))
        if ref_value is not None:
            d = _drop(value, ref_value, higher_is_better)
            if d > max_accuracy_drop + 1e-12:
                out.append(
                    (f"{metric} drop {d:.4g} vs {reference} > {max_accuracy_drop:.4g}", (d - max_accuracy_drop) / max(abs(ref_value), 1e-9))
                )
        if latency_budget_ms is not None:
            lat = getattr(r, latency_key)
            if lat > latency_budget_ms:
                out.append((f"{latency_key}={lat:.4g} ms > budget {latency_budget_ms:.4g} ms", (lat - latency_budget_ms) / latency_budget_ms))
        return out

    passing = [r for r in results if not misses(r)]
    if passing:
        return max(passing, key=lambda r: (r.throughput_per_s, -getattr(r, latency_key)))
    closest = min(results, key=lambda r: sum(s for _, s in misses(r)))
    reasons = "; ".join(reason for reason, _ in misses(closest))
    raise AisleError(
        f"no candidate meets the constraints; the closest is {closest.name!r}: {reasons}. "
        "Relax the accuracy floor / drop or the latency budget, or add a candidate."
    )


def cpu_info() -> dict:
    """The CPU facts that quantized-model figures depend on (model, cores, SIMD flags)."""
    info = {"machine": platform.machine(), "cpu_count": os.cpu_count(), "model_name": platform.processor()}
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["model_name"] = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
    info["flags"] = [f for f in wanted if f in flags]
    try:
        info["affinity_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return info


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def _plot(results: Sequence[CandidateResult], chosen: CandidateResult | None, path: pathlib.Path, *, title: str, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for r in results:
        is_chosen = chosen is not None and r.name == chosen.name
        ax.scatter(
            r.latency_ms_p50,
            r.metrics.get(metric, float("nan")),
            s=40 + r.size_bytes / 2**20 * 4,
            marker="*" if is_chosen else "o",
            color="tab:red" if is_chosen else "tab:blue",
            zorder=3,
        )
        ax.annotate(r.name, (r.latency_ms_p50, r.metrics.get(metric, float("nan"))), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("latency p50 (ms per call)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(
    results: Sequence[CandidateResult],
    chosen: CandidateResult | None,
    out_dir: str,
    *,
    title: str,
    metric: str,
    context: Mapping | None = None,
) -> dict[str, str]:
    """Write ``report.json``, ``report.html`` (every candidate) and ``accuracy_vs_latency.png``.

    ``context`` is recorded as-is (constraints, data set, CPU flags: the
    CPU facts of :func:`cpu_info` are added when absent). Returns the three
    paths by key ``json``, ``html``, ``png``.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = dict(context or {})
    ctx.setdefault("cpu", cpu_info())
    paths = {"json": out / "report.json", "html": out / "report.html", "png": out / "accuracy_vs_latency.png"}
    payload = {
        "title": title,
        "metric": metric,
        "chosen": chosen.name if chosen else None,
        "candidates": [r.to_dict() for r in results],
        "context": ctx,
    }
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, paths["json"])

    _plot(results, chosen, paths["png"], title=title, metric=metric)

    metric_names = sorted({k for r in results for k in r.metrics})
    head = ["candidate", *metric_names, "p50 ms", "p95 ms", "items/s", "size MB", "notes"]
    rows = []
    for r in results:
        cells = [r.name, *(_fmt(r.metrics.get(m, "")) for m in metric_names), _fmt(r.latency_ms_p50), _fmt(r.latency_ms_p95),
                 _fmt(r.throughput_per_s), f"{r.size_bytes / 2**20:.2f}", r.notes]
        style = ' style="font-weight:bold;background:#fde"' if chosen is not None and r.name == chosen.name else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,td:last-child{text-align:left}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>Chosen: <b>{html.escape(chosen.name) if chosen else 'none'}</b> (metric: {html.escape(metric)})</p>"
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
        f"<p><img src='{paths['png'].name}' alt='accuracy vs latency'></p>"
        f"<pre>{html.escape(json.dumps(ctx, indent=2, sort_keys=True, default=str))}</pre>"
        "</body></html>"
    )
    paths["html"].write_text(doc, encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}

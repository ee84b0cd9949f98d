"""The shared candidate toolkit: latency measurement, choice under constraints, reports."""

from __future__ import annotations

import itertools
import json

import pytest

from components.candidates import (
    CandidateResult,
    choose_candidate,
    cpu_info,
    evaluate_candidates,
    measure_latency,
    write_report,
)
from transforms.errors import AisleError, ConfigError


def _fake_clock(step_s: float):
    counter = itertools.count()
    return lambda: next(counter) * step_s


def _r(name, f1, p95, thr, size=1000):
    return CandidateResult(name, f"/m/{name}.onnx", size, {"f1": f1, "cer": 1 - f1}, p95 * 0.8, p95, thr)


RESULTS = [
    _r("fp32", 0.90, 100.0, 10.0),
    _r("fp16", 0.90, 120.0, 8.0),
    _r("int8_dynamic", 0.80, 40.0, 25.0),
    _r("int8_static", 0.885, 50.0, 20.0),
    _r("mixed", 0.895, 60.0, 16.0),
]


def test_measure_latency_with_fake_clock():
    calls = []
    out = measure_latency(lambda: calls.append(1), warmup=3, repeats=5, clock=_fake_clock(0.002))
    assert len(calls) == 8
    # each timed call spans exactly one clock tick of 2 ms
    assert out["p50_ms"] == pytest.approx(2.0)
    assert out["p95_ms"] == pytest.approx(2.0)
    assert out["mean_ms"] == pytest.approx(2.0)


def test_measure_latency_percentiles_from_varying_durations():
    durations = iter([0.001 * d for d in range(1, 21)])  # 1..20 ms
    state = {"t": 0.0, "in": False}

    def clock():
        if state["in"]:
            state["t"] += next(durations)
        state["in"] = not state["in"]
        return state["t"]

    out = measure_latency(lambda: None, warmup=0, repeats=20, clock=clock)
    assert out["p50_ms"] == pytest.approx(10.5)
    assert out["p95_ms"] == pytest.approx(19.05)
    assert out["min_ms"] == pytest.approx(1.0)


def test_measure_latency_rejects_zero_repeats():
    with pytest.raises(ConfigError, match="repeats=0"):
        measure_latency(lambda: None, repeats=0)


def test_choose_fastest_meeting_drop_budget():
    chosen = choose_candidate(RESULTS, metric="f1", max_accuracy_drop=0.02)
    assert chosen.name == "int8_static"  # int8_dynamic is faster but drops 0.10


def test_choose_with_floor_and_latency_budget():
    assert choose_candidate(RESULTS, metric="f1", accuracy_floor=0.89, latency_budget_ms=70).name == "mixed"
    assert choose_candidate(RESULTS, metric="f1").name == "int8_dynamic"


def test_choose_lower_is_better_metric():
    chosen = choose_candidate(RESULTS, metric="cer", accuracy_floor=0.105, higher_is_better=False)
    assert chosen.name == "mixed"


def test_choose_names_closest_miss():
    # int8_static misses the floor by 0.005 (0.6%); mixed misses the budget by 5 ms (9%)
    with pytest.raises(AisleError, match=r"closest is 'int8_static': f1=0.885 not >= floor 0.89"):
        choose_candidate(RESULTS, metric="f1", accuracy_floor=0.89, latency_budget_ms=55)


def test_choose_checks_arguments():
    with pytest.raises(ConfigError, match="no metric 'wer'"):
        choose_candidate(RESULTS, metric="wer")
    with pytest.raises(ConfigError, match="reference candidate 'base'"):
        choose_candidate(RESULTS, metric="f1", max_accuracy_drop=0.1, reference="base")


def test_evaluate_candidates_scores_and_times_each(tmp_path):
    models = {}
    for name, size in (("a", 10), ("b", 30)):
        p = tmp_path / f"{name}.bin"
        p.write_bytes(b"x" * size)
        models[name] = str(p)
    scored = []
    results = evaluate_candidates(
        models,
        score=lambda path: scored.append(path) or {"acc": 0.5 if path.endswith("a.bin") else 0.7},
        make_runner=lambda path: (lambda: None),
        items_per_call=4,
        warmup=0,
        repeats=3,
        clock=_fake_clock(0.010),
    )
    assert scored == [models["a"], models["b"]]
    assert [r.name for r in results] == ["a", "b"]
    assert [r.size_bytes for r in results] == [10, 30]
    assert results[1].metrics == {"acc": 0.7}
    assert results[0].latency_ms_p50 == pytest.approx(10.0)
    assert results[0].throughput_per_s == pytest.approx(400.0)


def test_write_report(tmp_path):
    chosen = choose_candidate(RESULTS, metric="f1", max_accuracy_drop=0.02)
    paths = write_report(RESULTS, chosen, str(tmp_path / "rep"), title="Test <candidates>", metric="f1", context={"data": "tiny"})
    data = json.loads(open(paths["json"]).read())
    assert data["chosen"] == "int8_static"
    assert [c["name"] for c in data["candidates"]] == [r.name for r in RESULTS]
    assert data["context"]["data"] == "tiny" and "flags" in data["context"]["cpu"]
    page = open(paths["html"]).read()
    assert "Test &lt;candidates&gt;" in page
    for r in RESULTS:
        assert f"<td>{r.name}</td>" in page
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cpu_info_lists_flags():
    info = cpu_info()
    assert info["cpu_count"] >= 1
    assert isinstance(info["flags"], list)

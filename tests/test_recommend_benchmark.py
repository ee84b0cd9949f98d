"""The benchmark's two-file interface on hand-written CSVs (tiny model; the real run is `python -m benchmarks.recommend`)."""

from __future__ import annotations

import json
import tempfile

import pytest

pytest.importorskip("tensorflow")

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\r\n"


def _csv(path, baskets, month):
    lines = [HEADER]
    for n, items in enumerate(baskets):
        for code in items:
            lines.append(f"{month}{n:03d},{code},ITEM {code},1,2011-{month:02d}-{1 + n % 27:02d} 10:00:00,1.0,{12000 + n % 7}.0,United Kingdom\r\n")
    lines.append(f"C{month}999,10001,ITEM,-1,2011-{month:02d}-02 10:00:00,1.0,12000.0,United Kingdom\r\n")
    path.write_text("".join(lines))
    return str(path)


def test_train_eval_files_give_every_model_its_metrics(tmp_path, monkeypatch):
    from benchmarks.recommend import main

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    pattern = [("10001", "10002", "10003"), ("10004", "10005"), ("10001", "10002"), ("10004", "10005", "10006")]
    train = _csv(tmp_path / "train.csv", pattern * 15, 3)
    evaluation = _csv(tmp_path / "eval.csv", pattern * 3, 8)
    out = tmp_path / "r.json"
    assert main(["--train", train, "--eval", evaluation, "--json", str(out), "--report-dir", str(tmp_path / "report"),
                 "--epochs", "2", "--dim", "8", "--scale-items", "300", "--repeats", "1"]) == 0
    result = json.loads(out.read_text())
    names = {"popularity", "cooccurrence", "cosine_cooccurrence", "cosine_cooccurrence_recency", "ease",
             "fp32", "tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_int8"}
    assert names <= set(result["results"])
    for name in names:
        r = result["results"][name]
        assert 0.0 <= r["recall@10"] <= 1.0 and 0.0 <= r["ndcg@10"] <= r["recall@10"] and 0.0 < r["coverage@10"] <= 1.0
    # 5-6 distinct items: the hidden one is always in a top-10 of a model that ranks every other item
    assert result["results"]["cosine_cooccurrence"]["recall@10"] == 1.0
    assert result["data"]["queries"] == 12 and result["chosen"] in names
    assert result["similar_items_scale"]["items"] == 300
    assert (tmp_path / "report" / "report.html").exists()
    assert list(scratch.glob("aisle-*")) == []  # the models went to a temporary folder, removed when scored


@pytest.mark.parametrize("same_catalog", [False, True])
def test_synthesized_copies_are_distinct_events(tmp_path, same_catalog):
    import csv

    from benchmarks.ingest import synthesize

    src = _csv(tmp_path / "src.csv", [("10001", "10002"), ("10003",)], 3)
    with open(src, newline="") as f:
        original = list(csv.DictReader(f))
    with open(synthesize(src, 3, str(tmp_path / "x3.csv"), same_catalog=same_catalog), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(original)
    assert len({r["InvoiceNo"] for r in rows}) == 3 * len({r["InvoiceNo"] for r in original})  # no invoice shared by copies
    assert {r["InvoiceNo"][0] == "C" for r in rows if r["Quantity"].startswith("-")} == {True}  # cancellations stay cancellations
    assert len({r["CustomerID"] for r in rows}) == 3 * len({r["CustomerID"] for r in original})
    codes, original_codes = {r["StockCode"] for r in rows}, {r["StockCode"] for r in original}
    if same_catalog:
        assert codes == original_codes
    else:
        assert original_codes < codes and len(codes) == 3 * len(original_codes)

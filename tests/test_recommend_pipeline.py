"""The recommend pipeline end to end on a toy event set, with a tiny model trained in the test."""

from __future__ import annotations

import glob
import json
import os

import pyarrow.parquet as pq
import pytest

pytest.importorskip("tensorflow")

from components.recommend_model import TrainConfig, export_model, train_item_model  # noqa: E402
from components.recommend_quantize import convert_tflite  # noqa: E402
from transforms.records import (  # noqa: E402
    Product,
    ProductDetail,
    ProductRef,
    PurchaseTransaction,
    UserEvent,
    to_arrow,
)
from transforms.recommend_vocab import ItemVocab  # noqa: E402

from tests.recommend_toy import GROUPS, companions, toy_baskets, toy_times, variants  # noqa: E402


def _events():
    """The planted-pattern baskets as purchase events, plus a visitor who bought only an unknown product."""
    baskets = toy_baskets()
    events = [
        UserEvent(
            eventType="purchase-complete",
            visitorId=visitor,
            eventTime=t,
            productDetails=tuple(ProductDetail(ProductRef(i), 1) for i in items),
            purchaseTransaction=PurchaseTransaction(revenue=10.0, currencyCode="GBP", id=f"t{n}"),
        )
        for n, ((visitor, items), t) in enumerate(zip(baskets, toy_times(len(baskets))))
    ]
    t0 = toy_times(1)[0]
    # the unknown product is alone in its basket; POST is not a product and is dropped
    events.append(
        UserEvent(
            eventType="purchase-complete",
            visitorId="v-cold",
            eventTime=t0,
            productDetails=(ProductDetail(ProductRef("99999"), 1), ProductDetail(ProductRef("POST"), 1)),
            purchaseTransaction=PurchaseTransaction(revenue=5.0, currencyCode="GBP", id="t-cold"),
        )
    )
    events.append(UserEvent(eventType="detail-page-view", visitorId="v-view", eventTime=t0))
    return events


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    events = _events()
    (root / "events").mkdir()
    (root / "products").mkdir()
    pq.write_table(to_arrow(events, UserEvent), root / "events" / "part-0.parquet")
    catalog = [Product(id=i, title=f"group {('alpha', 'bravo', 'charlie', 'delta')[int(g) - 1]} item {i}") for g in GROUPS for i in companions(g) + variants(g)]
    catalog += [Product(id="55555", title="brand new thing"), Product(id="66666", title="charlie novelty")]
    pq.write_table(to_arrow(catalog, Product), root / "products" / "part-0.parquet")
    from components.recommend_data import read_event_baskets

    baskets = [b.items for b in read_event_baskets(str(root / "events"))]
    vocab = ItemVocab.build(baskets)
    trained = train_item_model(baskets, vocab, TrainConfig(dim=8, epochs=15, batch_size=64, learning_rate=0.02, max_query_items=8))
    paths = export_model(trained, str(root / "model"))
    queries = [vocab.encode(b[1:]) for b in baskets]
    convert_tflite(paths["saved_model"], str(root / "model" / "model_int8.tflite"), mode="int8",
                   representative_queries=queries, max_query_items=8)
    return root, events, catalog, vocab


def _read(folder):
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "part*.parquet"))):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


@pytest.mark.parametrize("engine", ["saved_model", "tflite"])
def test_pipeline_writes_every_item_and_visitor_once(toy, tmp_path, engine):
    from pipelines.recommend import run

    root, events, catalog, vocab = toy
    out = tmp_path / "out"
    summary = run(events=str(root / "events"), catalog=str(root / "products"), out_dir=str(out),
                  model_dir=str(root / "model"), engine=engine, k=3, echo=lambda *_: None)
    items = {p.id for p in catalog} | {"99999"}
    visitors = {e.visitorId for e in events if e.eventType == "purchase-complete"}
    for name in ("similar_items", "frequently_bought_together"):
        rows = _read(out / name)
        assert sorted(r["key"] for r in rows) == sorted(items), name
        by_key = {r["key"]: r for r in rows}
        for cold in ("55555", "99999") + (() if name == "similar_items" else ("66666",)):
            assert by_key[cold]["fallback"] == "popularity"
            assert len(by_key[cold]["results"]) == 3
            assert cold not in [x["id"] for x in by_key[cold]["results"]]
        if name == "similar_items":  # a cold product with a title like known ones gets those
            assert by_key["66666"]["fallback"] == "title"
            assert {x["id"] for x in by_key["66666"]["results"]} <= set(companions("3") + variants("3"))
        for g in GROUPS:
            for v in variants(g):
                top = by_key[v]["results"][0]["id"]
                assert by_key[v]["fallback"] is None
                if name == "similar_items":
                    assert top == ({*variants(g)} - {v}).pop(), (v, by_key[v]["results"])
                else:
                    assert top in companions(g), (v, by_key[v]["results"])
    rfy = _read(out / "recommended_for_you")
    assert sorted(r["key"] for r in rfy) == sorted(visitors)
    by_visitor = {r["key"]: r for r in rfy}
    assert by_visitor["v-cold"]["fallback"] == "popularity"
    warm = [r for r in rfy if r["key"] != "v-cold"]
    assert all(r["fallback"] is None and r["results"] for r in warm)
    bought: dict[str, set] = {}
    for e in events:
        if e.eventType == "purchase-complete":
            bought.setdefault(e.visitorId, set()).update(d.product.id for d in e.productDetails)
    for r in warm:  # nothing the visitor already bought is recommended back
        assert not {x["id"] for x in r["results"]} & bought[r["key"]], r
    assert summary["outputs"]["similar_items"]["rows"] == len(items)
    assert summary["dead_letters"] == 0
    jsonl = [json.loads(line) for f in glob.glob(str(out / "recommended_for_you" / "predictions*.jsonl")) for line in open(f)]
    assert {j["key"] for j in jsonl} == visitors
    assert all(j["modelType"] == "recommended-for-you" and "metadata" in j["results"][0] for j in jsonl)


def test_cli_trains_when_no_model_is_given(toy, tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import cli

    root, events, catalog, _ = toy
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        cli,
        ["recommend", "--events", str(root / "events"), "--catalog", str(root / "products"), "--out", str(out),
         "--epochs", "1", "--k", "2", "--runner", "DirectRunner"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "no --model given: training one on 241 baskets" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained_here"] and summary["model"] == str(out / "model")
    assert summary["outputs"]["recommended_for_you"]["rows"] == len({e.visitorId for e in events if e.eventType == "purchase-complete"})
    assert (out / "model" / "saved_model").is_dir()
    # the job quantizes what it trained and serves that (--engine auto)
    assert (out / "model" / "model_int8.tflite").stat().st_size > 0
    assert summary["engine"] == "tflite"


def test_auto_engine_is_the_int8_file_when_the_model_has_one(toy, tmp_path):
    import shutil

    from pipelines.recommend import resolve_engine

    root, *_ = toy
    assert resolve_engine("auto", str(root / "model")) == "tflite"
    bare = tmp_path / "bare"
    shutil.copytree(root / "model", bare, ignore=shutil.ignore_patterns("*.tflite"))
    assert resolve_engine("auto", str(bare)) == "saved_model"
    assert resolve_engine("auto", str(bare), str(root / "model" / "model_int8.tflite")) == "tflite"
    assert resolve_engine("saved_model", str(root / "model")) == "saved_model"


def test_the_tflite_engine_serves_without_tensorflow_and_scores_as_tf_lite(toy):
    """A worker serving the INT8 model loads LiteRT only; its scores are tf.lite's, bit for bit."""
    import subprocess
    import sys
    import textwrap

    import numpy as np
    import tensorflow as tf

    from transforms.recommend_vocab import encode_queries

    root, _, _, vocab = toy
    path = str(root / "model" / "model_int8.tflite")
    queries = [(0,), (1, 2), tuple(range(len(vocab)))[:8], (len(vocab) - 1, 3)]
    code = f"""
        import json, sys
        import numpy as np
        from transforms.inference.recommend import TFLiteQueryHandler
        from transforms.recommend_vocab import encode_queries
        model = TFLiteQueryHandler({path!r}).load_model()
        ids, w = encode_queries({queries!r}, model.max_query_items)
        scores = model.predict(ids, w)
        print(json.dumps({{"tensorflow": "tensorflow" in sys.modules, "scores": scores.tolist()}}))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["tensorflow"] is False
    reference = tf.lite.Interpreter(model_path=path)
    by_role = {("ids" if d["dtype"] == np.int32 else "weights"): d for d in reference.get_input_details()}
    ids, w = encode_queries(queries, 8)
    for d, x in ((by_role["ids"], ids), (by_role["weights"], w)):
        reference.resize_tensor_input(d["index"], x.shape)
    reference.allocate_tensors()
    reference.set_tensor(by_role["ids"]["index"], ids.astype(np.int32))
    reference.set_tensor(by_role["weights"]["index"], w.astype(np.float32))
    reference.invoke()
    expected = reference.get_tensor(reference.get_output_details()[0]["index"])
    np.testing.assert_array_equal(np.asarray(got["scores"], np.float32), expected)


def test_bad_options_are_config_errors(toy, tmp_path):
    import apache_beam as beam

    from pipelines.recommend import add_recommend_steps
    from transforms.errors import ConfigError

    root, *_ = toy
    with pytest.raises(ConfigError, match="engine must be"):
        add_recommend_steps(beam.Pipeline(), events=str(root / "events"), catalog=None, model_dir=str(root / "model"),
                            out_dir=str(tmp_path), engine="onnx")
    with pytest.raises(ConfigError, match="fbt_alpha"):
        add_recommend_steps(beam.Pipeline(), events=str(root / "events"), catalog=None, model_dir=str(root / "model"),
                            out_dir=str(tmp_path), fbt_alpha=2.0)
    with pytest.raises(ConfigError, match="neighbours must be"):
        add_recommend_steps(beam.Pipeline(), events=str(root / "events"), catalog=None, model_dir=str(root / "model"),
                            out_dir=str(tmp_path), neighbours="auto")
    with pytest.raises(ConfigError, match="nprobe must be"):
        add_recommend_steps(beam.Pipeline(), events=str(root / "events"), catalog=None, model_dir=str(root / "model"),
                            out_dir=str(tmp_path), neighbours="index", nprobe=0)


def test_a_transaction_split_over_events_merges_into_one_basket_whatever_its_ids():
    from pipelines.recommend import _history, _merge_basket
    from transforms.recommend import pack_items

    # one event's ids pack into a string, the other's (one holds the separator) stay a tuple
    parts = [("v1", 5, pack_items(("22423", "85123A"))), ("v1", 3, pack_items(("C\x1fD", "22423")))]
    assert _merge_basket(("t1", parts)) == ("v1", 3, ("C\x1fD", "22423", "85123A"))
    assert _merge_basket(("t1", parts[::-1])) == ("v1", 3, ("C\x1fD", "22423", "85123A"))

    vocab = ItemVocab.build([("22423", "85123A", "84029G")])
    history = [(5, pack_items(("84029G",))), (3, pack_items(("85123A", "22423")))]
    assert _history(("v1", history), vocab, 48) == ("v1", tuple(vocab.encode(["85123A", "22423", "84029G"])))


@pytest.mark.parametrize("engine", ["saved_model", "tflite"])
def test_queries_scored_in_blocks_get_the_lists_of_one_call(toy, engine):
    from transforms.inference.recommend import SavedModelQueryHandler, TFLiteQueryHandler

    root, _, _, vocab = toy
    if engine == "tflite":
        make = lambda **kw: TFLiteQueryHandler(str(root / "model" / "model_int8.tflite"), top_k=5, **kw)  # noqa: E731
    else:
        make = lambda **kw: SavedModelQueryHandler(str(root / "model" / "saved_model"), top_k=5, **kw)  # noqa: E731
    whole = make()
    model = whole.load_model()
    assert model.n_items == len(vocab)
    queries = [tuple(vocab.encode(ids)) for ids in (vocab.ids[:3], vocab.ids[3:4], (), vocab.ids[5:9], vocab.ids[-2:])] * 3
    # room for the scores of 4 queries: 15 queries in 4 blocks of 4 rows, the last one 3 queries and a padding row
    blocked = make(max_block_scores=4 * len(vocab))
    assert whole.block_rows(model, len(queries)) == len(queries) and blocked.block_rows(model, len(queries)) == 4
    assert blocked.block_rows(model, 9) == 3  # 9 queries: 3 blocks of 3 rather than 4 + 4 + 1
    expected = [(list(map(int, p.inference[0])), p.inference[1].tolist()) for p in whole.run_inference(queries, model)]
    got = [(list(map(int, p.inference[0])), p.inference[1].tolist()) for p in blocked.run_inference(queries, blocked.load_model())]
    assert got == expected
    assert all(len(rows) == 5 for rows, _ in expected)


def test_the_job_searches_the_model_index_when_it_has_one(toy, tmp_path):
    """`aisle index` builds item_index.faiss; `--neighbours auto` then searches it, `index` without it is refused."""
    import shutil

    from click.testing import CliRunner

    from pipelines.cli import cli
    from pipelines.recommend import resolve_neighbours, run
    from transforms.errors import ConfigError

    pytest.importorskip("faiss")
    root, _, _, vocab = toy
    model = tmp_path / "model"
    shutil.copytree(root / "model", model)
    assert resolve_neighbours("auto", str(model)) == "exact"
    with pytest.raises(ConfigError, match="has no item_index.faiss"):
        resolve_neighbours("index", str(model))
    result = CliRunner().invoke(cli, ["index", "--model", str(model)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    built = json.loads(result.output)
    assert built["items"] == len(vocab) and built["nlist"] == 1  # a toy catalog: one cluster, searched whole
    assert resolve_neighbours("auto", str(model)) == "index"

    lists = {}
    for neighbours in ("exact", "auto"):
        out = tmp_path / neighbours
        summary = run(events=str(root / "events"), catalog=str(root / "products"), out_dir=str(out),
                      model_dir=str(model), neighbours=neighbours, k=3, echo=lambda *_: None)
        lists[summary["neighbours"]] = {r["key"]: [x["id"] for x in r["results"]] for r in _read(out / "similar_items")}
        assert summary["nprobe"] == (16 if summary["neighbours"] == "index" else None)
    assert lists.keys() == {"exact", "index"}
    assert lists["index"] == lists["exact"]  # one cluster: the index search is exhaustive


def test_the_export_builds_the_index_from_its_threshold(tmp_path):
    pytest.importorskip("faiss")
    from components.recommend_model import TrainedModel, build_model
    from transforms.inference.recommend import load_item_embeddings
    from transforms.item_index import INDEX_FILE, load_item_index

    vocab = ItemVocab.build([[f"{i:05d}" for i in range(200)]])
    trained = TrainedModel(build_model(len(vocab), dim=8, max_query_items=4), vocab, TrainConfig(dim=8, max_query_items=4))
    small = export_model(trained, str(tmp_path / "small"), index_min_items=201)
    assert "index" not in small and not (tmp_path / "small" / INDEX_FILE).exists()
    large = export_model(trained, str(tmp_path / "large"), index_min_items=200)
    assert large["index"] == str(tmp_path / "large" / INDEX_FILE)
    ids, unit_t = load_item_embeddings(str(tmp_path / "large"), unit_t=True)
    index = load_item_index(large["index"], unit_t)  # checks it holds the exported embeddings' vectors
    assert index.ntotal == len(ids)

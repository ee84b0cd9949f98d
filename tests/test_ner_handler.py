"""The NER ModelHandler in a Beam pipeline (FnApiRunner): entities, enriched catalog, dead letters."""

from __future__ import annotations

import glob
import pathlib

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from hypothesis import strategies as st
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from components.ner_export import export_onnx
from components.ner_train import TrainConfig, train_ner
from tests.ner_support import SENTENCES, build_tiny_base
from transforms.inference.ner import NerInputError, NerModelHandler, load_tagger
from transforms.ner_enrich import add_ner_steps
from transforms.records import Product


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A tiny model trained on the support sentences, exported to ONNX (a serving folder)."""
    root = tmp_path_factory.mktemp("ner_handler")
    base = build_tiny_base(root / "base")
    cfg = TrainConfig(epochs=25, learning_rate=5e-3, batch_size=4, patience=100, max_length=32, seed=7)
    result = train_ner(SENTENCES, str(root / "torch"), eval_data=SENTENCES, base_model=base, config=cfg, progress=lambda e: None)
    assert result.best_f1 >= 90.0
    export_onnx(str(root / "torch"), str(root / "onnx"))
    return str(root / "onnx")


def test_handler_entities_keyed_with_character_offsets(tiny_onnx, local_runner):
    texts = [("p1", "Made in Portugal."), ("p2", "John Smith visited Italy."), ("p3", "Product of Spain")]
    handler = KeyedModelHandler(NerModelHandler(tiny_onnx, max_batch_size=2))
    with TestPipeline(runner=local_runner) as p:
        found = (
            p
            | beam.Create(texts)
            | RunInference(handler)
            | beam.FlatMap(lambda kv: [(kv[0], e.label, e.text, e.start, e.end) for e in kv[1].inference])
        )
        assert_that(
            found,
            equal_to(
                [
                    ("p1", "LOC", "Portugal", 8, 16),
                    ("p2", "PER", "John Smith", 0, 10),
                    ("p2", "LOC", "Italy", 19, 24),
                    ("p3", "LOC", "Spain", 11, 16),
                ]
            ),
        )


def test_long_text_is_tagged_in_windows(tiny_onnx):
    tagger = load_tagger(tiny_onnx)  # window: 32 tokens (the tiny model's position table)
    sentence = "Grown in Peru and packed in Sweden. "
    text = sentence * 12  # about 100 words: several windows
    entities = tagger.entities([text])[0]
    assert tagger.model_calls <= 2  # full windows in one bucket, the short tail window in another
    assert tagger.padded_tokens <= 1.1 * tagger.real_tokens
    locs = [e for e in entities if e.label == "LOC"]
    assert len(locs) == 24  # nothing truncated: both places in every repetition
    assert all(text[e.start : e.end] == e.text for e in locs)
    assert locs[-1].text == "Sweden" and locs[-1].end > len(text) - 10


def test_buckets_hold_padding_to_the_budget(tiny_onnx):
    tagger = load_tagger(tiny_onnx)
    texts = [" ".join(["Lisbon"] * n) for n in (1, 2, 3, 5, 8, 13, 21, 1, 2, 3)]
    reference = [tagger.entities([t])[0] for t in texts]  # one text per call: no padding at all
    tagger.max_padding_fraction = 0.1
    tagger.model_calls = tagger.padded_tokens = tagger.real_tokens = 0
    assert tagger.entities(texts) == reference  # padding never changes a result
    assert tagger.padded_tokens <= 1.1 * tagger.real_tokens and tagger.model_calls > 1
    tagger.max_padding_fraction = 100.0  # no padding budget: one call padded to the longest
    tagger.model_calls = tagger.padded_tokens = tagger.real_tokens = 0
    assert tagger.entities(texts) == reference
    assert tagger.model_calls == 1 and tagger.padded_tokens > 2 * tagger.real_tokens


def test_handler_rejects_unusable_text(tiny_onnx):
    handler = NerModelHandler(tiny_onnx, max_chars=50)
    model = handler.load_model()
    with pytest.raises(NerInputError, match="empty"):
        handler.run_inference(["  "], model)
    with pytest.raises(NerInputError, match="over max_chars=50"):
        handler.run_inference(["x" * 51], model)


def test_enrich_step_writes_entities_catalog_and_dead_letters(tiny_onnx, local_runner, tmp_path):
    products = [
        Product(id="a", title="Olive oil", description="Product of Spain. Net volume 750 ml"),
        Product(id="b", title="Apples", description="Grown in Peru and packed in Sweden."),
        Product(id="c", title="Soap", description=" "),
    ]
    ocr = [
        {"product_id": "a", "text": "Made in Portugal."},
        {"product_id": "b", "text": "x" * 300},
    ]
    out = str(tmp_path / "out")
    with TestPipeline(runner=local_runner) as p:
        add_ner_steps(p | "Products" >> beam.Create(products), p | "Ocr" >> beam.Create(ocr), out, tiny_onnx, max_chars=200)

    entities = pq.read_table(glob.glob(f"{out}/entities/*.parquet")).to_pylist()
    spans = {(e["product_id"], e["source"], e["label"], e["text"], e["start"], e["end"]) for e in entities}
    assert ("a", "description", "LOC", "Spain", 11, 16) in spans
    assert ("a", "ocr", "LOC", "Portugal", 8, 16) in spans
    assert ("b", "description", "LOC", "Peru", 9, 13) in spans

    catalog = {r["id"]: r for r in pq.read_table(glob.glob(f"{out}/catalog_enriched/*.parquet")).to_pylist()}
    assert set(catalog) == {"a", "b", "c"}
    attrs_a = dict(catalog["a"]["attributes"])
    # "Product of Spain" in the catalog text outweighs "Made in Portugal" read from a photo
    assert attrs_a["country_of_origin"]["text"] == ["ES"]
    assert attrs_a["net_volume_ml"]["numbers"] == [750.0]
    assert dict(catalog["b"]["attributes"])["country_of_origin"]["text"] == ["PE"]

    dead = pq.read_table(glob.glob(f"{out}/dead_letter_ner/*.parquet")).to_pylist()
    assert sorted((d["source_file"], d["source_format"], d["reason"]) for d in dead) == [
        ("product:b", "ner:ocr", "NER_TEXT_TOO_LONG"),
        ("product:c", "ner:description", "NER_EMPTY_TEXT"),
    ]


class _FailsOnBoom(NerModelHandler):
    """A model that fails a whole batch when one of its texts says so."""

    def run_inference(self, batch, model, inference_args=None):
        if any("boom" in t for t in batch):
            raise RuntimeError("the model failed on this batch")
        return super().run_inference(batch, model, inference_args)


def test_enrich_step_keeps_every_product_when_a_batch_fails(tiny_onnx, local_runner, tmp_path):
    products = [
        Product(id="a", title="Olive oil boom", description="Net volume 750 ml"),
        Product(id="b", title="Apples", description="Grown in Peru and packed in Sweden."),
        Product(id="d", title="Soap"),
        Product(id="d", title="Soap bar"),  # a duplicate id: both records end in the catalog
    ]
    ocr = [{"product_id": "zz", "text": "Made in Portugal."}]  # OCR text of an id the catalog lacks
    out = str(tmp_path / "out")
    with TestPipeline(runner=local_runner) as p:
        add_ner_steps(
            p | "Products" >> beam.Create(products),
            p | "Ocr" >> beam.Create(ocr),
            out,
            None,
            handler=_FailsOnBoom(tiny_onnx, max_chars=200),
            batch_texts=2,
        )

    catalog = pq.read_table(glob.glob(f"{out}/catalog_enriched/*.parquet")).to_pylist()
    assert sorted((r["id"], r["title"]) for r in catalog) == [("a", "Olive oil boom"), ("b", "Apples"), ("d", "Soap"), ("d", "Soap bar")]
    attrs_a = dict(next(r for r in catalog if r["id"] == "a")["attributes"])
    assert attrs_a["net_volume_ml"]["numbers"] == [750.0]  # the rules still ran on a failed batch's product
    dead = pq.read_table(glob.glob(f"{out}/dead_letter_ner/*.parquet")).to_pylist()
    assert sorted((d["source_file"], d["source_format"], d["reason"]) for d in dead) == [
        ("product:a", "ner:description", "NER_INFERENCE_FAILED"),
        ("product:a", "ner:title", "NER_INFERENCE_FAILED"),
    ]
    assert "RuntimeError: the model failed on this batch" in dead[0]["detail"]
    entities = pq.read_table(glob.glob(f"{out}/entities/*.parquet")).to_pylist()
    spans = {(e["product_id"], e["source"], e["text"]) for e in entities}
    assert ("b", "description", "Peru") in spans and ("zz", "ocr", "Portugal") in spans
    assert not any(e["product_id"] == "a" for e in entities)


def test_enrich_job_runs_the_ner_half(tiny_onnx, tmp_path):
    """``aisle enrich --ner-model``: OCR of the sample catalog, then entities and the enriched catalog."""
    from pipelines.enrich import run_enrich

    samples = pathlib.Path(__file__).resolve().parents[1] / "samples" / "catalog_images.jsonl"
    out = tmp_path / "enriched"
    summary = run_enrich(str(samples), str(out), threads=1, ner_model=tiny_onnx)
    catalog = pq.read_table(glob.glob(f"{out}/catalog_enriched/*.parquet")).to_pylist()
    n_products = len(samples.read_text().splitlines())
    assert len(catalog) == n_products
    assert summary["records"]["catalog_enriched"] == n_products
    entities = pq.read_table(glob.glob(f"{out}/entities/*.parquet"))
    assert entities.schema.names == ["product_id", "source", "text", "start", "end", "label", "score"]
    ocr_text = {r["product_id"]: r["text"] for r in pq.read_table(glob.glob(f"{out}/ocr_text/*.parquet")).to_pylist()}
    for e in entities.to_pylist():  # every span points into the text it was found in
        if e["source"] == "ocr":
            assert ocr_text[e["product_id"]][e["start"] : e["end"]] == e["text"]


_WORDS = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(lambda w: w.strip() == w and w),
    min_size=1,
    max_size=12,
)


def _tokenizer_folders(tiny_onnx) -> list[str]:
    from components.ner_train import default_base_model

    folders = [tiny_onnx]
    try:
        minilm = default_base_model()  # MiniLM-L6's uncased WordPiece vocabulary, with the case-marker tokens
    except Exception:  # noqa: BLE001 - the packaged encoder is optional here
        return folders
    if (pathlib.Path(minilm) / "tokenizer.json").exists():
        folders.append(minilm)
    return folders


def test_serving_tokenizer_gives_the_ids_transformers_gives(tiny_onnx):
    """The ``tokenizers``-only tokenizer that serving loads against ``transformers``' over the same folder."""
    from hypothesis import given, settings
    from transformers import AutoTokenizer

    from transforms.ner_labels import CASE_MARKER_TOKENS, WordPieceTokenizer, case_marker_ids, encode_words

    for folder in _tokenizer_folders(tiny_onnx):
        ours, theirs = WordPieceTokenizer(folder), AutoTokenizer.from_pretrained(folder, local_files_only=True)
        for name in ("unk_token_id", "pad_token_id", "cls_token_id", "sep_token_id"):
            assert getattr(ours, name) == getattr(theirs, name) is not None, name
        markers = all(theirs.convert_tokens_to_ids(t) != theirs.unk_token_id for t in CASE_MARKER_TOKENS.values())
        if markers:
            assert case_marker_ids(ours) == case_marker_ids(theirs)

        @settings(max_examples=60, deadline=None)
        @given(st.lists(_WORDS, min_size=1, max_size=4))
        def same_ids(sentences):
            assert encode_words(ours, sentences) == encode_words(theirs, sentences)
            if markers:
                assert encode_words(ours, sentences, case_markers=True) == encode_words(theirs, sentences, case_markers=True)

        same_ids()
        fixed = [["Made", "in", "Portugal", ",", "500g"], ["Café", "Zürich", "東京", "\x00", "e\u0301"], ["INFLATABLE", "GLOBE"]]
        assert encode_words(ours, fixed) == encode_words(theirs, fixed)


def test_serving_loads_no_pytorch(tiny_onnx):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from transforms.inference.ner import NerModelHandler\n"
        f"tagger = NerModelHandler({tiny_onnx!r}).load_model()\n"
        "print(len(tagger.entities(['Grown in Peru'])), 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=str(pathlib.Path(__file__).resolve().parents[1]))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[1:] == ["False", "False"]

"""The training loop learns (a tiny BERT trained in the test), export keeps its outputs, candidates build."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.ner_train import TrainConfig, default_base_model, train_ner
from tests.ner_support import SENTENCES, build_tiny_base
from transforms.errors import ConfigError

TINY = TrainConfig(epochs=25, learning_rate=5e-3, batch_size=4, patience=100, max_length=32, log_every_steps=10, seed=7)


@pytest.fixture(scope="module")
def tiny_trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    base = build_tiny_base(root / "base")
    events = []
    result = train_ner(SENTENCES, str(root / "torch"), eval_data=SENTENCES, base_model=base, config=TINY, progress=events.append)
    return root, base, result, events


def test_training_loop_learns(tiny_trained):
    root, _, result, events = tiny_trained
    evals = [e for e in events if e["event"] == "eval"]
    steps = [e for e in events if e["event"] == "step"]
    assert len(evals) == TINY.epochs
    # F1 on the training sentences goes from chance to (nearly) all entities found
    assert evals[0]["f1"] < 50.0
    assert result.best_f1 >= 90.0
    assert steps[-1]["loss"] < steps[0]["loss"] / 3
    saved = json.loads((root / "torch" / "train_metrics.json").read_text())
    assert saved["best_f1"] == result.best_f1
    config = json.loads((root / "torch" / "config.json").read_text())
    assert config["id2label"]["5"] == "B-LOC"


def test_training_is_reproducible(tiny_trained, tmp_path):
    _, base, _, _ = tiny_trained
    short = TrainConfig(**{**TINY.__dict__, "epochs": 4})
    runs = [
        train_ner(SENTENCES, str(tmp_path / f"run{i}"), eval_data=SENTENCES, base_model=base, config=short,
                  progress=lambda e: None)
        for i in range(2)
    ]
    assert [h["f1"] for h in runs[0].history] == [h["f1"] for h in runs[1].history]
    weights = [(tmp_path / f"run{i}" / "model.safetensors").read_bytes() for i in range(2)]
    assert weights[0] == weights[1]


def test_case_markers_let_an_uncased_model_learn_case(tmp_path):
    from components.ner_data import Sentence
    from transforms.inference.ner import load_tagger

    # The same lowercased words are a place or not depending on case only.
    sents = [Sentence(("we", "saw", w), ("O", "O", t)) for w, t in
             (("Nice", "B-LOC"), ("nice", "O"), ("Reading", "B-LOC"), ("reading", "O"))] * 2
    base = build_tiny_base(tmp_path / "base", sents)
    cfg = TrainConfig(**{**TINY.__dict__, "epochs": 30, "case_markers": False})
    plain = train_ner(sents, str(tmp_path / "plain"), eval_data=sents, base_model=base, config=cfg, progress=lambda e: None)
    marked = train_ner(sents, str(tmp_path / "marked"), eval_data=sents, base_model=base,
                       config=TrainConfig(**{**cfg.__dict__, "case_markers": True}), progress=lambda e: None)
    assert plain.best_f1 < 70.0  # an uncased model cannot tell "Nice" from "nice"
    assert marked.best_f1 == 100.0
    assert json.loads((tmp_path / "marked" / "config.json").read_text())["aisle_case_markers"] is True
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["aisle_case_markers"] is False
    tagger = load_tagger(str(tmp_path / "marked"), backend="torch")
    assert tagger.case_markers
    assert [e.text for e in tagger.entities(["we saw Nice", "we saw nice"])[0]] == ["Nice"]


def test_early_stopping_and_bad_config(tiny_trained, tmp_path):
    _, base, _, _ = tiny_trained
    # A learning rate of zero never improves: patience 1 stops after the second evaluation.
    stopped = train_ner(
        SENTENCES, str(tmp_path / "stop"), eval_data=SENTENCES, base_model=base,
        config=TrainConfig(**{**TINY.__dict__, "learning_rate": 0.0, "patience": 1}), progress=lambda e: None,
    )
    assert stopped.stopped_early and len(stopped.history) == 2
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        train_ner(SENTENCES, str(tmp_path / "x"), base_model=base, config=TrainConfig(epochs=0))


def test_onnx_export_matches_torch_and_candidates_build(tiny_trained):
    from components.candidates import choose_candidate
    from components.ner_candidates import build_candidates, evaluate_ner_candidates
    from transforms.inference.ner import load_tagger

    root, _, _, _ = tiny_trained
    folders, notes = build_candidates(
        str(root / "torch"), str(root / "candidates"), calibration=SENTENCES, tuning=SENTENCES, max_length=32,
        include=("torch_fp32", "fp32", "fp32_fused", "int8_dynamic", "int8_dynamic_fused"),
    )
    assert notes["fp32_fused"]["fused_ops"]["Attention"] == 2  # one per layer
    assert notes["int8_dynamic"]["graph"] == "fp32" and notes["int8_dynamic_fused"]["graph"] == "fp32_fused"
    words = [s.words for s in SENTENCES]
    torch_tags = load_tagger(folders["torch_fp32"], backend="torch").tag_words(words)
    onnx_tags = load_tagger(folders["fp32"]).tag_words(words)
    assert [t for t, _ in torch_tags] == [t for t, _ in onnx_tags]
    assert np.allclose(np.concatenate([p for _, p in torch_tags]), np.concatenate([p for _, p in onnx_tags]), atol=1e-4)
    results = evaluate_ner_candidates(folders, SENTENCES, repeats=2, warmup=1, max_length=32)
    assert {r.name for r in results} == set(folders)
    assert all(r.metrics["f1"] >= 90.0 for r in results)
    chosen = choose_candidate(results, metric="f1", max_accuracy_drop=1.0)
    assert chosen.name in folders

    # the same folder without onnxruntime's online fusions: the same tags, measured under its own name
    plain = evaluate_ner_candidates({"fp32": folders["fp32"], "fp32_unfused": folders["fp32"]}, SENTENCES, repeats=1, warmup=0,
                                    max_length=32, graph_optimization={"fp32_unfused": "basic"})
    assert [r.name for r in plain] == ["fp32", "fp32_unfused"] and plain[0].metrics == plain[1].metrics
    basic_tags = load_tagger(folders["fp32"], graph_optimization="basic").tag_words(words)
    assert np.allclose(np.concatenate([p for _, p in basic_tags]), np.concatenate([p for _, p in onnx_tags]), atol=1e-4)
    with pytest.raises(ConfigError, match="graph_optimization='fast'"):
        load_tagger(folders["fp32"], graph_optimization="fast")


def test_case_markers_default_to_on_for_a_lowercasing_tokenizer_with_the_reserved_tokens(tmp_path):
    from transformers import AutoTokenizer, BertTokenizer

    from components.ner_train import wants_case_markers

    assert wants_case_markers(AutoTokenizer.from_pretrained(default_base_model(), local_files_only=True))
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[unused1]", "[unused2]", "lisbon", "Lisbon"])}
    assert not wants_case_markers(BertTokenizer(vocab=vocab, do_lower_case=False))  # cased: sees case itself
    del vocab["[unused2]"]
    assert not wants_case_markers(BertTokenizer(vocab=vocab, do_lower_case=True))  # no reserved tokens


def test_default_base_is_the_packaged_minilm():
    folder = default_base_model()
    config = json.loads(open(f"{folder}/config.json").read())
    assert config["num_hidden_layers"] == 6 and config["hidden_size"] == 384

"""A tiny BERT token-classifier checkpoint built in a test (2 layers, a vocabulary of the test words).

It stands in for MiniLM-L6 where a test needs a model folder of the same
shape (config.json, tokenizer, weights) but must train in seconds.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from components.ner_data import Sentence
from transforms.ner_labels import LabelScheme

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused1]", "[unused2]"]

# Hand-written sentences (not from any data set): locations, people, organisations.
SENTENCES = [
    Sentence(("Made", "in", "Portugal", "."), ("O", "O", "B-LOC", "O")),
    Sentence(("Product", "of", "Spain"), ("O", "O", "B-LOC")),
    Sentence(("Anna", "Berg", "works", "at", "Acme", "in", "Paris", "."), ("B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC", "O")),
    Sentence(("Packed", "in", "New", "York", "by", "Acme", "."), ("O", "O", "B-LOC", "I-LOC", "O", "B-ORG", "O")),
    Sentence(("John", "Smith", "visited", "Italy", "."), ("B-PER", "I-PER", "O", "B-LOC", "O")),
    Sentence(("Grown", "in", "Peru", "and", "packed", "in", "Sweden", "."), ("O", "O", "B-LOC", "O", "O", "O", "B-LOC", "O")),
    Sentence(("Origin", ":", "Chile"), ("O", "O", "B-LOC")),
    Sentence(("Acme", "sells", "apples", "from", "New", "Zealand", "."), ("B-ORG", "O", "O", "O", "B-LOC", "I-LOC", "O")),
]


def build_tiny_base(folder: pathlib.Path, sentences: Sequence[Sentence] = SENTENCES, *, extra_words=()) -> str:
    """Write a randomly initialised 2-layer BERT with a word-level vocabulary to ``folder``."""
    from transformers import BertConfig, BertForTokenClassification, BertTokenizer

    words = sorted({w.lower() for s in sentences for w in s.words} | {w.lower() for w in extra_words})
    vocab = SPECIALS + words + ["##s", "##ed"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label=dict(LabelScheme().id2label),
        label2id=dict(LabelScheme().label2id),
    )
    model = BertForTokenClassification(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)

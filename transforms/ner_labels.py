"""The NER model's label scheme, word splitting, word-piece alignment and span decoding.

One definition shared by training (``components/ner_train.py``) and serving
(``transforms/inference/ner.py``), so the two cannot drift apart:

* **words**: text is split into words with :func:`split_words` (runs of word
  characters, each other non-space character on its own), which keeps the
  character offsets of every word. Training data arrives already split into
  words (CoNLL columns); serving text goes through :func:`split_words`.
* **labels**: IOB2 tags over entity types (:class:`LabelScheme`); the default
  scheme is CoNLL-2003's ``PER``, ``ORG``, ``LOC``, ``MISC``.
* **alignment**: the first word piece of a word carries the word's label,
  the other pieces and the special tokens carry :data:`IGNORE_INDEX`
  (:func:`align_labels`); at prediction time the first piece's prediction is
  the word's (:func:`word_predictions`).
* **decoding**: :func:`repair_iob2` turns any tag sequence into valid IOB2
  (an ``I-X`` that does not continue an ``X`` entity starts one), then
  :func:`iob2_spans` yields entity spans over words and :func:`decode_entities`
  maps them back to character offsets of the original text.

>>> words = split_words("Made in Portugal, 500g")
>>> [w.text for w in words]
['Made', 'in', 'Portugal', ',', '500g']
>>> decode_entities("Made in Portugal, 500g", words, ["O", "O", "I-LOC", "O", "O"], [0.9] * 5)
[Entity(label='LOC', text='Portugal', start=8, end=16, score=0.9)]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from transforms.errors import ConfigError

__all__ = [
    "CONLL_TYPES",
    "IGNORE_INDEX",
    "Entity",
    "LabelScheme",
    "Word",
    "Window",
    "WordPieceTokenizer",
    "align_labels",
    "decode_entities",
    "encode_words",
    "entity_f1",
    "iob2_spans",
    "repair_iob2",
    "split_words",
    "window_features",
    "window_words",
    "word_predictions",
]

CONLL_TYPES = ("PER", "ORG", "LOC", "MISC")
IGNORE_INDEX = -100  # the label id torch's cross entropy skips

_WORD_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


class Word(NamedTuple):
    """A word of a text with its character offsets (``text[start:end] == word``)."""

    text: str
    start: int
    end: int


class Entity(NamedTuple):
    """An entity found in a text: type, surface text, character span and score (0..1)."""

    label: str
    text: str
    start: int
    end: int
    score: float


class LabelScheme:
    """IOB2 labels over a set of entity types: ``O``, then ``B-T``/``I-T`` per type.

    >>> scheme = LabelScheme(("LOC",))
    >>> scheme.labels
    ('O', 'B-LOC', 'I-LOC')
    >>> scheme.label2id["I-LOC"]
    2
    """

    def __init__(self, types: Sequence[str] = CONLL_TYPES):
        types = tuple(types)
        if not types or len(set(types)) != len(types):
            raise ConfigError(f"entity types must be non-empty and unique, got {types!r}")
        self.types = types
        self.labels: tuple[str, ...] = ("O",) + tuple(f"{p}-{t}" for t in types for p in ("B", "I"))
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.id2label = dict(enumerate(self.labels))

    @classmethod
    def from_labels(cls, labels: Sequence[str]) -> "LabelScheme":
        """The scheme whose label list is ``labels`` (as saved in a model's config)."""
        types = []
        for label in labels:
            if label != "O" and label[2:] not in types:
                types.append(label[2:])
        scheme = cls(types)
        if tuple(labels) != scheme.labels:
            raise ConfigError(
                f"label list {list(labels)!r} is not an IOB2 scheme in the order "
                f"{list(scheme.labels)!r}; retrain or re-export the model with LabelScheme"
            )
        return scheme

    def ids(self, tags: Sequence[str]) -> list[int]:
        """Label ids of IOB2 tags; a tag of an unknown type is an error naming it."""
        try:
            return [self.label2id[t] for t in tags]
        except KeyError as exc:
            raise ConfigError(
                f"tag {exc.args[0]!r} is not in the label scheme {list(self.labels)!r}: "
                "map the data set's types first (components.ner_data.map_types)"
            ) from None

    def __eq__(self, other):
        return isinstance(other, LabelScheme) and other.labels == self.labels

    def __repr__(self):
        return f"LabelScheme({self.types!r})"


def split_words(text: str) -> list[Word]:
    """Words of ``text`` with character offsets: word-character runs and single symbols.

    >>> [tuple(w) for w in split_words("Ursprung: Sverige")]
    [('Ursprung', 0, 8), (':', 8, 9), ('Sverige', 10, 17)]
    """
    return [Word(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(text)]


def align_labels(word_ids: Sequence[int | None], word_label_ids: Sequence[int]) -> list[int]:
    """Per-piece label ids: the first piece of each word gets the word's label.

    ``word_ids`` is the tokenizer's piece-to-word map (``None`` for special
    tokens). Special tokens and continuation pieces get :data:`IGNORE_INDEX`.

    >>> align_labels([None, 0, 1, 1, 2, None], [3, 1, 0])
    [-100, 3, 1, -100, 0, -100]
    """
    out = []
    previous = None
    for wid in word_ids:
        if wid is None or wid == previous:
            out.append(IGNORE_INDEX)
        else:
            out.append(word_label_ids[wid])
        previous = wid
    return out


def word_predictions(word_ids: Sequence[int | None], piece_values: Sequence, n_words: int) -> list:
    """The value of each word's first piece (the inverse of :func:`align_labels`).

    A word that got no piece (the tokenizer dropped it, e.g. a control
    character) gets ``None``.

    >>> word_predictions([None, 0, 1, 1, 2, None], ["x", "a", "b", "c", "d", "y"], 3)
    ['a', 'b', 'd']
    """
    out: list = [None] * n_words
    previous = None
    for wid, value in zip(word_ids, piece_values):
        if wid is not None and wid != previous:
            out[wid] = value
        previous = wid
    return out


def repair_iob2(tags: Sequence[str | None]) -> list[str]:
    """Valid IOB2: an ``I-X`` not preceded by ``B-X``/``I-X`` becomes ``B-X``; ``None`` becomes ``O``.

    >>> repair_iob2(["I-LOC", "I-LOC", "O", "I-PER", "B-LOC", "I-ORG"])
    ['B-LOC', 'I-LOC', 'O', 'B-PER', 'B-LOC', 'B-ORG']
    """
    out = []
    previous_type = None
    for tag in tags:
        if tag is None or tag == "O":
            out.append("O")
            previous_type = None
            continue
        prefix, _, etype = tag.partition("-")
        if prefix == "I" and previous_type != etype:
            prefix = "B"
        elif prefix not in ("B", "I"):
            raise ConfigError(f"tag {tag!r} is not IOB2 (expected O, B-TYPE or I-TYPE)")
        out.append(f"{prefix}-{etype}")
        previous_type = etype
    return out


def iob2_spans(tags: Sequence[str | None]) -> list[tuple[str, int, int]]:
    """Entity spans ``(type, first_word, end_word_exclusive)`` of a tag sequence (repaired first).

    >>> iob2_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"])
    [('PER', 0, 2), ('LOC', 3, 4), ('LOC', 4, 5)]
    """
    spans = []
    start = None
    etype = None
    for i, tag in enumerate(repair_iob2(tags) + ["O"]):
        if start is not None and not tag.startswith("I-"):
            spans.append((etype, start, i))
            start = None
        if tag.startswith("B-"):
            start, etype = i, tag[2:]
    return spans


def decode_entities(
    text: str,
    words: Sequence[Word],
    tags: Sequence[str | None],
    scores: Sequence[float | None],
) -> list[Entity]:
    """Entities with character offsets into ``text`` from per-word tags and scores.

    An entity's score is the mean of its words' scores (the probability the
    model gave each word's predicted tag).
    """
    if not (len(words) == len(tags) == len(scores)):
        raise ConfigError(
            f"words, tags and scores must have one entry per word: got {len(words)}, {len(tags)}, {len(scores)}"
        )
    entities = []
    for etype, first, end in iob2_spans(tags):
        start_char, end_char = words[first].start, words[end - 1].end
        span_scores = [s for s in scores[first:end] if s is not None]
        score = sum(span_scores) / len(span_scores) if span_scores else 0.0
        entities.append(Entity(etype, text[start_char:end_char], start_char, end_char, float(score)))
    return entities


def entity_f1(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Entity-level precision/recall/F1 (seqeval's default, exact span and type match), in percent.

    Returns ``precision``, ``recall``, ``f1`` (micro over all types) and
    ``f1_<TYPE>`` per entity type found in the gold or predicted tags.

    >>> entity_f1([["B-LOC", "I-LOC", "O"]], [["B-LOC", "I-LOC", "O"]])["f1"]
    100.0
    """
    if len(gold) != len(predicted):
        raise ConfigError(f"gold has {len(gold)} sentences, predicted {len(predicted)}")
    counts: dict[str, list[int]] = {}  # type -> [true positives, gold, predicted]
    for g, p in zip(gold, predicted):
        if len(g) != len(p):
            raise ConfigError(f"a sentence has {len(g)} gold tags and {len(p)} predicted tags")
        gs, ps = set(iob2_spans(g)), set(iob2_spans(p))
        for span in gs:
            counts.setdefault(span[0], [0, 0, 0])[1] += 1
        for span in ps:
            c = counts.setdefault(span[0], [0, 0, 0])
            c[2] += 1
            c[0] += span in gs

    def prf(tp, n_gold, n_pred):
        precision = 100.0 * tp / n_pred if n_pred else 0.0
        recall = 100.0 * tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return precision, recall, f1

    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    precision, recall, f1 = prf(*total)
    out = {"precision": precision, "recall": recall, "f1": f1}
    for etype, c in sorted(counts.items()):
        out[f"f1_{etype}"] = prf(*c)[2]
    return out


# --------------------------------------------------------------------------
# Word pieces and windows (model inputs)
# --------------------------------------------------------------------------

_SENTENCE_END = frozenset({".", "!", "?", ";", "\n"})


class Window(NamedTuple):
    """A run of words ``[start, end)`` of one text that fits the model in one pass.

    ``input_ids`` holds the special tokens around the words' pieces,
    ``word_ids`` the piece-to-word map relative to ``start`` (``None`` for
    special tokens), as a Hugging Face tokenizer returns it.
    """

    text_index: int
    start: int
    end: int
    input_ids: tuple[int, ...]
    word_ids: tuple[int | None, ...]


# Reserved vocabulary entries that mark a word's case for an uncased encoder
# (config.json key ``aisle_case_markers``). Text never tokenizes to them: the
# string "[unused1]" splits into ordinary pieces.
CASE_MARKER_TOKENS = {"title": "[unused1]", "upper": "[unused2]"}
CASE_MARKERS_KEY = "aisle_case_markers"


def word_case(word: str) -> str | None:
    """``"upper"`` (two or more letters, all capitals), ``"title"`` (first letter a capital) or None.

    >>> [word_case(w) for w in ("EU", "Lisbon", "U.S.", "iPhone", "42", "A")]
    ['upper', 'title', 'upper', None, None, 'title']
    """
    letters = [c for c in word if c.isalpha()]
    if not letters or not letters[0].isupper():
        return None
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return "upper"
    return "title"


class WordPieceTokenizer:
    """A saved fast tokenizer (``tokenizer.json``) run by the ``tokenizers`` library alone, for serving.

    It answers what :func:`encode_words`, :func:`case_marker_ids` and the
    tagger ask of a tokenizer (pre-split words in, ids and word ids out; the
    special tokens' ids), with the same ids as ``transformers``'
    ``AutoTokenizer`` over the same folder, which runs the same
    ``tokenizer.json`` (a test compares the two). Importing ``transformers``
    imports PyTorch (2.7 s and 218 MiB of a process's peak memory on this
    project's machine), which an ONNX model never uses, so every serving
    process is spared it.
    """

    def __init__(self, folder: str):
        import json
        import os

        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        self._tok.no_truncation()
        self._tok.no_padding()
        config_path = os.path.join(folder, "tokenizer_config.json")
        config = {}
        if os.path.exists(config_path):
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)

        def special(name: str, default: str) -> int | None:
            token = config.get(name, default)
            if isinstance(token, dict):  # an AddedToken saved whole
                token = token.get("content", default)
            return self._tok.token_to_id(token) if token else None

        self.unk_token_id = special("unk_token", "[UNK]")
        self.pad_token_id = special("pad_token", "[PAD]")
        self.cls_token_id = special("cls_token", "[CLS]")
        self.sep_token_id = special("sep_token", "[SEP]")

    @staticmethod
    def available(folder: str) -> bool:
        import os

        return os.path.exists(os.path.join(folder, "tokenizer.json"))

    def convert_tokens_to_ids(self, token: str) -> int | None:
        found = self._tok.token_to_id(token)
        return self.unk_token_id if found is None else found

    def __call__(self, sentences, *, is_split_into_words: bool = True, add_special_tokens: bool = False) -> "_Encodings":
        if not is_split_into_words:
            raise ConfigError("WordPieceTokenizer takes sentences already split into words")
        return _Encodings(self._tok.encode_batch([list(s) for s in sentences], is_pretokenized=True, add_special_tokens=add_special_tokens))


class _Encodings:
    """``enc["input_ids"][i]`` and ``enc.word_ids(i)``, as ``transformers``' BatchEncoding gives them.

    ``enc["input_ids"]`` is a view: indexing it reads one encoding's ids, so
    a loop over the sentences of a batch stays linear in the batch.
    """

    def __init__(self, encodings):
        self._encodings = encodings

    def __getitem__(self, key: str) -> "_InputIds":
        if key != "input_ids":
            raise KeyError(key)
        return _InputIds(self._encodings)

    def word_ids(self, i: int) -> list[int | None]:
        return self._encodings[i].word_ids


class _InputIds:
    def __init__(self, encodings):
        self._encodings = encodings

    def __len__(self) -> int:
        return len(self._encodings)

    def __getitem__(self, i: int) -> list[int]:
        return self._encodings[i].ids


def case_marker_ids(tokenizer) -> dict[str, int]:
    """Vocabulary ids of :data:`CASE_MARKER_TOKENS`; ConfigError when the vocabulary lacks them."""
    ids = {case: tokenizer.convert_tokens_to_ids(token) for case, token in CASE_MARKER_TOKENS.items()}
    if any(i is None or i == tokenizer.unk_token_id for i in ids.values()):
        raise ConfigError(
            f"case markers need the reserved tokens {sorted(CASE_MARKER_TOKENS.values())} in the vocabulary; "
            "this tokenizer lacks them: train without case markers"
        )
    return ids


def encode_words(tokenizer, sentences: Sequence[Sequence[str]], *, case_markers: bool = False) -> list[list[list[int]]]:
    """Word-piece ids of every word of every sentence (one tokenizer call for all).

    A word the tokenizer yields no piece for (a control character, say) gets
    the unknown token, so every word has a first piece to predict from. With
    ``case_markers`` (for uncased encoders, whose tokenizer lowercases), a
    capitalized or all-capitals word gets a reserved marker piece after its
    own pieces: the casing that matters most for names survives lowercasing,
    and the word's label still sits on its first piece.
    """
    if not sentences:
        return []
    enc = tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=False)
    unk = tokenizer.unk_token_id
    markers = case_marker_ids(tokenizer) if case_markers else {}
    out = []
    for i, words in enumerate(sentences):
        pieces: list[list[int]] = [[] for _ in words]
        for tid, wid in zip(enc["input_ids"][i], enc.word_ids(i)):
            if wid is not None:
                pieces[wid].append(tid)
        pieces = [p if p else [unk] for p in pieces]
        if markers:
            for w, word in enumerate(words):
                case = word_case(word)
                if case:
                    pieces[w].append(markers[case])
        out.append(pieces)
    return out


def window_words(piece_counts: Sequence[int], max_pieces: int) -> list[tuple[int, int]]:
    """Split words into consecutive windows of at most ``max_pieces`` word pieces.

    Nothing is dropped: every word lands in exactly one window. A window is
    cut after a sentence end (``. ! ? ;``) when one falls in its second half,
    else where it is full. A single word longer than ``max_pieces`` gets a
    window of its own (its pieces are cut to ``max_pieces``; its label comes
    from the first piece).

    >>> window_words([1, 1, 1, 1, 1], 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    if max_pieces < 1:
        raise ConfigError(f"max_pieces must be >= 1, got {max_pieces}")
    windows = []
    start = 0
    n = len(piece_counts)
    while start < n:
        total = 0
        end = start
        while end < n and total + min(piece_counts[end], max_pieces) <= max_pieces:
            total += min(piece_counts[end], max_pieces)
            end += 1
        if end == start:  # cannot happen with the min() above; kept for safety
            end = start + 1
        windows.append((start, end))
        start = end
    return windows


def window_features(
    pieces: Sequence[Sequence[Sequence[int]]],
    *,
    max_length: int,
    cls_id: int,
    sep_id: int,
    words: Sequence[Sequence[str]] | None = None,
) -> list[Window]:
    """Model windows of ``max_length`` tokens (special tokens included) for every text.

    ``pieces`` comes from :func:`encode_words`; ``words``, when given, lets a
    window end after a sentence end rather than mid-sentence.
    """
    if max_length < 3:
        raise ConfigError(f"max_length must be >= 3 (two special tokens and a piece), got {max_length}")
    budget = max_length - 2
    out = []
    for ti, text_pieces in enumerate(pieces):
        counts = [len(p) for p in text_pieces]
        spans = window_words(counts, budget)
        if words is not None and len(spans) > 1:
            spans = _prefer_sentence_ends(words[ti], counts, budget)
        for start, end in spans:
            ids = [cls_id]
            wids: list[int | None] = [None]
            for w in range(start, end):
                p = list(text_pieces[w])[:budget]
                ids.extend(p)
                wids.extend([w - start] * len(p))
            ids.append(sep_id)
            wids.append(None)
            out.append(Window(ti, start, end, tuple(ids), tuple(wids)))
    return out


def _prefer_sentence_ends(words: Sequence[str], counts: Sequence[int], budget: int) -> list[tuple[int, int]]:
    spans = []
    start = 0
    n = len(counts)
    while start < n:
        total = 0
        end = start
        last_break = None
        while end < n and total + min(counts[end], budget) <= budget:
            total += min(counts[end], budget)
            end += 1
            if words[end - 1] in _SENTENCE_END:
                last_break = end
        if end < n and last_break is not None and last_break - start > (end - start) // 2:
            end = last_break
        spans.append((start, end))
        start = end
    return spans

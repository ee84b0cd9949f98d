"""Readers for word-level NER data sets: CoNLL-2003, WNUT-17, Universal NER, WikiANN.

Every reader returns :class:`Sentence` records (words and IOB2 tags), read
through Beam's ``FileSystems`` so a local path and ``gs://`` behave alike.
:func:`read_ner` picks the reader from the file's content; :func:`map_types`
maps a data set's entity types onto the CoNLL types the model is trained on.

Formats (one word a line, a blank line between sentences):

* ``conll``: ``word POS chunk TAG`` (space separated, ``-DOCSTART-`` lines);
* ``wnut``: ``word<TAB>TAG`` with WNUT-17 types (location, person, ...);
* ``uner``: ``idx<TAB>word<TAB>TAG<TAB>...`` with ``# ...`` comment lines;
* ``wikiann``: ``lang:word<TAB>TAG``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from transforms.errors import ConfigError, SourceError
from transforms.ner_labels import repair_iob2

__all__ = ["FORMATS", "WNUT_TO_CONLL", "Sentence", "detect_format", "map_types", "parse_ner", "read_ner"]

FORMATS = ("conll", "wnut", "uner", "wikiann")

# WNUT-17's emerging-entity types -> CoNLL-2003 types.
WNUT_TO_CONLL = {
    "location": "LOC",
    "person": "PER",
    "corporation": "ORG",
    "group": "ORG",
    "product": "MISC",
    "creative-work": "MISC",
}


class Sentence(NamedTuple):
    """A sentence as words and one IOB2 tag per word."""

    words: tuple[str, ...]
    tags: tuple[str, ...]


def detect_format(lines: Sequence[str]) -> str:
    """The format of NER lines (see the module docstring), from their first data lines."""
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip() or line.startswith("-DOCSTART-"):
            continue
        if line.startswith("#"):
            return "uner"
        tab = line.split("\t")
        if len(tab) >= 3 and tab[0].isdigit():
            return "uner"
        if len(tab) == 2:
            data = [x.split("\t")[0] for x in lines[:200] if x.strip() and "\t" in x]
            prefixed = all(len(w) > 3 and w[2] == ":" and w[:2].isalpha() for w in data)
            return "wikiann" if prefixed else "wnut"
        if len(line.split()) == 4:
            return "conll"
        raise ConfigError(f"cannot tell the NER format of the line {line!r}; pass fmt= one of {FORMATS}")
    raise ConfigError("the NER file has no data lines")


def _word_and_tag(line: str, fmt: str) -> tuple[str, str]:
    if fmt == "conll":
        parts = line.split()
        return parts[0], parts[-1]
    parts = line.split("\t")
    if fmt == "uner":
        return parts[1], parts[2]
    word, tag = parts[0], parts[-1]
    if fmt == "wikiann":
        word = word.split(":", 1)[1]
    return word, tag


def parse_ner(lines: Iterable[str], fmt: str = "auto", *, source: str = "<lines>") -> list[Sentence]:
    """Sentences from the lines of a NER file in ``fmt`` (or detected when ``auto``).

    Tags are repaired to valid IOB2 (older CoNLL copies use IOB1).
    """
    lines = list(lines)
    if fmt == "auto":
        fmt = detect_format(lines)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown NER format {fmt!r}; use one of {FORMATS} or 'auto'")
    sentences = []
    words: list[str] = []
    tags: list[str] = []

    def flush():
        if words:
            sentences.append(Sentence(tuple(words), tuple(repair_iob2(tags))))
            words.clear()
            tags.clear()

    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\n").rstrip("\r")
        if not line.strip():
            flush()
            continue
        if line.startswith("-DOCSTART-") or (fmt == "uner" and line.startswith("#")):
            continue
        try:
            word, tag = _word_and_tag(line, fmt)
        except IndexError:
            raise SourceError(f"{source}:{number}: line {line!r} is not in the {fmt} format") from None
        words.append(word)
        tags.append(tag)
    flush()
    return sentences


def read_ner(path: str, fmt: str = "auto", *, limit: int | None = None) -> list[Sentence]:
    """Sentences of a NER file (local or ``gs://``), at most ``limit`` of them."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as handle:
            text = io.TextIOWrapper(handle, encoding="utf-8").read()
    except Exception as exc:  # noqa: BLE001: Beam raises several types for a missing file
        raise SourceError(f"cannot read NER data {path!r}: {exc}") from exc
    sentences = parse_ner(text.splitlines(), fmt, source=path)
    return sentences[:limit] if limit is not None else sentences


def map_types(sentences: Iterable[Sentence], mapping: Mapping[str, str | None]) -> list[Sentence]:
    """Sentences with entity types renamed by ``mapping`` (types mapped to ``None`` become ``O``).

    A type missing from ``mapping`` is kept as it is.
    """
    out = []
    for s in sentences:
        tags = []
        for tag in s.tags:
            if tag == "O":
                tags.append(tag)
                continue
            new = mapping.get(tag[2:], tag[2:])
            tags.append("O" if new is None else f"{tag[:2]}{new}")
        out.append(Sentence(s.words, tuple(repair_iob2(tags))))
    return out

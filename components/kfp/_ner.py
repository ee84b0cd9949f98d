"""NER glue of the KFP components: data splits and candidate evaluation over ``components.ner_*``."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from transforms.errors import ConfigError

__all__ = ["split_sentences", "write_sentences", "read_sentences"]


def split_sentences(train_data: str, eval_data: str | None, *, seed: int = 13):
    """(train, tune, test) sentences.

    With ``eval_data``: all of ``train_data`` trains; ``eval_data`` is halved
    into tune and test. Without: ``train_data`` is shuffled (seeded) and
    split 80/10/10.
    """
    from components.ner_data import read_ner

    sentences = read_ner(train_data)
    if eval_data:
        held = read_ner(eval_data)
        half = max(1, len(held) // 2)
        train, tune, test = sentences, held[:half], held[half:] or held[:half]
    else:
        shuffled = sentences[:]
        random.Random(seed).shuffle(shuffled)
        n = max(1, len(shuffled) // 10)
        tune, test, train = shuffled[:n], shuffled[n : 2 * n], shuffled[2 * n :]
    if not train or not tune or not test:
        raise ConfigError(
            f"{train_data!r} has {len(sentences)} sentences: too few to hold out tune and test sets (need >= 3)"
        )
    return train, tune, test


def write_sentences(sentences: Sequence, path: str) -> str:
    """Write sentences as ``token<TAB>tag`` lines, a blank line between sentences (read back by ``read_ner``)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for s in sentences:
            for word, tag in zip(s.words, s.tags):
                fh.write(f"{word}\t{tag}\n")
            fh.write("\n")
    return path


def read_sentences(path: str):
    from components.ner_data import read_ner

    return read_ner(path)

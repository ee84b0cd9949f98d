"""The recommender's item vocabulary and product-code rule, shared by training and serving.

Training (``components/recommend_*``) and batch scoring
(``transforms/recommend.py``, ``transforms/inference/recommend.py``) must agree
on which stock codes are products and on the row of each item in the
embedding matrix; both import them from here.

>>> is_product_code("85123A"), is_product_code("POST"), is_product_code("gift_0001_20")
(True, False, False)
>>> vocab = ItemVocab.build([["b", "a"], ["a", "c"]])
>>> vocab.ids, vocab.index("c"), vocab.counts
(('a', 'b', 'c'), 2, (2, 1, 1))
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from transforms.errors import ConfigError

__all__ = ["NON_PRODUCT_CODES", "is_product_code", "ItemVocab", "encode_queries"]

# Stock codes of the UCI Online Retail data that are fees, postage,
# adjustments or vouchers rather than products. Most of them are caught by
# the "starts with a digit" rule below; the set names them for readers and
# for codes that happen to start with a digit.
NON_PRODUCT_CODES = frozenset(
    {
        "POST",
        "DOT",
        "M",
        "C2",
        "BANK CHARGES",
        "AMAZONFEE",
        "CRUK",
        "PADS",
        "S",
        "B",
        "D",
        "m",
    }
)


def is_product_code(code: str | None) -> bool:
    """Whether a stock code names a product (not postage, a fee, a voucher or an adjustment).

    The rule: after trimming, the code is non-empty, is not one of
    :data:`NON_PRODUCT_CODES`, does not start with ``gift_`` (gift vouchers)
    and starts with a digit (every product code of the UCI Online Retail data
    does; ``POST``, ``DOT``, ``AMAZONFEE``, ``BANK CHARGES`` do not).
    """
    if not code:
        return False
    code = code.strip()
    if not code or code in NON_PRODUCT_CODES or code.upper() in NON_PRODUCT_CODES:
        return False
    if code.lower().startswith("gift_"):
        return False
    return code[0].isdigit()


@dataclass(frozen=True)
class ItemVocab:
    """Item ids in a fixed order: row ``i`` of every embedding matrix is ``ids[i]``.

    ``counts[i]`` is the number of baskets (or events) that contained the
    item in the training data; it drives popularity fallbacks. Ids are
    sorted so the same training data always gives the same vocabulary.
    """

    ids: tuple[str, ...]
    counts: tuple[int, ...]
    _index: Mapping[str, int] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self):
        if len(self.ids) != len(self.counts):
            raise ConfigError(
                f"ItemVocab: {len(self.ids)} ids but {len(self.counts)} counts; give one count per id"
            )
        index = {item: i for i, item in enumerate(self.ids)}
        if len(index) != len(self.ids):
            raise ConfigError("ItemVocab: ids must be unique")
        object.__setattr__(self, "_index", index)

    @classmethod
    def build(cls, baskets: Iterable[Sequence[str]], *, min_count: int = 1, min_basket_size: int = 2) -> "ItemVocab":
        """The vocabulary of every item seen in at least ``min_count`` baskets of ``min_basket_size``+ distinct items.

        An item bought only on its own teaches a co-purchase model nothing
        (its embedding would stay at its random start), so by default it is
        left out and served by the cold-start fallback instead.
        """
        counter: Counter[str] = Counter()
        for items in baskets:
            distinct = set(items)
            if len(distinct) >= min_basket_size:
                counter.update(distinct)
        ids = sorted(item for item, n in counter.items() if n >= min_count)
        return cls(tuple(ids), tuple(counter[i] for i in ids))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item: str) -> bool:
        return item in self._index

    def index(self, item: str) -> int:
        """The row of ``item``; raises KeyError when it is not in the vocabulary."""
        return self._index[item]

    def get(self, item: str, default: int = -1) -> int:
        return self._index.get(item, default)

    def encode(self, items: Iterable[str]) -> list[int]:
        """Rows of the known items, in order, unknown ones dropped."""
        return [self._index[i] for i in items if i in self._index]

    def to_json(self) -> str:
        return json.dumps({"ids": list(self.ids), "counts": list(self.counts)})

    @classmethod
    def from_json(cls, text: str) -> "ItemVocab":
        data = json.loads(text)
        try:
            return cls(tuple(data["ids"]), tuple(int(c) for c in data["counts"]))
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"item vocabulary JSON must hold 'ids' and 'counts' lists ({exc!r}); "
                "write it with ItemVocab.to_json"
            ) from exc


def encode_queries(queries: Sequence[Sequence[int]], max_query_items: int, *, weights: Sequence[Sequence[float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Queries of vocabulary rows as the model's (ids, weights) inputs.

    A query longer than ``max_query_items`` keeps its last items (the most
    recent, for a history in time order). Weights default to uniform; they
    are normalized to sum to 1 per query (all zero for an empty query).
    """
    n = len(queries)
    ids = np.zeros((n, max_query_items), np.int32)
    w = np.zeros((n, max_query_items), np.float32)
    for r, q in enumerate(queries):
        q = list(q)[-max_query_items:]
        if not q:
            continue
        ids[r, : len(q)] = np.asarray(q, np.int32) + 1
        if weights is None:
            w[r, : len(q)] = 1.0 / len(q)
        else:
            qw = np.asarray(list(weights[r])[-max_query_items:], np.float32)
            total = float(qw.sum())
            w[r, : len(q)] = qw / total if total > 0 else 1.0 / len(q)
    return ids, w

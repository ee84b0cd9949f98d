"""Catalog attributes from product text: country of origin, net weight/volume, printed price.

Rules and NER work together:

* **country of origin**: a cue phrase followed by a country name ("Made in
  Portugal", "Product of Spain", "Ursprung: Sverige", "Country: Italy",
  "Manufacturing country: Sweden") is the strongest evidence; a NER
  location entity that a cue word precedes ("grown in <LOC>") comes next.
  Names normalize to ISO 3166-1 alpha-2 codes through pycountry, in English
  and in every language pycountry ships translations for
  (:func:`normalize_country`); a NER location that is a subdivision
  ("Bavaria", "Andalucía") maps to its country.
* **net weight / volume**: a quantity with a unit (``500 g``, ``1,5 kg``,
  ``3dl``, ``6 x 330 ml``), preferring a line with a cue word (weight,
  volume, net, vikt, ...), then the title, and never a nutrition-table line.
* **printed price**: an amount with a currency symbol or code (``€2.49``,
  ``12,90 kr``, ``SEK 12.90``, ``RM 5.00``), unit prices (``/kg``) skipped.

:func:`extract_attributes` returns Retail-API-shaped custom attributes
(``CustomAttribute`` with text or numbers) and :func:`merge_attributes`
merges them into a :class:`~transforms.records.Product`.

>>> attrs = extract_attributes("Olive oil. Product of Spain. Net volume 750 ml")
>>> attrs["country_of_origin"].text, attrs["net_volume_ml"].numbers
(('ES',), (750.0,))
"""

from __future__ import annotations

import functools
import gettext
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from transforms.ner_labels import Entity
from transforms.records import CustomAttribute, Product

__all__ = [
    "ATTRIBUTE_KEYS",
    "Evidence",
    "country_evidence",
    "extract_attributes",
    "find_price",
    "find_quantity",
    "merge_attributes",
    "normalize_country",
    "normalize_subdivision",
]

ATTRIBUTE_KEYS = (
    "country_of_origin",
    "net_weight_g",
    "net_volume_ml",
    "pack_count",
    "printed_price",
    "printed_price_currency",
    "locations",
)

# Well-known English names that are not ISO 3166 names, codes or common names.
_EXTRA_NAMES = {
    "uk": "GB",
    "u.k.": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "holland": "NL",
    "the netherlands": "NL",
    "turkey": "TR",
    "russia": "RU",
    "korea": "KR",
    "u.s.": "US",
    "u.s.a.": "US",
    "america": "US",
    "czech republic": "CZ",
    "ivory coast": "CI",
    "macedonia": "MK",
    "swaziland": "SZ",
    "burma": "MM",
}


def _key(name: str) -> str:
    """Case-, accent- and space-insensitive lookup key of a place name."""
    text = unicodedata.normalize("NFKD", name.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.replace("’", "'").split()).strip(" .,:;")


@functools.lru_cache(maxsize=1)
def _country_index() -> dict[str, str]:
    """Name key -> alpha-2 over pycountry's names and all of its translations (ambiguous keys dropped)."""
    import pycountry

    english: dict[str, str] = {}
    for country in pycountry.countries:
        for attr in ("name", "common_name", "official_name"):
            value = getattr(country, attr, None)
            if value:
                english[_key(value)] = country.alpha_2
                if "," in value:  # "Korea, Republic of" -> also "Republic of Korea"
                    head, _, tail = value.partition(",")
                    english[_key(f"{tail} {head}")] = country.alpha_2
    for name, code in _EXTRA_NAMES.items():
        english[_key(name)] = code

    translated: dict[str, set[str]] = {}
    locales = pycountry.LOCALES_DIR
    for lang in sorted(os.listdir(locales)):
        try:
            tr = gettext.translation("iso3166-1", locales, languages=[lang])
        except OSError:
            continue
        for country in pycountry.countries:
            for attr in ("name", "common_name", "official_name"):
                value = getattr(country, attr, None)
                if value:
                    local = tr.gettext(value)
                    if local != value:
                        translated.setdefault(_key(local), set()).add(country.alpha_2)
    index = {k: next(iter(v)) for k, v in translated.items() if len(v) == 1 and len(k) > 2}
    index.update(english)  # English names win over any translation
    return index


@functools.lru_cache(maxsize=1)
def _subdivision_index() -> dict[str, str]:
    import pycountry

    seen: dict[str, set[str]] = {}
    for sub in pycountry.subdivisions:
        seen.setdefault(_key(sub.name), set()).add(sub.country_code)
    return {k: next(iter(v)) for k, v in seen.items() if len(v) == 1 and len(k) > 3}


def normalize_country(name: str, *, allow_codes: bool = True) -> str | None:
    """ISO 3166-1 alpha-2 code of a country name in any language pycountry knows, or ``None``.

    With ``allow_codes``, an upper-case alpha-2/alpha-3 code ("SE", "USA")
    is accepted too (lower-case codes are too often ordinary words: "in", "can").

    >>> [normalize_country(n) for n in ("Sverige", "The Netherlands", "USA", "España", "Atlantis")]
    ['SE', 'NL', 'US', 'ES', None]
    """
    import pycountry

    if not name or not name.strip():
        return None
    text = name.strip()
    found = _country_index().get(_key(text))
    if found:
        return found
    if _key(text).startswith("the "):
        found = _country_index().get(_key(text)[4:])
        if found:
            return found
    if allow_codes and text.isupper() and len(text) in (2, 3):
        country = pycountry.countries.get(alpha_2=text) if len(text) == 2 else pycountry.countries.get(alpha_3=text)
        if country is not None:
            return country.alpha_2
    return None


def normalize_subdivision(name: str) -> str | None:
    """Alpha-2 code of the country a subdivision (state, region) belongs to, or ``None``.

    >>> normalize_subdivision("Andalucía")
    'ES'
    """
    return _subdivision_index().get(_key(name))


# --------------------------------------------------------------------------
# Country of origin
# --------------------------------------------------------------------------


class Evidence(NamedTuple):
    """Why a value was chosen: the value, how strong (0..1), the source field and the matched text."""

    value: object
    score: float
    source: str
    text: str


_CUE = (
    r"made\s+in|product\s+of|produce\s+of|produced\s+in|grown\s+in|manufactured\s+in|imported\s+from|"
    r"country\s+of\s+origin|origin|origins?\s+country|manufacturing\s+country|country(?:\s+and\s+volume)?|"
    r"ursprung(?:sland)?|ursprungsland|tillverkad\s+i|producerad\s+i|framställd\s+i|odlad\s+i|"
    r"hergestellt\s+in|herkunft(?:sland)?|herkunftsland|hecho\s+en|producto\s+de|origen|fabriqué\s+en|"
    r"produit\s+de|origine|prodotto\s+in|fabbricato\s+in|feito\s+em|"
    # weaker: where it was packed, not where it comes from
    r"packed\s+in|packad\s+i|verpackt\s+in"
)
_WEAK_CUE = re.compile(r"^(?:packed|packad|verpackt)\b", re.IGNORECASE)
_CUE_RE = re.compile(rf"\b(?:{_CUE})\b\s*[:\-–]?\s*", re.IGNORECASE)
# A country name: one to four capitalised or lower-case words (letters, spaces, dots, apostrophes, hyphens).
_NAME_RE = re.compile(r"(?:the\s+)?[^\W\d_][\w.'’\-]*(?:\s+[^\W\d_][\w.'’\-]*){0,3}", re.IGNORECASE)
_CUE_WORDS = re.compile(rf"(?:{_CUE}|from|in)\s*[:\-–]?\s*$", re.IGNORECASE)


def _country_after_cue(text: str, pos: int) -> tuple[str, str] | None:
    """The longest word run starting at ``pos`` that normalizes to a country: (code, matched text)."""
    m = _NAME_RE.match(text, pos)
    if not m:
        return None
    words = m.group().split()
    for n in range(len(words), 0, -1):
        candidate = " ".join(words[:n]).rstrip(".,;:")
        code = normalize_country(candidate)
        if code:
            return code, candidate
    return None


def country_evidence(
    text: str,
    *,
    source: str = "text",
    entities: Sequence[Entity] = (),
    source_weight: float = 1.0,
) -> list[Evidence]:
    """Every piece of country-of-origin evidence in ``text`` (rules first, then NER locations).

    ``entities`` are NER entities over the same ``text``; a location entity
    counts when a cue word ("in", "from", "made in", "Ursprung:", ...) ends
    just before it, scored by the model's confidence.
    """
    out = []
    for cue in _CUE_RE.finditer(text):
        found = _country_after_cue(text, cue.end())
        if found:
            code, name = found
            weight = 0.5 if _WEAK_CUE.match(cue.group()) else 1.0
            out.append(Evidence(code, weight * source_weight, source, text[cue.start() : cue.end()] + name))
    for ent in entities:
        if ent.label != "LOC":
            continue
        before = text[max(0, ent.start - 40) : ent.start]
        if not _CUE_WORDS.search(before):
            continue
        code = normalize_country(ent.text, allow_codes=False) or normalize_subdivision(ent.text)
        if code:
            out.append(Evidence(code, 0.8 * ent.score * source_weight, source, before[-20:] + ent.text))
    return out


# --------------------------------------------------------------------------
# Quantities
# --------------------------------------------------------------------------

_UNITS = {
    "mg": ("g", 0.001),
    "g": ("g", 1.0),
    "gr": ("g", 1.0),
    "gram": ("g", 1.0),
    "grams": ("g", 1.0),
    "gramm": ("g", 1.0),
    "kg": ("g", 1000.0),
    "kilo": ("g", 1000.0),
    "kilogram": ("g", 1000.0),
    "oz": ("g", 28.349523125),
    "lb": ("g", 453.59237),
    "lbs": ("g", 453.59237),
    "ml": ("ml", 1.0),
    "cl": ("ml", 10.0),
    "dl": ("ml", 100.0),
    "l": ("ml", 1000.0),
    "ltr": ("ml", 1000.0),
    "liter": ("ml", 1000.0),
    "litre": ("ml", 1000.0),
    "liters": ("ml", 1000.0),
    "litres": ("ml", 1000.0),
    "fl oz": ("ml", 29.5735295625),
}
_NUMBER = r"\d+(?:[.,]\d+)?"
# (?<!\d): a match starts where a digit run starts; trying every position inside a long run of
# digits made the search quadratic (20,000 digits of OCR noise took minutes).
_QTY_RE = re.compile(
    rf"(?<!\d)(?:(?P<count>\d+)\s*[x×]\s*)?(?P<num>{_NUMBER})\s*(?P<unit>fl\.?\s*oz|{'|'.join(sorted((u for u in _UNITS if ' ' not in u), key=len, reverse=True))})(?![\w])",
    re.IGNORECASE,
)
_QTY_CUE_RE = re.compile(
    r"\b(?:net|netto|nettovikt|weight|wt|vikt|volume|volym|content|contents|inhalt|poids|peso|size|storlek)\b",
    re.IGNORECASE,
)
_NUTRITION_RE = re.compile(
    r"\b(?:energ\w*|fat|fett|carbohydrate\w*|kolhydrat\w*|sugar\w*|socker\w*|protein\w*|salt|fib(?:er|re)|"
    r"fiber|vitamin\w*|calcium|kalcium|riboflavin|varav|of which|per\s+100|nutrition\w*|näring\w*|kcal|kj|"
    r"kilojoule|kilocalorie|jod|iodine|sodium|natrium)\b",
    re.IGNORECASE,
)
# a unit price follows the match ("29,90 kr/kg", "500 g per pack"); used as .match(text, pos), no slicing
_PER_UNIT_AT = re.compile(r"\s*(?:/|per\b|pro\b|kr/)", re.IGNORECASE)


def _number(text: str) -> float:
    return float(text.replace(",", "."))


def find_quantity(text: str, *, title: str | None = None) -> dict[str, Evidence]:
    """Net weight (g) and/or volume (ml) of a product from its text, with ``pack_count`` for ``N x Q``.

    >>> q = find_quantity("Manufacturer and volume: ALPRO , 1l\\nfat ca 1.8 gram")
    >>> q["net_volume_ml"].value
    1000.0
    """
    candidates: list[tuple[int, int, re.Match, str]] = []  # (priority, order, match, source)
    sources = [("title", title)] if title else []
    sources.append(("text", text))
    order = 0
    for source, body in sources:
        for line in body.splitlines():
            if _NUTRITION_RE.search(line):
                continue
            line_priority = 0 if _QTY_CUE_RE.search(line) else 1 if source == "title" else 2  # once per line
            for m in _QTY_RE.finditer(line):
                if _PER_UNIT_AT.match(line, m.end()):
                    continue
                priority = line_priority
                candidates.append((priority, order, m, source))
                order += 1
    out: dict[str, Evidence] = {}
    for priority, _, m, source in sorted(candidates, key=lambda c: (c[0], c[1])):
        unit_text = re.sub(r"[\s.]+", " ", m.group("unit").lower()).strip()
        dim, factor = _UNITS[unit_text]
        key = "net_weight_g" if dim == "g" else "net_volume_ml"
        if key in out:
            continue
        count = int(m.group("count")) if m.group("count") else 1
        value = round(_number(m.group("num")) * factor * count, 3)
        score = (1.0, 0.9, 0.6)[priority]
        out[key] = Evidence(value, score, source, m.group())
        if count > 1 and "pack_count" not in out:
            out["pack_count"] = Evidence(float(count), score, source, m.group())
    # A product is sold by weight or by volume: a second dimension found
    # only on weaker evidence ("2 l ... made from 3 kg of apples") is dropped.
    if "net_weight_g" in out and "net_volume_ml" in out:
        weaker = min(("net_weight_g", "net_volume_ml"), key=lambda k: out[k].score)
        if out["net_weight_g"].score != out["net_volume_ml"].score:
            del out[weaker]
    return out


# --------------------------------------------------------------------------
# Price
# --------------------------------------------------------------------------

_CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "₹": "INR", "kr": "SEK", ":-": "SEK", "rm": "MYR"}
_CODES = r"EUR|USD|GBP|SEK|NOK|DKK|CHF|JPY|MYR|SGD|AUD|CAD|PLN"
_PRICE_RE = re.compile(
    rf"(?:(?P<pre>€|\$|£|¥|₹|\b(?:{_CODES}|RM)\b)\s?(?P<num1>\d{{1,6}}(?:[.,]\d{{2}})?)(?!\d)"
    rf"|(?<![\d.,])(?P<num2>\d{{1,6}}(?:[.,]\d{{2}})?)\s?(?P<post>€|:-|\bkr\b|\b(?:{_CODES})\b))",
    re.IGNORECASE,
)


def find_price(text: str) -> Evidence | None:
    """The first printed price (amount and ISO 4217 currency) in ``text``; unit prices (``/kg``) skipped.

    >>> find_price("Jämförpris 59,80 kr/kg  Pris 29,90 kr").value
    (29.9, 'SEK')
    """
    for m in _PRICE_RE.finditer(text):
        if _PER_UNIT_AT.match(text, m.end()):
            continue
        symbol = (m.group("pre") or m.group("post")).strip()
        currency = _CURRENCY_SYMBOLS.get(symbol.lower(), symbol.upper())
        amount = _number(m.group("num1") or m.group("num2"))
        return Evidence((amount, currency), 0.9, "text", m.group())
    return None


# --------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------

# How much a field's evidence counts: the catalog's own text over OCR of a photo.
SOURCE_WEIGHTS = {"title": 1.0, "description": 0.95, "ocr": 0.9}


def extract_attributes(
    text: str | Mapping[str, str],
    *,
    entities: Mapping[str, Sequence[Entity]] | Sequence[Entity] = (),
    title: str | None = None,
) -> dict[str, CustomAttribute]:
    """Retail custom attributes found in a product's text.

    ``text`` is one string or a mapping of source field -> text (``title``,
    ``description``, ``ocr``); ``entities`` are NER entities per field (or
    for the one string). Returns only the attributes found, among
    :data:`ATTRIBUTE_KEYS`.
    """
    fields = {"text": text} if isinstance(text, str) else {k: v for k, v in text.items() if v}
    if isinstance(entities, Mapping):
        ents = dict(entities)
    else:
        ents = {next(iter(fields), "text"): list(entities)}
    title = title if title is not None else fields.get("title")

    countries: list[Evidence] = []
    for source, body in fields.items():
        countries += country_evidence(
            body, source=source, entities=ents.get(source, ()), source_weight=SOURCE_WEIGHTS.get(source, 1.0)
        )
    out: dict[str, CustomAttribute] = {}
    if countries:
        best: dict[str, float] = {}
        for ev in countries:
            best[ev.value] = best.get(ev.value, 0.0) + ev.score
        out["country_of_origin"] = CustomAttribute(text=(max(best, key=best.get),))

    body = "\n".join(v for k, v in fields.items() if k != "title")
    quantity = find_quantity(body, title=title)
    for key in ("net_weight_g", "net_volume_ml", "pack_count"):
        if key in quantity:
            out[key] = CustomAttribute(numbers=(float(quantity[key].value),))

    for source in ("ocr", "description", "text", "title"):
        if source in fields:
            price = find_price(fields[source])
            if price:
                amount, currency = price.value
                out["printed_price"] = CustomAttribute(numbers=(amount,))
                out["printed_price_currency"] = CustomAttribute(text=(currency,))
                break

    locations = sorted({e.text for es in ents.values() for e in es if e.label == "LOC"})
    if locations:
        out["locations"] = CustomAttribute(text=tuple(locations))
    return out


def merge_attributes(
    product: Product, found: Mapping[str, CustomAttribute], *, overwrite: bool = False
) -> Product:
    """``product`` with ``found`` attributes added; the catalog's own values win unless ``overwrite``."""
    merged = dict(product.attributes or {})
    for key, value in found.items():
        if overwrite or key not in merged:
            merged[key] = value
    return product._replace(attributes=merged or None)

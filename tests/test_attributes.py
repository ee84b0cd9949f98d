"""Attribute rules and country normalization, on real grocery product text (MIT, tests/testdata/ner)."""

from __future__ import annotations

import csv
import pathlib

import pytest

from transforms.attributes import (
    extract_attributes,
    find_price,
    find_quantity,
    merge_attributes,
    normalize_country,
)
from transforms.ner_labels import Entity
from transforms.records import CustomAttribute, Product

TESTDATA = pathlib.Path(__file__).parent / "testdata" / "ner"


def _grocery_rows():
    with open(TESTDATA / "grocery_products.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _product_text(row) -> str:
    """The product page text when the data set has it, else its title and description."""
    info = TESTDATA / "grocery_info" / f"{row['class_name']}_Information.txt"
    if info.exists():
        return info.read_text(encoding="utf-8")
    return f"Title: {row['title_sv']}\nDescription: {row['description_en']}"


def test_country_names_in_many_languages():
    assert normalize_country("Sverige") == "SE"
    assert normalize_country("Deutschland") == "DE"
    assert normalize_country("the Netherlands") == "NL"
    assert normalize_country("United States of America") == "US"
    assert normalize_country("Côte d'Ivoire") == "CI"
    assert normalize_country("in") is None  # a lower-case word is not a code
    assert normalize_country("Narnia") is None


@pytest.mark.parametrize(
    "text, code",
    [
        ("Made in Portugal", "PT"),
        ("Product of Spain", "ES"),
        ("Ursprung: Sverige", "SE"),
        ("Hergestellt in Deutschland", "DE"),
        ("Country of origin: The Netherlands. Packed in Belgium.", "NL"),
        ("Fresh basil, 30 g", None),
    ],
)
def test_country_of_origin_rules(text, code):
    found = extract_attributes(text).get("country_of_origin")
    assert (found.text[0] if found else None) == code


def test_ner_location_with_a_cue_counts_and_without_does_not():
    text = "Sweet oranges grown in Andalucía, sold in our Lund stores"
    ents = [Entity("LOC", "Andalucía", 23, 32, 0.95)]
    assert extract_attributes(text, entities=ents)["country_of_origin"].text == ("ES",)
    plain = "A recipe from a Lisbon chef"
    assert "country_of_origin" not in extract_attributes(plain, entities=[Entity("LOC", "Lisbon", 16, 22, 0.9)])


def test_quantities_and_prices():
    assert find_quantity("Nettovikt 1,5 kg")["net_weight_g"].value == 1500.0
    q = find_quantity("Cola 6 x 330 ml")
    assert q["net_volume_ml"].value == 1980.0 and q["pack_count"].value == 6.0
    assert find_quantity("3dl")["net_volume_ml"].value == 300.0
    assert find_quantity("fat ca 1.8 gram\nprotein 3 gram") == {}
    assert find_price("Jämförpris 59,80 kr/kg  Pris 29,90 kr").value == (29.9, "SEK")
    assert find_price("now only €2.49!").value == (2.49, "EUR")
    assert find_price("TOTAL RM 15.90").value == (15.9, "MYR")
    assert find_price("500 g") is None


def test_merge_keeps_catalog_values():
    product = Product(id="1", title="x", attributes={"country_of_origin": CustomAttribute(text=("FR",))})
    found = {"country_of_origin": CustomAttribute(text=("ES",)), "net_weight_g": CustomAttribute(numbers=(500.0,))}
    merged = merge_attributes(product, found)
    assert merged.attributes["country_of_origin"].text == ("FR",)
    assert merged.attributes["net_weight_g"].numbers == (500.0,)
    assert merge_attributes(product, found, overwrite=True).attributes["country_of_origin"].text == ("ES",)


def test_grocery_country_of_origin_accuracy():
    """81 real products (Grocery Store Dataset): country of origin against the data set's label."""
    rows = _grocery_rows()
    assert len(rows) == 81
    correct = 0
    misses = []
    for row in rows:
        expected = normalize_country(row["country_normalized"]) if row["country_normalized"] else None
        if row["country_normalized"]:
            assert expected is not None, f"label {row['country_normalized']!r} does not normalize"
        found = extract_attributes(_product_text(row)).get("country_of_origin")
        got = found.text[0] if found else None
        correct += got == expected
        if got != expected:
            misses.append((row["class_name"], expected, got))
    accuracy = correct / len(rows)
    assert accuracy >= 0.9, f"accuracy {accuracy:.3f}; misses: {misses}"


def test_grocery_net_quantity_accuracy():
    """The product's volume column ("ca 180g", "1l", "3dl") against what the rules find in its text."""
    rows = [r for r in _grocery_rows() if r["volume"]]
    correct = 0
    for row in rows:
        expected = find_quantity(row["volume"])
        (key, evidence), = expected.items()
        found = extract_attributes(_product_text(row)).get(key)
        correct += found is not None and found.numbers == (evidence.value,)
    assert correct / len(rows) >= 0.9, f"{correct}/{len(rows)}"

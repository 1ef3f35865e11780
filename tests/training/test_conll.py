"""The CoNLL/BIO importer: token-per-line files with BIO tags become texts with entity spans."""

from __future__ import annotations

import pytest

from core.errors import ImportValidationError, InvalidInput
from training.datasets.importers import (
    Limits,
    Validated,
    decode_text,
    pick_importer,
    validate,
)

LIMITS = Limits(max_examples=1000, max_labels=100, max_text_chars=500)


def load(data: str, filename: str = "ner.conll") -> Validated:
    """The upload path a user's file takes: pick by name, decode, parse, validate."""
    importer = pick_importer(filename, None, "text-entities")
    parsed = importer.parse(decode_text(data.encode()), "text-entities")
    return validate(parsed, dataset_type="text-entities", limits=LIMITS)


def spans(checked: Validated) -> list[tuple[int, str, list[tuple[int, int, str, str]]]]:
    """(line, text, [(start, end, entity, value)]) of each example; checks the spans index it."""
    out = []
    for ex in checked.examples:
        assert ex.text is not None and ex.label is None
        found = []
        for span in ex.annotations or []:
            assert ex.text[span["start"] : span["end"]] == span["value"]
            found.append((span["start"], span["end"], span["entity"], span["value"]))
        out.append((ex.line, ex.text, found))
    return out


def reported(exc: pytest.ExceptionInfo[ImportValidationError]) -> list[tuple[int, str]]:
    return [(e["line"], e["message"]) for e in exc.value.details["errors"]]


def test_two_sentences_become_two_examples_with_exact_spans() -> None:
    data = (
        "Fly\tO\nto\tO\nNew\tB-city\nYork\tI-city\ntomorrow\tB-date\n"
        "\n"
        "book\tO\ntwo\tB-count\nseats\tO\n"
    )

    checked = load(data)

    assert spans(checked) == [
        (
            1,
            "Fly to New York tomorrow",
            [(7, 15, "city", "New York"), (16, 24, "date", "tomorrow")],
        ),
        (7, "book two seats", [(5, 8, "count", "two")]),
    ]
    [first, _] = checked.examples
    assert first.annotations == [
        {"start": 7, "end": 15, "entity": "city", "value": "New York"},
        {"start": 16, "end": 24, "entity": "date", "value": "tomorrow"},
    ]


def test_b_after_b_of_the_same_type_begins_a_second_entity() -> None:
    checked = load("Paris\tB-city\nRome\tB-city\nand\tO\nOslo\tB-city\n")

    assert spans(checked) == [
        (
            1,
            "Paris Rome and Oslo",
            [(0, 5, "city", "Paris"), (6, 10, "city", "Rome"), (15, 19, "city", "Oslo")],
        )
    ]


def test_sentence_without_entities_has_no_spans() -> None:
    assert spans(load("hello\tO\nthere\tO\n")) == [(1, "hello there", [])]


def test_comments_are_skipped_and_the_example_line_is_its_first_token() -> None:
    data = (
        "# sent_id = 1\n"
        "hi\tO\n"
        "# a comment inside a sentence\n"
        "Paris\tB-city\n"
        "\n"
        "  # indented comment\n"
        "\n"
        "bye\tO\n"
    )

    assert spans(load(data)) == [
        (2, "hi Paris", [(3, 8, "city", "Paris")]),
        (8, "bye", []),
    ]


def test_a_hash_token_with_a_tab_is_a_token_not_a_comment() -> None:
    assert spans(load("#travel\tO\nto\tO\nParis\tB-city\n")) == [
        (1, "#travel to Paris", [(11, 16, "city", "Paris")])
    ]


def test_a_single_space_separates_token_and_tag_when_there_is_no_tab() -> None:
    data = "Fly O\nto O\nNew B-city\nYork I-city\n\nbye\tO\n"

    assert spans(load(data, "ner.bio")) == [
        (1, "Fly to New York", [(7, 15, "city", "New York")]),
        (6, "bye", []),
    ]


def test_crlf_extra_blank_lines_and_no_final_newline() -> None:
    data = "\r\n\r\nfly\tO\r\nParis\tB-city\r\n\r\n\r\n\r\nbye\tO"

    assert spans(load(data)) == [
        (3, "fly Paris", [(4, 9, "city", "Paris")]),
        (8, "bye", []),
    ]


def test_with_a_tab_a_token_may_hold_spaces() -> None:
    assert spans(load("New York\tB-city\nis\tO\nbig\tO\n")) == [
        (1, "New York is big", [(0, 8, "city", "New York")])
    ]


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (
            "fly\tO\nParis\tI-city\n",
            2,
            "I-city does not continue a B-city or I-city: the previous tag is O; "
            "write B-city to begin the entity",
        ),
        (
            "Paris\tI-city\n",
            1,
            "I-city does not continue a B-city or I-city: it is the first token of the "
            "sentence; write B-city to begin the entity",
        ),
        (
            "New\tB-city\nYork\tI-state\n",
            2,
            "I-state does not continue a B-state or I-state: the previous tag is B-city; "
            "write B-state to begin the entity",
        ),
        (
            "Paris\tB-city\n\n# next sentence\nRome\tI-city\n",
            4,
            "I-city does not continue a B-city or I-city: it is the first token of the "
            "sentence; write B-city to begin the entity",
        ),
        ("fly\tO\nParis\tX-city\n", 2, "tag 'X-city' is not O, B-<type> or I-<type>"),
        (
            "Paris\tb-city\n",
            1,
            "tag 'b-city' is not O, B-<type> or I-<type> (tags are case-sensitive: write 'B-city')",
        ),
        (
            "fly\t0\n",
            1,
            "tag '0' is not O, B-<type> or I-<type> (write the letter O, not the digit 0)",
        ),
        (
            "Paris\tS-city\n",
            1,
            "tag 'S-city' is not O, B-<type> or I-<type> (BIOES/BILOU tags are not "
            "supported; convert them to BIO)",
        ),
        (
            "fly\tO\nParis\n",
            2,
            "no tag after the token 'Paris'; write `token<TAB>tag`, with O for a token "
            "outside any entity",
        ),
        ("fly\tO\n\nParis\tB-\n", 3, "tag 'B-' has no entity type; write B-<type>, e.g. B-city"),
        (
            "Paris\tB-city\nYork\tI- \n",
            2,
            "tag 'I-' has no entity type; write I-<type>, e.g. I-city",
        ),
        (
            "Paris\tNNP\tB-city\n",
            1,
            "expected `token<TAB>tag`, found 3 columns; keep only the token and its BIO tag",
        ),
        ("fly\tO\n\tO\n", 2, "no token before the tag 'O'"),
        (
            "# sent_id\t= 1\nfly\tO\n",
            1,
            "tag '= 1' is not O, B-<type> or I-<type> (a line starting with # is a comment "
            "only when it holds no tab)",
        ),
    ],
    ids=[
        "I-after-O",
        "I-first-in-sentence",
        "I-of-another-type",
        "I-after-blank-and-comment",
        "unknown-prefix",
        "lower-case",
        "digit-zero",
        "bioes",
        "no-tag",
        "B-without-type",
        "I-without-type",
        "three-columns",
        "no-token",
        "comment-with-tab",
    ],
)
def test_broken_lines_name_the_line_and_say_what_to_write(
    data: str, line: int, message: str
) -> None:
    with pytest.raises(ImportValidationError) as exc:
        load(data)

    assert reported(exc) == [(line, message)]
    assert exc.value.message == f"the file has bad lines: line {line}: {message}"


def test_every_broken_line_is_reported_without_blaming_lines_after_a_bad_tag() -> None:
    data = (
        "Paris\tI-city\n"  # 1: I- first in sentence; taken as B-city from here on
        "Rome\tI-city\n"  # 2: continues it
        "x\tQ\n"  # 3: unreadable tag
        "Berlin\tI-city\n"  # 4: not blamed: the tag before it is unknown
        "Oslo\tI-town\n"  # 5: does not continue I-city
    )

    with pytest.raises(ImportValidationError) as exc:
        load(data)

    assert [line for line, _ in reported(exc)] == [1, 3, 5]
    assert "the previous tag is I-city" in reported(exc)[2][1]


@pytest.mark.parametrize("text", ["", "\n\n  \n\t\n", "# only a comment\n\n# and another\n"])
def test_a_file_without_token_lines_holds_no_examples(text: str) -> None:
    importer = pick_importer("ner.conll", None, "text-entities")

    with pytest.raises(ImportValidationError, match="^the file holds no examples"):
        importer.parse(text, "text-entities")


def test_duplicate_sentences_are_counted_like_other_formats() -> None:
    checked = load("hi\tO\n\nhi\tO\n\nbye\tO\n")

    assert [ex.text for ex in checked.examples] == ["hi", "bye"]
    assert checked.duplicates == 1
    assert checked.first_duplicate_line == 3


@pytest.mark.parametrize("filename", ["ner.conll", "ner.bio", "data/NER.BIO", "x.CoNLL"])
def test_pick_importer_knows_the_conll_extensions(filename: str) -> None:
    assert pick_importer(filename, None, "text-entities").name == "conll"


def test_explicit_conll_format_wins_over_the_extension() -> None:
    assert pick_importer("ner.txt", "conll", "text-entities").name == "conll"


def test_conll_for_an_intent_dataset_is_refused_naming_usable_formats() -> None:
    with pytest.raises(InvalidInput) as exc:
        pick_importer("ner.conll", None, "text-intent")

    assert exc.value.message == (
        "format 'conll' cannot hold 'text-intent' datasets; "
        "use one of: csv, json, jsonl, rasa-yaml, tsv"
    )

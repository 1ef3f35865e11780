"""Dataset importers: what a user uploads, what Parley keeps, and the lines it blames."""

from __future__ import annotations

import json

import pytest

from core.errors import ImportValidationError, InvalidInput, LimitExceeded, UnknownPluginError
from training.datasets.formats.rasa_nlu import parse_rasa_example
from training.datasets.importers import (
    Limits,
    Validated,
    decode_text,
    pick_importer,
    validate,
)
from training.datasets.types import ParsedDataset, ParsedExample

LIMITS = Limits(max_examples=1000, max_labels=100, max_text_chars=500)


def load(
    data: bytes | str,
    filename: str,
    *,
    dataset_type: str = "text-intent",
    limits: Limits = LIMITS,
    existing: set[tuple[str, str | None]] | None = None,
) -> Validated:
    """The upload path a user's file takes: pick by name, decode, parse, validate."""
    raw = data.encode() if isinstance(data, str) else data
    importer = pick_importer(filename, None, dataset_type)
    parsed = importer.parse(decode_text(raw), dataset_type)
    return validate(parsed, dataset_type=dataset_type, limits=limits, existing=existing)


def rows(checked: Validated) -> list[tuple[int, str | None, str | None]]:
    return [(ex.line, ex.text, ex.label) for ex in checked.examples]


def reported(exc: pytest.ExceptionInfo[ImportValidationError]) -> list[tuple[int, str]]:
    return [(e["line"], e["message"]) for e in exc.value.details["errors"]]


# --- CSV --------------------------------------------------------------------------------------


def test_csv_with_bom_crlf_and_quoted_commas() -> None:
    data = (
        '\ufefftext,label\r\n"hello, world",greet\r\n"she said ""hi""",greet\r\nbye,goodbye\r\n'
    ).encode()

    checked = load(data, "intents.csv")

    assert rows(checked) == [
        (2, "hello, world", "greet"),
        (3, 'she said "hi"', "greet"),
        (4, "bye", "goodbye"),
    ]
    assert checked.duplicates == 0
    assert checked.first_duplicate_line is None


def test_csv_header_is_case_insensitive_and_columns_may_be_swapped() -> None:
    checked = load(" Label , TEXT \ngreet,hi there\n", "intents.csv")

    assert rows(checked) == [(2, "hi there", "greet")]


def test_csv_text_and_label_are_stripped() -> None:
    checked = load("text,label\n  hi there  , greet \n", "intents.csv")

    assert rows(checked) == [(2, "hi there", "greet")]


def test_csv_row_errors_name_the_line_counting_the_header_as_line_1() -> None:
    data = "text,label\nhi,greet\n,greet\nhello,\n   ,bye\n"

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.csv")

    assert "line 3: empty text" in exc.value.message
    assert "line 4: missing label" in exc.value.message
    assert reported(exc) == [(3, "empty text"), (4, "missing label"), (5, "empty text")]


def test_csv_blank_lines_are_skipped_but_still_counted() -> None:
    data = "text,label\n\nhi,greet\n\n,greet\n"

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.csv")

    assert reported(exc) == [(5, "empty text")]


def test_csv_wrong_field_count_names_expected_and_found() -> None:
    data = "text,label\nhi,greet,extra\nok,fine\nlonely\n"

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.csv")

    assert reported(exc) == [(2, "expected 2 fields, found 3"), (4, "expected 2 fields, found 1")]
    assert "line 2: expected 2 fields, found 3" in exc.value.message


def test_csv_multiline_quoted_field_is_one_example_and_later_lines_stay_right() -> None:
    data = 'text,label\n"two\nlines",greet\n,greet\n'

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.csv")

    assert reported(exc) == [(4, "empty text")]


def test_csv_error_in_multiline_record_names_the_line_where_the_record_starts() -> None:
    data = 'text,label\n"two\nlines",\n'

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.csv")

    assert reported(exc) == [(2, "missing label")]


def test_csv_malformed_quoting_names_the_line() -> None:
    data = 'text,label\nok,fine\n"a"b,greet\n'

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.csv")

    [(line, message)] = reported(exc)
    assert line == 3
    assert message.startswith("malformed row")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("text\n", ["line 1", "missing column(s) label", "the header must be `text,label`"]),
        (
            "text,label,intent\n",
            ["line 1", "unexpected column(s) 'intent'", "found: text,label,intent"],
        ),
        (
            "text,intent\n",
            ["missing column(s) label", "unexpected column(s) 'intent'"],
        ),
        ("utterance,category\n", ["missing column(s) text, label"]),
        ("text,label,label\n", ["a column appears twice"]),
    ],
    ids=["missing", "extra", "renamed", "both-wrong", "twice"],
)
def test_csv_bad_header_names_the_columns(header: str, expected: list[str]) -> None:
    with pytest.raises(ImportValidationError) as exc:
        load(header + "hi,greet\n", "intents.csv")

    for part in expected:
        assert part in exc.value.message
    assert reported(exc) == [(1, "bad header")]


def test_csv_with_only_a_header_holds_no_examples() -> None:
    with pytest.raises(ImportValidationError, match="holds no examples"):
        load("text,label\n", "intents.csv")


# --- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"   \n\r\n\t"], ids=["zero-bytes", "whitespace"])
def test_empty_file_is_refused(data: bytes) -> None:
    with pytest.raises(ImportValidationError, match="the file is empty"):
        decode_text(data)


def test_file_with_only_a_bom_is_empty() -> None:
    with pytest.raises(ImportValidationError, match="the file is empty"):
        load(b"\xef\xbb\xbf", "intents.csv")


def test_latin1_bytes_name_the_line_and_utf8() -> None:
    data = "text,label\nhi,greet\ncafé,order\n".encode("latin-1")

    with pytest.raises(ImportValidationError) as exc:
        decode_text(data)

    assert exc.value.message.startswith("line 3:")
    assert "UTF-8" in exc.value.message
    assert "0xe9" in exc.value.message
    assert reported(exc) == [(3, "not valid UTF-8")]


def test_binary_file_with_nul_bytes_is_refused_as_binary() -> None:
    data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"

    with pytest.raises(ImportValidationError) as exc:
        decode_text(data)

    assert "binary" in exc.value.message
    assert "NUL" in exc.value.message


def test_utf16_text_is_told_to_save_as_utf8_not_called_binary() -> None:
    data = "text\tlabel\nhi\tgreet\n".encode("utf-16")

    with pytest.raises(ImportValidationError) as exc:
        decode_text(data)

    assert "UTF-8" in exc.value.message
    assert "binary" not in exc.value.message


# --- TSV --------------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["intents.tsv", "intents.tab"])
def test_tsv_keeps_commas_in_text(filename: str) -> None:
    checked = load("text\tlabel\nhi, there\tgreet\nbye\tgoodbye\n", filename)

    assert rows(checked) == [(2, "hi, there", "greet"), (3, "bye", "goodbye")]


def test_tsv_bad_header_shows_a_tab_separator() -> None:
    with pytest.raises(ImportValidationError) as exc:
        load("text\tintent\nhi\tgreet\n", "intents.tsv")

    assert "the header must be `text<tab>label`" in exc.value.message
    assert "unexpected column(s) 'intent'" in exc.value.message


def test_csv_file_uploaded_as_tsv_is_a_header_error_not_a_silent_single_column() -> None:
    with pytest.raises(ImportValidationError) as exc:
        load("text,label\nhi,greet\n", "intents.tsv")

    assert "missing column(s) text, label" in exc.value.message


# --- JSON -------------------------------------------------------------------------------------


def test_json_array_of_objects() -> None:
    data = json.dumps(
        [
            {"text": "hi", "label": "greet"},
            {"text": "two adults", "label": 2},
        ]
    )

    checked = load(data, "intents.json")

    assert rows(checked) == [(1, "hi", "greet"), (2, "two adults", "2")]


def test_json_object_with_examples_list() -> None:
    data = json.dumps({"examples": [{"text": "hi", "label": "greet"}]})

    assert rows(load(data, "intents.json")) == [(1, "hi", "greet")]


def test_json_malformed_names_the_line() -> None:
    data = '[\n  {"text": "hi", "label": "greet"},\n  {"text": "bye" "label": "x"}\n]'

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.json")

    assert exc.value.message.startswith("line 3: malformed JSON")
    assert reported(exc)[0][0] == 3


def test_json_that_is_not_an_array_is_refused() -> None:
    with pytest.raises(ImportValidationError, match="expected a JSON array"):
        load('{"text": "hi", "label": "greet"}', "intents.json")


def test_json_unexpected_fields_are_named_with_the_allowed_ones() -> None:
    data = json.dumps(
        [{"text": "hi", "label": "greet"}, {"text": "yo", "label": "greet", "intent": "x"}]
    )

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.json")

    assert "numbered from 1" in exc.value.message
    assert reported(exc) == [(2, "unexpected field(s) intent; allowed: entities, label, text")]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"text": 5, "label": "greet"}, "text must be a string"),
        ({"text": "hi", "label": ["a"]}, "label must be a string"),
        ("hi", "expected an object with text and label, found str"),
    ],
    ids=["text-int", "label-list", "not-object"],
)
def test_json_items_of_the_wrong_type(item: object, message: str) -> None:
    with pytest.raises(ImportValidationError) as exc:
        load(json.dumps([item]), "intents.json")

    assert reported(exc) == [(1, message)]


def test_json_missing_label_is_reported_by_item_number() -> None:
    data = json.dumps([{"text": "hi", "label": "greet"}, {"text": "no label"}])

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.json")

    assert reported(exc) == [(2, "missing label")]


def test_json_entities_keep_spans_aligned_after_text_is_stripped() -> None:
    data = json.dumps(
        [{"text": "  fly to Paris ", "entities": [{"start": 9, "end": 14, "entity": "city"}]}]
    )

    checked = load(data, "entities.json", dataset_type="text-entities")

    [ex] = checked.examples
    assert ex.text == "fly to Paris"
    [span] = ex.annotations or []
    assert ex.text[span["start"] : span["end"]] == "Paris"
    assert span == {"start": 7, "end": 12, "entity": "city", "value": "Paris"}


@pytest.mark.parametrize(
    "entity",
    [
        {"start": 0, "end": 99, "entity": "city"},
        {"start": 3, "end": 3, "entity": "city"},
        {"start": 0, "end": 2},
        {"start": "0", "end": 2, "entity": "city"},
    ],
    ids=["past-end", "empty-span", "no-entity", "start-str"],
)
def test_json_bad_entity_spans_are_refused(entity: dict[str, object]) -> None:
    data = json.dumps([{"text": "fly", "entities": [entity]}])

    with pytest.raises(ImportValidationError) as exc:
        load(data, "entities.json", dataset_type="text-entities")

    [(line, message)] = reported(exc)
    assert line == 1
    assert message.startswith("bad entity")


@pytest.mark.parametrize(
    ("entity", "message"),
    [
        (
            {"start": -1, "end": 2, "entity": "city"},
            "bad entity 1 (city at -1-2): outside the text, which has 12 characters",
        ),
        (
            {"start": 7, "end": 13, "entity": "city"},
            "bad entity 1 (city at 7-13): outside the text, which has 12 characters",
        ),
        (
            {"start": 12, "end": 7, "entity": "city"},
            "bad entity 1 (city at 12-7): start must be less than end",
        ),
        (
            {"start": 7.0, "end": 12, "entity": "city"},
            "bad entity 1: start and end must be whole-number character offsets, "
            "found start=7.0, end=12",
        ),
        (
            {"start": True, "end": 12, "entity": "city"},
            "bad entity 1: start and end must be whole-number character offsets, "
            "found start=True, end=12",
        ),
        (
            {"start": 7, "end": 12, "entity": "  "},
            'bad entity 1 at 7-12: needs an entity type, e.g. "entity": "city"',
        ),
        (
            {"start": 7, "end": 12, "entity": "city", "value": ""},
            "bad entity 1: value must be a non-empty string",
        ),
        (
            {"start": 7, "end": 12, "entity": "city", "confidence": 0.9},
            "bad entity 1: unexpected field(s) confidence; "
            "allowed: end, entity, group, role, start, value",
        ),
        ("Paris", "bad entity 1: expected an object with start, end and entity, found str"),
    ],
    ids=[
        "negative",
        "past-end",
        "reversed",
        "float",
        "bool",
        "blank-type",
        "empty-value",
        "unknown-field",
        "not-object",
    ],
)
def test_json_bad_entity_messages_say_what_is_wrong(entity: object, message: str) -> None:
    data = json.dumps([{"text": "hi"}, {"text": "fly to Paris", "entities": [entity]}])

    with pytest.raises(ImportValidationError) as exc:
        load(data, "entities.json", dataset_type="text-entities")

    assert reported(exc) == [(2, message)]


def test_overlapping_entities_name_both_spans() -> None:
    data = json.dumps(
        {
            "text": "fly to New York now",
            "entities": [
                {"start": 7, "end": 15, "entity": "city"},
                {"start": 11, "end": 19, "entity": "state"},
                {"start": 0, "end": 3, "entity": "verb"},
            ],
        }
    )

    with pytest.raises(ImportValidationError) as exc:
        load(f'{{"text": "hi"}}\n{data}\n', "entities.jsonl", dataset_type="text-entities")

    assert reported(exc) == [
        (
            2,
            "entities overlap: city 'New York' at 7-15 and state 'York now' at 11-19; "
            "spans in one example must not overlap",
        )
    ]


def test_a_span_inside_another_is_an_overlap_even_after_a_later_one() -> None:
    entities = [
        {"start": 0, "end": 15, "entity": "place"},
        {"start": 7, "end": 9, "entity": "x"},
        {"start": 11, "end": 15, "entity": "y"},
    ]
    data = json.dumps([{"text": "fly to New York", "entities": entities}])

    with pytest.raises(ImportValidationError) as exc:
        load(data, "entities.json", dataset_type="text-entities")

    assert [message for _, message in reported(exc)] == [
        "entities overlap: place 'fly to New York' at 0-15 and x 'Ne' at 7-9; "
        "spans in one example must not overlap",
        "entities overlap: place 'fly to New York' at 0-15 and y 'York' at 11-15; "
        "spans in one example must not overlap",
    ]


def test_adjacent_spans_do_not_overlap_and_keep_roles_groups_and_synonym_values() -> None:
    entities = [
        {"start": 0, "end": 3, "entity": "n", "value": 2, "role": "adults", "group": 1},
        {"start": 3, "end": 9, "entity": "unit"},
        {"start": 10, "end": 13, "entity": "city", "value": "New York City"},
    ]
    data = json.dumps([{"text": "twoadults NYC", "entities": entities}])

    [ex] = load(data, "entities.json", dataset_type="text-entities").examples

    assert ex.annotations == [
        {"start": 0, "end": 3, "entity": "n", "value": "2", "role": "adults", "group": "1"},
        {"start": 3, "end": 9, "entity": "unit", "value": "adults"},
        {"start": 10, "end": 13, "entity": "city", "value": "New York City"},
    ]


def test_a_span_on_whitespace_that_is_stripped_names_the_line() -> None:
    data = json.dumps(
        [
            {"text": "  Paris", "entities": [{"start": 2, "end": 7, "entity": "city"}]},
            {"text": "  Paris", "entities": [{"start": 0, "end": 7, "entity": "city"}]},
            {"text": "Rome  ", "entities": [{"start": 0, "end": 5, "entity": "city"}]},
        ]
    )

    with pytest.raises(ImportValidationError) as exc:
        load(data, "entities.json", dataset_type="text-entities")

    whitespace = (
        "reaches into the whitespace around the text, which is stripped; "
        "put the span on the words only"
    )
    assert reported(exc) == [
        (2, f"entity city '  Paris' at 0-7 {whitespace}"),
        (3, f"entity city 'Rome ' at 0-5 {whitespace}"),
    ]


def test_validate_checks_spans_from_any_importer() -> None:
    parsed = ParsedDataset(
        examples=[
            ParsedExample(
                line=4,
                text="fly to Paris",
                annotations=[{"start": 7, "end": 20, "entity": "city", "value": "Paris"}],
            ),
            ParsedExample(
                line=9,
                text="Paris Rome",
                annotations=[
                    {"start": 0, "end": 5, "entity": "city", "value": "Paris"},
                    {"start": 4, "end": 10, "entity": "city", "value": "s Rome"},
                ],
            ),
        ]
    )

    with pytest.raises(ImportValidationError) as exc:
        validate(parsed, dataset_type="text-entities", limits=LIMITS)

    assert reported(exc) == [
        (4, "bad entity 1 (city at 7-20): outside the text, which has 12 characters"),
        (
            9,
            "entities overlap: city 'Paris' at 0-5 and city 's Rome' at 4-10; "
            "spans in one example must not overlap",
        ),
    ]


# --- JSONL ------------------------------------------------------------------------------------


def test_jsonl_reports_the_bad_line_among_good_ones() -> None:
    data = (
        '{"text": "hi", "label": "greet"}\n'
        "\n"
        '{"text": "oops", "label": \n'
        '{"text": "bye", "label": "bye"}\n'
        '["a list", "greet"]\n'
    )

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.jsonl")

    lines = [line for line, _ in reported(exc)]
    assert lines == [3, 5]
    assert reported(exc)[0][1].startswith("malformed JSON")
    assert reported(exc)[1][1] == "expected an object with text and label, found list"


def test_jsonl_line_numbers_count_blank_lines() -> None:
    data = '{"text": "hi", "label": "greet"}\n\n{"text": "yo"}\n'

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.ndjson")

    assert reported(exc) == [(3, "missing label")]


def test_jsonl_unexpected_fields() -> None:
    with pytest.raises(ImportValidationError) as exc:
        load('{"text": "hi", "label": "greet", "lang": "en"}\n', "intents.jsonl")

    assert reported(exc) == [(1, "unexpected field(s) lang; allowed: entities, label, text")]


def test_jsonl_line_separator_inside_a_string_is_not_a_line_break() -> None:
    data = (
        json.dumps({"text": "hi\u2028there", "label": "greet"}, ensure_ascii=False)
        + "\n"
        + json.dumps({"text": "bye", "label": "bye"})
        + "\n"
    )

    checked = load(data, "intents.jsonl")

    assert rows(checked) == [(1, "hi\u2028there", "greet"), (2, "bye", "bye")]


# --- Rasa nlu.yml -----------------------------------------------------------------------------

RASA_NLU = """\
version: "3.1"
nlu:
- intent: greet
  examples: |
    - hey
    - hello [Paris](city)

    - fly to [NYC](city:New York City) now
- intent: book
  examples: |
    - book [two]{"entity": "count", "value": "2", "role": "adults"} seats
- synonym: New York City
  examples: |
    - NYC
    - nyc
- regex: zipcode
  examples: |
    - \\d{5}
- lookup: city
  examples: |
    - Paris
    - Berlin
"""


def test_rasa_examples_labels_and_line_numbers() -> None:
    checked = load(RASA_NLU, "nlu.yml")

    assert rows(checked) == [
        (5, "hey", "greet"),
        (6, "hello Paris", "greet"),
        (8, "fly to NYC now", "greet"),
        (11, "book two seats", "book"),
    ]


def test_rasa_entity_spans_index_the_plain_text() -> None:
    checked = load(RASA_NLU, "nlu.yml", dataset_type="text-entities")
    by_text = {ex.text: ex.annotations for ex in checked.examples}

    assert by_text["hey"] == []
    assert by_text["hello Paris"] == [{"start": 6, "end": 11, "entity": "city", "value": "Paris"}]
    assert by_text["fly to NYC now"] == [
        {"start": 7, "end": 10, "entity": "city", "value": "New York City"}
    ]
    assert by_text["book two seats"] == [
        {"start": 5, "end": 8, "entity": "count", "value": "2", "role": "adults"}
    ]
    shown = {"hello Paris": "Paris", "fly to NYC now": "NYC", "book two seats": "two"}
    for text, value in shown.items():
        [span] = by_text[text] or []
        assert text[span["start"] : span["end"]] == value


def test_rasa_synonyms_regexes_and_lookups_are_kept_in_extras() -> None:
    checked = load(RASA_NLU, "nlu.yml")

    assert checked.extras == {
        "synonyms": {"New York City": ["NYC", "nyc"]},
        "regexes": {"zipcode": ["\\d{5}"]},
        "lookups": {"city": ["Paris", "Berlin"]},
    }


def test_rasa_examples_given_as_a_yaml_list_keep_their_lines() -> None:
    data = "nlu:\n- intent: greet\n  examples:\n  - hi\n  - text: yo [Bob](name)\n"

    parsed = pick_importer("nlu.yaml", None, "text-intent").parse(data, "text-intent")

    assert [(ex.line, ex.text, ex.label) for ex in parsed.examples] == [
        (4, "hi", "greet"),
        (5, "yo Bob", "greet"),
    ]


def test_rasa_row_errors_use_the_example_line() -> None:
    data = "nlu:\n- intent: greet\n  examples: |\n    - hi\n    - \n    - hello\n"

    with pytest.raises(ImportValidationError) as exc:
        load(data, "nlu.yml")

    assert reported(exc) == [(5, "empty text")]


@pytest.mark.parametrize(
    ("data", "line", "problem"),
    [
        (
            "nlu:\n- intent: greet\n  examples: |\n    - hi\n  foo: a: b\n",
            5,
            "mapping values are not allowed here",
        ),
        ("nlu:\n- intent: greet\n  examples: [hi\n", 4, "malformed YAML"),
    ],
    ids=["mapping-value", "unclosed-flow"],
)
def test_rasa_malformed_yaml_names_the_line(data: str, line: int, problem: str) -> None:
    with pytest.raises(ImportValidationError) as exc:
        load(data, "nlu.yml")

    assert exc.value.message.startswith(f"line {line}: malformed YAML")
    assert problem in exc.value.message
    assert reported(exc) == [(line, "malformed YAML")]


def test_rasa_bad_brace_annotation_names_the_example_line() -> None:
    data = 'nlu:\n- intent: book\n  examples: |\n    - hi\n    - book [two]{"value": "2"}\n'

    with pytest.raises(ImportValidationError) as exc:
        load(data, "nlu.yml")

    [(line, message)] = reported(exc)
    assert line == 5
    assert "bad entity annotation" in message
    assert "needs an entity" in message


@pytest.mark.parametrize(
    ("example", "message"),
    [
        (
            "book [two]( ) seats",
            "bad entity annotation '[two]( )': needs an entity, e.g. [two](city)",
        ),
        (
            'book [two]{"entity": " "} seats',
            'bad entity annotation \'[two]{"entity": " "}\': needs an entity, e.g. [two](city)',
        ),
        (
            "book [ ](count)",
            "entity count ' ' at 5-6 reaches into the whitespace around the text, which is "
            "stripped; put the span on the words only",
        ),
    ],
    ids=["blank-paren", "blank-brace", "span-on-stripped-space"],
)
def test_rasa_bad_annotations_name_the_example_line(example: str, message: str) -> None:
    data = f"nlu:\n- intent: book\n  examples: |\n    - hi\n    - {example}\n"

    with pytest.raises(ImportValidationError) as exc:
        load(data, "nlu.yml", dataset_type="text-entities")

    assert reported(exc) == [(5, message)]


def test_rasa_invalid_regex_names_the_line_and_the_regex() -> None:
    data = "nlu:\n- regex: zipcode\n  examples: |\n    - \\d{5}\n    - [0-9\n- intent: hi\n"
    data += "  examples: |\n    - hello\n"

    with pytest.raises(ImportValidationError) as exc:
        load(data, "nlu.yml")

    assert reported(exc) == [
        (
            5,
            "invalid regex '[0-9': unterminated character set at position 0; "
            "fix it (Python `re` syntax)",
        )
    ]


def test_rasa_catastrophic_regex_names_the_line_and_why() -> None:
    data = "nlu:\n- regex: word\n  examples: |\n    - (\\w+\\s?)+$\n"

    with pytest.raises(ImportValidationError) as exc:
        load(data, "nlu.yml")

    [(line, message)] = reported(exc)
    assert line == 4
    assert "'(\\\\w+\\\\s?)+$'" in message
    assert "may take exponential time; rewrite without nested repetition" in message


def test_rasa_empty_regex_is_refused() -> None:
    data = "nlu:\n- regex: zip\n  examples:\n  - ''\n"

    with pytest.raises(ImportValidationError) as exc:
        load(data, "nlu.yml")

    assert reported(exc) == [(4, "empty regex; write a pattern or remove the line")]


def test_rasa_synonym_mapped_to_two_canonical_values_names_both() -> None:
    data = (
        "nlu:\n"
        "- synonym: New York City\n"
        "  examples: |\n"
        "    - NYC\n"
        "    - big apple\n"
        "- synonym: NYC Inc\n"
        "  examples: |\n"
        "    - NYC\n"
        "- intent: fly\n"
        "  examples: |\n"
        "    - fly to [big apple](city:Apple Town)\n"
        "    - fly to [NYC](city:New York City)\n"
    )

    with pytest.raises(ImportValidationError) as exc:
        load(data, "nlu.yml", dataset_type="text-entities")

    assert reported(exc) == [
        (
            8,
            "inconsistent synonyms: 'NYC' maps to 'New York City' (line 4) and to 'NYC Inc'; "
            "keep one of them",
        ),
        (
            11,
            "inconsistent synonyms: 'big apple' maps to 'New York City' (line 5) and to "
            "'Apple Town'; keep one of them",
        ),
    ]


def test_rasa_blocks_for_the_same_name_are_merged_not_replaced() -> None:
    data = (
        "nlu:\n"
        "- synonym: New York City\n  examples: |\n    - NYC\n"
        "- synonym: New York City\n  examples: |\n    - nyc\n    - NYC\n"
        "- lookup: city\n  examples: |\n    - Paris\n"
        "- lookup: city\n  examples: |\n    - Rome\n"
        "- intent: hi\n  examples: |\n    - hello\n"
    )

    checked = load(data, "nlu.yml")

    assert checked.extras == {
        "synonyms": {"New York City": ["NYC", "nyc", "NYC"]},
        "lookups": {"city": ["Paris", "Rome"]},
    }


def test_rasa_items_without_examples_or_kind_name_their_line() -> None:
    data = (
        "nlu:\n"
        "- intent: greet\n"
        "  examples: |\n"
        "    - hi\n"
        "- intent: bye\n"
        "- responses: x\n"
        "  examples: |\n"
        "    - y\n"
    )

    with pytest.raises(ImportValidationError) as exc:
        load(data, "nlu.yml")

    assert reported(exc) == [
        (5, "nlu item without `examples`"),
        (6, "nlu item needs one of intent, synonym, regex, lookup"),
    ]


@pytest.mark.parametrize("data", ["foo: 1\n", "nlu: hello\n", "- a\n- b\n"])
def test_yaml_that_is_not_rasa_nlu_is_refused(data: str) -> None:
    with pytest.raises(ImportValidationError, match="expected a top-level `nlu:` list"):
        load(data, "nlu.yml")


@pytest.mark.parametrize(
    ("raw", "text", "spans"),
    [
        ("no annotations here", "no annotations here", []),
        (
            "[Paris](city) to [Rome](city)",
            "Paris to Rome",
            [
                {"start": 0, "end": 5, "entity": "city", "value": "Paris"},
                {"start": 9, "end": 13, "entity": "city", "value": "Rome"},
            ],
        ),
        (
            "from [LA]( city : Los Angeles )",
            "from LA",
            [{"start": 5, "end": 7, "entity": "city", "value": "Los Angeles"}],
        ),
        (
            '[two]{"entity": "n", "value": "2", "role": "kids", "group": 1} [3](n)',
            "two 3",
            [
                {"start": 0, "end": 3, "entity": "n", "value": "2", "role": "kids", "group": "1"},
                {"start": 4, "end": 5, "entity": "n", "value": "3"},
            ],
        ),
        ("a [bracket] alone", "a [bracket] alone", []),
    ],
    ids=["plain", "two-spans", "synonym", "brace-and-paren", "bare-brackets"],
)
def test_parse_rasa_example(raw: str, text: str, spans: list[dict[str, object]]) -> None:
    plain, entities = parse_rasa_example(raw)

    assert plain == text
    assert entities == spans
    for span in entities:
        start, end = span["start"], span["end"]
        assert isinstance(start, int) and isinstance(end, int)
        assert f"[{plain[start:end]}]" in raw  # the span covers exactly the value shown


@pytest.mark.parametrize(
    ("raw", "problem"),
    [('[x]{"entity": }', "bad entity annotation"), ('[x]{"role": "r"}', "needs an entity")],
)
def test_parse_rasa_example_refuses_bad_brace_annotations(raw: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        parse_rasa_example(raw)


# --- duplicates and limits --------------------------------------------------------------------


def test_duplicates_are_counted_with_the_first_duplicate_line() -> None:
    data = "text,label\nhi,greet\nbye,bye\nhi,greet\n  hi ,greet \nhi,other\n"

    checked = load(data, "intents.csv")

    assert rows(checked) == [(2, "hi", "greet"), (3, "bye", "bye"), (6, "hi", "other")]
    assert checked.duplicates == 2
    assert checked.first_duplicate_line == 4


def test_duplicates_of_examples_already_in_the_dataset_are_counted() -> None:
    checked = load("text,label\nnew,greet\nhi,greet\n", "more.csv", existing={("hi", "greet")})

    assert rows(checked) == [(2, "new", "greet")]
    assert checked.duplicates == 1
    assert checked.first_duplicate_line == 3


def test_max_examples_names_the_setting() -> None:
    limits = Limits(max_examples=2, max_labels=100, max_text_chars=500)

    with pytest.raises(LimitExceeded) as exc:
        load("text,label\na,x\nb,x\nc,x\n", "intents.csv", limits=limits)

    assert "3 examples is over the limit of 2" in exc.value.message
    assert "PARLEY_LIMITS__MAX_EXAMPLES" in exc.value.message
    assert exc.value.details == {"limit": "max_examples"}


def test_max_examples_counts_kept_rows_not_duplicates_and_includes_existing() -> None:
    limits = Limits(max_examples=2, max_labels=100, max_text_chars=500)

    checked = load("text,label\na,x\nb,x\na,x\n", "intents.csv", limits=limits)
    assert len(checked.examples) == 2

    with pytest.raises(LimitExceeded, match="PARLEY_LIMITS__MAX_EXAMPLES"):
        load("text,label\na,x\nb,x\n", "more.csv", limits=limits, existing={("old", "x")})


def test_max_labels_names_the_setting() -> None:
    limits = Limits(max_examples=100, max_labels=2, max_text_chars=500)

    assert len(load("text,label\na,x\nb,y\n", "ok.csv", limits=limits).examples) == 2
    with pytest.raises(LimitExceeded) as exc:
        load("text,label\na,x\nb,y\nc,z\n", "intents.csv", limits=limits)

    assert "3 labels is over the limit of 2" in exc.value.message
    assert "PARLEY_LIMITS__MAX_LABELS" in exc.value.message
    assert exc.value.details == {"limit": "max_labels"}


def test_text_longer_than_max_text_chars_names_the_line() -> None:
    limits = Limits(max_examples=100, max_labels=100, max_text_chars=10)
    data = f"text,label\n{'a' * 10},ok\n{'b' * 11},long\n"

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.csv", limits=limits)

    assert reported(exc) == [(3, "text is longer than 10 characters")]


def test_label_longer_than_200_characters_names_the_line() -> None:
    with pytest.raises(ImportValidationError) as exc:
        load(f"text,label\nhi,{'x' * 201}\n", "intents.csv")

    assert reported(exc) == [(2, "label is longer than 200 characters")]


def test_row_errors_are_capped_and_the_message_says_how_many_more() -> None:
    data = "text,label\n" + ",x\n" * 60

    with pytest.raises(ImportValidationError) as exc:
        load(data, "intents.csv")

    assert len(exc.value.details["errors"]) == 50
    assert "(and 40 more)" in exc.value.message


def test_validate_without_examples_or_existing_is_refused() -> None:
    with pytest.raises(ImportValidationError, match="holds no examples"):
        validate(ParsedDataset(examples=[]), dataset_type="text-intent", limits=LIMITS)


def test_validate_text_entities_needs_no_label() -> None:
    parsed = ParsedDataset(examples=[ParsedExample(line=1, text="fly to Paris")])

    checked = validate(parsed, dataset_type="text-entities", limits=LIMITS)

    assert rows(checked) == [(1, "fly to Paris", None)]


# --- picking an importer ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("intents.csv", "csv"),
        ("INTENTS.CSV", "csv"),
        ("intents.tsv", "tsv"),
        ("intents.tab", "tsv"),
        ("intents.json", "json"),
        ("intents.jsonl", "jsonl"),
        ("intents.ndjson", "jsonl"),
        ("nlu.yml", "rasa-yaml"),
        ("data/nlu.yaml", "rasa-yaml"),
    ],
)
def test_pick_importer_by_extension(filename: str, name: str) -> None:
    assert pick_importer(filename, None, "text-intent").name == name


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [("intents.txt", "csv"), ("intents.json", "jsonl"), (None, "rasa-yaml")],
)
def test_explicit_format_wins_over_the_extension(filename: str | None, fmt: str) -> None:
    assert pick_importer(filename, fmt, "text-intent").name == fmt


def test_unknown_extension_says_how_to_fix_it() -> None:
    with pytest.raises(InvalidInput) as exc:
        pick_importer("intents.xlsx", None, "text-intent")

    message = exc.value.message
    assert "'intents.xlsx'" in message
    assert "format=" in message
    assert "*.conll" in message and "*.csv" in message and "*.yml" in message
    assert "conll, csv, json, jsonl, rasa-yaml, tsv" in message


def test_unknown_format_names_the_known_formats() -> None:
    with pytest.raises(UnknownPluginError) as exc:
        pick_importer("intents.csv", "xml", "text-intent")

    assert "'xml'" in exc.value.message
    assert "known: conll, csv, json, jsonl, rasa-yaml, tsv" in exc.value.message


def test_format_that_cannot_hold_the_dataset_type_names_those_that_can() -> None:
    with pytest.raises(InvalidInput) as exc:
        pick_importer("entities.csv", None, "text-entities")

    assert exc.value.message == (
        "format 'csv' cannot hold 'text-entities' datasets; "
        "use one of: conll, json, jsonl, rasa-yaml"
    )


def test_image_datasets_come_as_a_zip() -> None:
    import training.datasets.image_import  # noqa: F401  (registers the zip importer)

    with pytest.raises(InvalidInput, match="format 'csv' cannot hold 'image' datasets; use one"):
        pick_importer("labels.csv", None, "image")
    assert pick_importer("photos.zip", None, "image-detection").name == "zip"

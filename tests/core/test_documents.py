"""core.documents: YAML alias bombs, deep nesting and oversized documents are refused with a
422-class error naming the limit, before anything expands or recurses; normal documents load."""

from __future__ import annotations

import json
import sys
import time

import pytest
import yaml

from core.documents import (
    BoundedLoader,
    DocumentLimits,
    check_document,
    check_json_depth,
    compose_yaml,
    document_limits,
    load_json,
    load_yaml,
    read_yaml_document,
)
from core.errors import InvalidInput, LimitExceeded, PayloadTooLarge
from core.settings import LimitSettings

LIMITS = DocumentLimits()  # the settings' defaults: 1 MiB, depth 32, 200,000 values, 100 aliases


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The classic: each level lists the previous one ``width`` times (9**9 values)."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


BOT = """\
name: orders
nlu:
  intents:
    greet: [hi, hello there]
    track: ["where is my parcel", "track [PX-1](order_id)"]
responses:
  utter_greet:
    - text: Hello! How can I help?
      quick_replies: [{title: Track, payload: /track}]
flows:
  track:
    trigger: {intent: track}
    steps:
      - ask: order_id
      - say: utter_greet
defaults: &defaults {retries: 2, timeout: 5}
actions:
  lookup: {<<: *defaults, url: "https://orders.example/api"}
"""


def test_a_normal_bot_definition_loads_with_its_aliases_and_lines() -> None:
    data = load_yaml(BOT, what="the bot definition", limits=LIMITS)
    assert data == yaml.safe_load(BOT)
    assert data["actions"]["lookup"] == {
        "retries": 2,
        "timeout": 5,
        "url": "https://orders.example/api",
    }
    document = read_yaml_document(BOT, what="the bot definition", limits=LIMITS)
    assert document.data == data
    assert isinstance(document.root, yaml.MappingNode)
    assert document.root.value[1][0].start_mark.line == 1  # `nlu:` on line 2


def test_billion_laughs_is_refused_before_it_expands() -> None:
    bomb = billion_laughs()
    assert len(bomb) < 700  # a few hundred bytes that expand to 9**9 values
    started = time.perf_counter()
    with pytest.raises(LimitExceeded) as caught:
        load_yaml(bomb, what="the bot definition", limits=LIMITS)
    assert time.perf_counter() - started < 1.0
    assert caught.value.details == {"limit": "max_document_nodes", "document": "the bot definition"}
    assert "the bot definition" in caught.value.message
    assert "PARLEY_LIMITS__MAX_DOCUMENT_NODES" in caught.value.message


def test_alias_uses_are_counted() -> None:
    text = "base: &b x\nuses: [" + ", ".join(["*b"] * 101) + "]\n"
    with pytest.raises(LimitExceeded) as caught:
        load_yaml(text, what="domain.yml", limits=LIMITS)
    assert caught.value.details["limit"] == "max_yaml_aliases"
    assert "domain.yml" in caught.value.message
    few = "base: &b x\nuses: [" + ", ".join(["*b"] * 100) + "]\n"
    assert load_yaml(few, what="domain.yml", limits=LIMITS)["uses"] == ["x"] * 100
    with pytest.raises(LimitExceeded):
        load_yaml("a: &a 1\nb: *a\n", what="x", limits=DocumentLimits(max_aliases=0))


def test_a_long_string_repeated_by_aliases_is_refused_by_its_expanded_size() -> None:
    # 91 values only, but 90 copies of 20 kB of text: 1.8 MB after expansion
    text = f"big: &big {'x' * 20_000}\ncopies: [" + ", ".join(["*big"] * 90) + "]\n"
    with pytest.raises(LimitExceeded) as caught:
        load_yaml(text, what="the bot definition", limits=LIMITS)
    assert caught.value.details["limit"] == "max_json_bytes"
    assert "PARLEY_LIMITS__MAX_JSON_BYTES" in caught.value.message


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    with pytest.raises(InvalidInput, match="cannot contain itself"):
        load_yaml("&a [1, *a]", what="the stories file", limits=LIMITS)
    with pytest.raises(InvalidInput, match="cannot contain itself"):
        load_yaml("a: &a {b: *a}", what="the stories file", limits=LIMITS)


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_deep_yaml_is_refused_without_recursion(opener: str) -> None:
    text = opener * 100_000
    with pytest.raises(LimitExceeded) as caught:
        load_yaml(text, what="nlu.yml", limits=DocumentLimits(max_bytes=10**7))
    assert caught.value.details == {"limit": "max_document_depth", "document": "nlu.yml"}
    assert "line 1" in caught.value.message
    # also in block style, where every level is a line
    block = "".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "v\n"
    with pytest.raises(LimitExceeded, match="more than 32 levels deep at line 33"):
        compose_yaml(block, what="nlu.yml", limits=DocumentLimits(max_bytes=10**7))


def test_the_depth_limit_is_exact_and_counts_expanded_aliases() -> None:
    limits = DocumentLimits(max_depth=4)
    assert load_yaml("[[[[1]]]]", what="x", limits=limits) == [[[[1]]]]
    with pytest.raises(LimitExceeded):
        load_yaml("[[[[[1]]]]]", what="x", limits=limits)
    # each part 3 deep, but the alias puts one inside the other: 6
    with pytest.raises(LimitExceeded, match="alias \\*d"):
        load_yaml("a: &d [[1]]\nb: [[[*d]]]\n", what="x", limits=limits)


def test_raw_size_is_checked_before_reading() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        load_yaml("a: " + "x" * 2000, what="the bot definition", limits=DocumentLimits(1000))
    assert caught.value.details["limit"] == "max_json_bytes"
    assert "2003 bytes" in caught.value.message


def test_node_limit_without_aliases() -> None:
    text = "[" + ", ".join(["1"] * 50) + "]"
    assert len(load_yaml(text, what="x", limits=DocumentLimits(max_nodes=51))) == 50
    with pytest.raises(LimitExceeded, match="more than 50 values"):
        load_yaml(text, what="x", limits=DocumentLimits(max_nodes=50))


def test_values_json_cannot_store_are_refused_with_their_path() -> None:
    with pytest.raises(InvalidInput, match=r"type date at flows\.a\.since"):
        load_yaml("flows: {a: {since: 2024-01-01}}", what="the bot definition", limits=LIMITS)
    with pytest.raises(InvalidInput, match="NaN or infinity"):
        load_yaml("x: .nan", what="the bot definition", limits=LIMITS)
    with pytest.raises(InvalidInput, match="cannot be read"):
        load_yaml("x: " + "1" * 5000, what="the bot definition", limits=LIMITS)


def test_yaml_syntax_errors_stay_yaml_errors_for_the_caller() -> None:
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: [1, 2", what="x", limits=LIMITS)
    with pytest.raises(yaml.constructor.ConstructorError):
        load_yaml("!!python/object:os.system x", what="x", limits=LIMITS)


def test_a_loader_subclass_keeps_its_resolvers_and_the_limits() -> None:
    class Yaml12(BoundedLoader):
        pass

    Yaml12.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
        for k, v in BoundedLoader.yaml_implicit_resolvers.items()
    }
    assert load_yaml("v: [yes, no]", what="x", limits=LIMITS, loader=Yaml12) == {"v": ["yes", "no"]}
    with pytest.raises(LimitExceeded):
        load_yaml(billion_laughs(), what="x", limits=LIMITS, loader=Yaml12)


def test_document_limits_come_from_the_settings() -> None:
    settings = LimitSettings(
        max_json_bytes=10, max_upload_bytes=99, max_document_depth=3, max_yaml_aliases=0
    )
    assert document_limits(settings) == DocumentLimits(10, 3, 200_000, 0, "max_json_bytes")
    uploads = document_limits(settings, bytes_setting="max_upload_bytes")
    assert uploads.max_bytes == 99
    assert uploads.bytes_setting == "max_upload_bytes"


def test_process_settings_are_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_LIMITS__MAX_DOCUMENT_DEPTH", "2")
    with pytest.raises(LimitExceeded, match="more than 2 levels"):
        load_yaml("[[[1]]]", what="x")


# --- JSON --------------------------------------------------------------------------------------


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deep_json_is_refused_before_json_loads(opener: bytes) -> None:
    raw = opener * 200_000
    with pytest.raises(LimitExceeded) as caught:
        check_json_depth(raw, 32, what="the JSON body")
    assert caught.value.details == {"limit": "max_document_depth", "document": "the JSON body"}
    with pytest.raises(LimitExceeded):
        load_json(raw, what="the JSON body", limits=DocumentLimits(max_bytes=10**7))


def test_the_json_scanner_counts_exactly_and_ignores_brackets_in_strings() -> None:
    ok = b"[" * 32 + b"]" * 32
    check_json_depth(ok, 32)
    with pytest.raises(LimitExceeded):
        check_json_depth(b"[" + ok + b"]", 32)
    # siblings do not add up
    check_json_depth(b"[" + b"[[1]]," * 10_000 + b"2]", 3)
    # brackets in strings and keys, escaped quotes, do not count
    tricky = json.dumps({"[[[[": ['{{{{\\"[[[[', '"]]]]'], "b": "\\"}).encode()
    check_json_depth(tricky, 2)
    with pytest.raises(LimitExceeded):
        check_json_depth(tricky, 1)
    check_json_depth(b'["' + b"[" * 100_000 + b'"]', 1)
    # a string that never ends leaves the rest to the parser
    check_json_depth(b'["' + b"[" * 1000, 1)
    check_json_depth(b"", 1)
    check_json_depth("«[»".encode(), 1)


def test_the_json_scanner_reads_utf16_as_json_loads_does() -> None:
    # in UTF-16 `∀` is the bytes 00 22: a naive byte scan would take it for a quote
    deep = '["∀", ' + "[" * 40 + "]" * 40 + "]"
    for encoding in ("utf-16-le", "utf-16", "utf-32"):
        raw = deep.encode(encoding)
        with pytest.raises(LimitExceeded):
            check_json_depth(raw, 32)
        assert json.loads(raw)[0] == "∀"


def test_the_json_scanner_is_fast_on_large_bodies() -> None:
    body = json.dumps([{"text": f"example {i} [x]", "label": "a"} for i in range(40_000)])
    raw = body.encode()
    assert len(raw) > 1_000_000
    started = time.perf_counter()
    check_json_depth(raw, 3)
    check_json_depth(b"[" + b"[]," * 400_000 + b"[]]", 3)
    assert time.perf_counter() - started < 1.5


def test_load_json_bounds_the_value_and_reports_unreadable_numbers() -> None:
    assert load_json(b'{"a": [1, 2]}', what="x", limits=LIMITS) == {"a": [1, 2]}
    with pytest.raises(json.JSONDecodeError):
        load_json(b'{"a": ', what="x", limits=LIMITS)
    with pytest.raises(InvalidInput, match="cannot be read"):
        load_json(b"[" + b"1" * 5000 + b"]", what="x", limits=LIMITS)
    with pytest.raises(PayloadTooLarge):
        load_json(b"[" + b"1," * 1000 + b"1]", what="x", limits=DocumentLimits(max_bytes=100))
    with pytest.raises(LimitExceeded, match="more than 10 values"):
        load_json(json.dumps(list(range(20))), what="x", limits=DocumentLimits(max_nodes=10))


# --- any parsed value ---------------------------------------------------------------------------


def test_check_document_counts_shared_parts_each_time() -> None:
    part = ["x" * 1000] * 100
    shared = {"a": [part] * 100}  # 10 kB of objects, 10 MB of JSON
    with pytest.raises(LimitExceeded) as caught:
        check_document(shared, what="the bot definition", limits=LIMITS)
    assert caught.value.details["limit"] == "max_json_bytes"
    check_document({"a": [part] * 5}, what="the bot definition", limits=LIMITS)


def test_check_document_refuses_cycles_and_depth_without_recursion() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(LimitExceeded, match="levels deep"):
        check_document(cycle, what="x", limits=LIMITS)
    deep: list[object] = []
    node = deep
    for _ in range(sys.getrecursionlimit() * 3):
        child: list[object] = []
        node.append(child)
        node = child
    with pytest.raises(LimitExceeded) as caught:
        check_document({"flows": deep}, what="x", limits=LIMITS)
    assert "at flows" in caught.value.message
    check_document({"a": [[{"b": [1, 2.5, True, None, "c"]}]]}, what="x", limits=LIMITS)


def test_check_document_refuses_what_json_cannot_store() -> None:
    with pytest.raises(InvalidInput, match=r"type bytes at a\[1\]"):
        check_document({"a": [1, b"x"]}, what="x", limits=LIMITS)
    with pytest.raises(InvalidInput, match="type set"):
        check_document({"a": {1, 2}}, what="x", limits=LIMITS)
    with pytest.raises(InvalidInput, match="a key of type tuple"):
        check_document({(1, 2): "x"}, what="x", limits=LIMITS)
    with pytest.raises(InvalidInput, match="NaN"):
        check_document([float("inf")], what="x", limits=LIMITS)


def test_nul_characters_are_refused_in_documents_and_json_bodies() -> None:
    from core.documents import check_document, check_json_nul

    with pytest.raises(InvalidInput, match=r"NUL character .* at flows\[0\]"):
        check_document({"flows": ["a\x00b"]}, what="the bot")
    with pytest.raises(InvalidInput, match="NUL"):
        check_document({"na\x00me": "x"}, what="the bot")
    with pytest.raises(InvalidInput, match="NUL"):
        check_json_nul(rb'{"name": "a\u0000b"}')
    check_json_nul(rb'{"name": "a\\u0000b"}')  # an escaped backslash, then text "u0000"

"""Regex safety: the patterns a bot or a Rasa file may use, and why a dangerous one is refused."""

from __future__ import annotations

import re
import time

import pytest

from core.regex_safety import regex_problem


@pytest.mark.parametrize(
    ("pattern", "group"),
    [
        ("(a+)+", "(a+)+"),
        ("(a*)*", "(a*)*"),
        ("^(.*)*$", "(.*)*"),
        ("x(?:\\w+\\s?)+y", "(?:\\w+\\s?)+"),
        ("((ab)*)+", "((ab)*)+"),
        ("(a+){2,}", "(a+){2,}"),
        ("(?:x|(a+)+)", "(a+)+"),
        ("(?=(a+)*b)", "(a+)*"),
        ("(?P<n>[a-z]+)*?", "(?P<n>[a-z]+)*?"),
    ],
)
def test_regex_with_nested_repetition_is_refused(pattern: str, group: str) -> None:
    problem = regex_problem(pattern)

    assert problem == (
        f"regex {pattern!r}: {group!r} repeats a group that itself ends in a repetition, "
        "which may take exponential time; rewrite without nested repetition (e.g. `(a+)+` as "
        "`a+`)"
    )


def test_regex_repeating_identical_alternatives_is_refused() -> None:
    assert regex_problem("^(a|a)*$") == (
        "regex '^(a|a)*$': '(a|a)*' repeats a choice between identical alternatives, which "
        "may take exponential time; rewrite without nested repetition (e.g. `(a+)+` as `a+`)"
    )


@pytest.mark.parametrize(
    "pattern",
    [
        "\\d{5}",
        "[A-Z]-\\d{4}",
        "(a|b)+",
        "(\\d+,)+",
        "(a+)",
        "(a+){3}",
        "(a+)?",
        "(?>a+)+",
        "(a++)+",
        "[(a+)+]",
        "\\(a+\\)+",
        "(?i)(?:ab)+",
        "(?#a comment, (a+ is not read)x",
        "a{}",
    ],
)
def test_regex_without_nested_repetition_is_accepted(pattern: str) -> None:
    assert regex_problem(pattern) is None


def test_invalid_regex_names_the_position_and_the_syntax() -> None:
    assert regex_problem("[0-9") == (
        "invalid regex '[0-9': unterminated character set at position 0; "
        "fix it (Python `re` syntax)"
    )


def test_empty_regex_is_refused() -> None:
    assert regex_problem("") == "empty regex; write a pattern or remove the line"


def test_refused_pattern_really_backtracks_and_its_rewrite_does_not() -> None:
    """What the check guards against: the refused shape is slow, the suggested rewrite fast."""
    text = "a" * 20 + "!"
    started = time.perf_counter()
    assert re.fullmatch("(a+)+", text) is None
    slow = time.perf_counter() - started
    started = time.perf_counter()
    assert re.fullmatch("a+", text) is None
    fast = time.perf_counter() - started

    assert regex_problem("(a+)+") is not None
    assert regex_problem("a+") is None
    assert slow > 50 * fast

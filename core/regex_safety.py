"""Regex safety: whether a user's regular expression compiles and cannot backtrack for ages.

Bot definitions (``regex`` slot checks) and Rasa ``nlu.yml`` imports (``regex:`` items) refuse
a pattern for which ``regex_problem`` names a problem. The analysis is static and simple: it
reads the pattern into pieces (atoms with their quantifiers, groups with their branches) and
flags a repeated group whose body ends in a repetition or repeats identical alternatives,
the shapes (``(a+)+``, ``(.*)*``, ``(a|a)*``) that take exponential time on a short input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["regex_problem"]

_QUANTIFIER = re.compile(r"(?P<op>[*+?]|\{(?P<lo>\d*)(?P<comma>,)?(?P<hi>\d*)\})(?P<mode>[?+]?)")
_INLINE_FLAGS = re.compile(r"\?[aiLmsux-]*(?P<end>[:)])")


@dataclass
class _RegexPiece:
    """One atom of a regex with its quantifier: a character, a class, an escape or a group."""

    text: str  # as written, quantifier included
    alternatives: list[list[_RegexPiece]] | None  # a group's branches
    repeats: bool  # *, + or {n,} that gives characters back (not possessive)
    optional: bool  # may match nothing: ?, *, {0,...}
    atomic: bool  # (?>...): never backtracked into
    zero_width: bool  # a lookaround


def _class_end(pattern: str, i: int) -> int:
    """The index after the ``]`` closing a character class whose ``[`` is just before ``i``."""
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def _scan_regex(pattern: str, i: int = 0) -> tuple[list[list[_RegexPiece]], int]:
    """The branches of ``pattern`` from ``i`` up to the closing parenthesis (or the end).

    Only for patterns that ``re.compile`` accepted; it never raises on odd input.
    """
    branches: list[list[_RegexPiece]] = [[]]
    while i < len(pattern):
        start, char = i, pattern[i]
        if char == ")":
            return branches, i + 1
        if char == "|":
            branches.append([])
            i += 1
            continue
        alternatives: list[list[_RegexPiece]] | None = None
        atomic = zero_width = False
        if char == "\\":
            i += 2
        elif char == "[":
            i = _class_end(pattern, i + 1)
        elif char != "(":
            i += 1
        elif pattern.startswith("(?#", i):  # a comment
            i = _after(pattern, ")", i)
            continue
        elif pattern.startswith("(?P=", i):  # a back reference
            i = _after(pattern, ")", i)
        else:
            i += 1
            if pattern.startswith(("?:", "?>", "?=", "?!"), i):
                atomic, zero_width = pattern[i + 1] == ">", pattern[i + 1] in "=!"
                i += 2
            elif pattern.startswith(("?<=", "?<!"), i):
                zero_width, i = True, i + 3
            elif pattern.startswith("?P<", i):
                i = _after(pattern, ">", i)
            elif pattern.startswith("?(", i):  # a conditional: (?(name)yes|no)
                i = _after(pattern, ")", i)
            elif (flags := _INLINE_FLAGS.match(pattern, i)) is not None:
                i = flags.end()
                if flags.group("end") == ")":  # (?i) for the whole pattern
                    continue
            alternatives, i = _scan_regex(pattern, i)
        repeats = optional = False
        quantifier = _QUANTIFIER.match(pattern, i)
        if quantifier is not None and quantifier.group("op") != "{}":
            op, lo = quantifier.group("op"), quantifier.group("lo") or "0"
            unbounded = op in "*+" or (
                quantifier.group("comma") is not None and not quantifier.group("hi")
            )
            repeats = unbounded and quantifier.group("mode") != "+"
            optional = op in "?*" or (op.startswith("{") and int(lo) == 0)
            i = quantifier.end()
        branches[-1].append(
            _RegexPiece(pattern[start:i], alternatives, repeats, optional, atomic, zero_width)
        )
    return branches, i


def _after(pattern: str, char: str, i: int) -> int:
    found = pattern.find(char, i)
    return len(pattern) if found < 0 else found + 1


def _ends_in_repetition(branch: list[_RegexPiece]) -> bool:
    """Whether the last piece that must match (looking past optional ones) can repeat."""
    for piece in reversed(branch):
        if piece.zero_width:
            continue
        if piece.repeats:
            return True
        if (
            piece.alternatives is not None
            and not piece.atomic
            and any(_ends_in_repetition(b) for b in piece.alternatives)
        ):
            return True
        if not piece.optional:
            return False
    return False


def _nested_repetition(branches: list[list[_RegexPiece]]) -> tuple[str, str] | None:
    """(group, why) of the first repeated group that can split its text many ways, if any."""
    for branch in branches:
        for piece in branch:
            if piece.alternatives is None:
                continue
            if piece.repeats and not piece.atomic:
                if any(_ends_in_repetition(b) for b in piece.alternatives):
                    return piece.text, "repeats a group that itself ends in a repetition"
                bodies = ["".join(p.text for p in b) for b in piece.alternatives]
                if len(set(bodies)) < len(bodies):
                    return piece.text, "repeats a choice between identical alternatives"
            found = _nested_repetition(piece.alternatives)
            if found is not None:
                return found
    return None


def regex_problem(pattern: str) -> str | None:
    """Why a Rasa ``regex:`` example is unusable, or None.

    It must compile with Python's ``re`` and must not nest repetition (``(a+)+``, ``(.*)*``,
    ``(a|a)*``), which can backtrack for exponential time on a short input. The check is
    static and simple: a repeated group whose body ends in a repetition, or repeats identical
    alternatives.
    """
    if not pattern:
        return "empty regex; write a pattern or remove the line"
    try:
        re.compile(pattern)
    except re.error as e:
        where = f" at position {e.pos}" if e.pos is not None else ""
        return f"invalid regex {pattern!r}: {e.msg}{where}; fix it (Python `re` syntax)"
    found = _nested_repetition(_scan_regex(pattern)[0])
    if found is not None:
        group, why = found
        return (
            f"regex {pattern!r}: {group!r} {why}, which may take exponential time; "
            "rewrite without nested repetition (e.g. `(a+)+` as `a+`)"
        )
    return None

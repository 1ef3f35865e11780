"""What every dataset format shares: the importer protocol and registry, row errors, span checks.

A format module (``delimited``, ``json_formats``, ``conll``, ``rasa_nlu``; image zips in
``training.datasets.image_import``) registers an ``Importer`` class in ``importers``; its
``parse`` turns text into a ``ParsedDataset`` and reports bad rows by line through
``RowErrors``. Entity spans are checked the same way for every format (``span_problems``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from core.documents import DocumentLimits, document_limits
from core.errors import ImportValidationError
from core.registry import Registry
from training.datasets.types import ParsedDataset

MAX_REPORTED_ERRORS = 50


class Importer(Protocol):
    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]]
    dataset_types: ClassVar[tuple[str, ...]]

    def parse(self, text: str, dataset_type: str) -> ParsedDataset: ...


importers: Registry[type[Importer]] = Registry("dataset format")


def dataset_document_limits() -> DocumentLimits:
    """Dataset files are documents as large as an upload may be (the process settings)."""
    return document_limits(bytes_setting="max_upload_bytes")


class RowErrors:
    """Collects row errors (the first ``MAX_REPORTED_ERRORS``); raises them together."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, line: int, message: str) -> None:
        if len(self.items) < MAX_REPORTED_ERRORS:
            self.items.append({"line": line, "message": message})

    def raise_if_any(self, what: str) -> None:
        if self.items:
            shown = "; ".join(f"line {e['line']}: {e['message']}" for e in self.items[:10])
            more = f" (and {len(self.items) - 10} more)" if len(self.items) > 10 else ""
            raise ImportValidationError(f"{what}: {shown}{more}", errors=self.items)


def _offsets(span: dict[str, Any]) -> tuple[int, int] | None:
    """``(start, end)`` of a span when both are whole numbers (``true`` is not one), else None."""
    start, end = span.get("start"), span.get("end")
    if isinstance(start, bool) or isinstance(end, bool):
        return None
    if isinstance(start, int) and isinstance(end, int):
        return start, end
    return None


def span_problems(spans: Any, text: str) -> list[str]:
    """What is wrong with the entity spans of one example over its ``text`` (empty if nothing).

    Each span needs whole-number ``start < end`` within the text and a non-empty ``entity``;
    spans of one example must not overlap. A ``value`` that differs from the spanned text is a
    synonym's canonical value and is not checked against the text.
    """
    if not isinstance(spans, list):
        return ["entities must be a list of {start, end, entity} objects"]
    problems: list[str] = []
    good: list[tuple[int, int, str]] = []
    for n, span in enumerate(spans, start=1):
        if not isinstance(span, dict):
            problems.append(
                f"bad entity {n}: expected an object with start, end and entity, "
                f"found {type(span).__name__}"
            )
            continue
        offsets, entity = _offsets(span), span.get("entity")
        if offsets is None:
            problems.append(
                f"bad entity {n}: start and end must be whole-number character offsets, "
                f"found start={span.get('start')!r}, end={span.get('end')!r}"
            )
            continue
        start, end = offsets
        if not isinstance(entity, str) or not entity.strip():
            problems.append(
                f'bad entity {n} at {start}-{end}: needs an entity type, e.g. "entity": "city"'
            )
            continue
        where = f"bad entity {n} ({entity} at {start}-{end})"
        if start >= end:
            problems.append(f"{where}: start must be less than end")
        elif start < 0 or end > len(text):
            problems.append(f"{where}: outside the text, which has {len(text)} characters")
        else:
            good.append((start, end, entity))
    good.sort()
    widest: tuple[int, int, str] | None = None  # the span reaching furthest right so far
    for span in good:
        if widest is not None and span[0] < widest[1]:
            problems.append(
                f"entities overlap: {describe_span(widest, text)} and "
                f"{describe_span(span, text)}; spans in one example must not overlap"
            )
        if widest is None or span[1] > widest[1]:
            widest = span
    return problems


def describe_span(span: tuple[int, int, str], text: str) -> str:
    start, end, entity = span
    return f"{entity} {text[start:end]!r} at {start}-{end}"

"""The upload path of a text dataset: decode the bytes, pick the format, validate every row.

``decode_text`` refuses binary and non-UTF-8 files; ``pick_importer`` chooses a registered
format (``training.datasets.formats``) by name or file extension; the importer's ``parse``
turns text into a ``ParsedDataset``; ``validate`` then checks every row and names the line of
each mistake (``line 17: empty text``), drops exact duplicates and applies the ``Limits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import ImportValidationError, InvalidInput, LimitExceeded

# the text formats register themselves in ``importers`` on import
from training.datasets.formats import conll, delimited, json_formats, rasa_nlu  # noqa: F401
from training.datasets.formats.base import (
    Importer,
    RowErrors,
    describe_span,
    importers,
    span_problems,
)
from training.datasets.types import ParsedDataset, ParsedExample


def decode_text(data: bytes) -> str:
    """UTF-8 text of an upload, or a clear error for binary or other encodings."""
    if not data.strip():
        raise ImportValidationError("the file is empty", errors=[])
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportValidationError(
            "the file is UTF-16 text (Excel's 'Unicode Text' export); save it as UTF-8 "
            "(CSV UTF-8) and upload again",
            errors=[],
        )
    if b"\x00" in data[:8192]:
        raise ImportValidationError(
            "the file looks binary (it contains NUL bytes), not a text file; "
            "upload CSV, TSV, JSON, JSONL, Rasa YAML or CoNLL",
            errors=[],
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ImportValidationError(
            f"line {line}: the file is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}); save it as UTF-8 and upload again",
            errors=[{"line": line, "message": "not valid UTF-8"}],
        ) from e


def pick_importer(filename: str | None, fmt: str | None, dataset_type: str) -> Importer:
    """The importer for an explicit ``format`` or, failing that, the file's extension."""
    if fmt:
        cls = importers.get(fmt)
    else:
        lower = (filename or "").lower()
        matches = [c for _, c in importers.items() if lower.endswith(c.extensions)]
        if not matches:
            extensions = sorted({e for _, c in importers.items() for e in c.extensions})
            raise InvalidInput(
                f"cannot tell the format of {filename!r} from its extension; name the file "
                f"{', '.join('*' + e for e in extensions)}, or pass format= one of "
                f"{', '.join(importers.names())}"
            )
        cls = matches[0]
    if dataset_type not in cls.dataset_types:
        usable = [n for n, c in importers.items() if dataset_type in c.dataset_types]
        raise InvalidInput(
            f"format {cls.name!r} cannot hold {dataset_type!r} datasets; "
            + (
                f"use one of: {', '.join(usable)}"
                if usable
                else f"importers for {dataset_type!r} are not available in this release"
            )
        )
    return cls()


@dataclass(frozen=True)
class Limits:
    max_examples: int
    max_labels: int
    max_text_chars: int
    max_image_pixels: int = 40_000_000


@dataclass
class Validated:
    examples: list[ParsedExample]
    duplicates: int
    first_duplicate_line: int | None
    extras: dict[str, Any]


def _align_spans(
    spans: list[dict[str, Any]], raw: str, line: int, errors: RowErrors
) -> list[dict[str, Any]] | None:
    """``spans`` over ``raw`` checked and moved onto ``raw.strip()``; None if any is wrong.

    A span reaching into the whitespace that stripping removes is an error, not clipped.
    """
    problems = span_problems(spans, raw)
    lead = len(raw) - len(raw.lstrip())
    end = lead + len(raw.strip())
    if not problems:
        problems = [
            f"entity {describe_span((s['start'], s['end'], s['entity']), raw)} reaches into "
            "the whitespace around the text, which is stripped; put the span on the words only"
            for s in spans
            if s["start"] < lead or s["end"] > end
        ]
    for problem in problems:
        errors.add(line, problem)
    if problems:
        return None
    return [{**s, "start": s["start"] - lead, "end": s["end"] - lead} for s in spans]


def validate(
    parsed: ParsedDataset,
    *,
    dataset_type: str,
    limits: Limits,
    existing: set[tuple[str, str | None]] | None = None,
) -> Validated:
    """Check every example; drop exact duplicates (counted); raise with the lines at fault."""
    errors = RowErrors()
    seen: set[tuple[str, str | None]] = set(existing or ())
    kept: list[ParsedExample] = []
    duplicates = 0
    first_dup: int | None = None
    needs_label = dataset_type == "text-intent"
    for ex in parsed.examples:
        text = (ex.text or "").strip()
        label = (ex.label or "").strip() or None
        if not text:
            errors.add(ex.line, "empty text")
            continue
        if len(text) > limits.max_text_chars:
            errors.add(ex.line, f"text is longer than {limits.max_text_chars} characters")
            continue
        if needs_label and label is None:
            errors.add(ex.line, "missing label")
            continue
        if label is not None and len(label) > 200:
            errors.add(ex.line, "label is longer than 200 characters")
            continue
        annotations = ex.annotations
        if annotations is not None:
            annotations = _align_spans(annotations, ex.text or "", ex.line, errors)
            if annotations is None:
                continue
        key = (text, label)
        if key in seen:
            duplicates += 1
            first_dup = first_dup or ex.line
            continue
        seen.add(key)
        kept.append(ParsedExample(line=ex.line, text=text, label=label, annotations=annotations))
    errors.raise_if_any("the file has bad rows")
    if not kept and not existing:
        raise ImportValidationError("the file holds no examples", errors=[])
    if len(kept) + len(existing or ()) > limits.max_examples:
        raise LimitExceeded(
            f"{len(kept) + len(existing or ())} examples is over the limit of "
            f"{limits.max_examples} per dataset (PARLEY_LIMITS__MAX_EXAMPLES)",
            limit="max_examples",
        )
    labels = {lab for _, lab in seen if lab is not None}
    if len(labels) > limits.max_labels:
        raise LimitExceeded(
            f"{len(labels)} labels is over the limit of {limits.max_labels} per dataset "
            "(PARLEY_LIMITS__MAX_LABELS)",
            limit="max_labels",
        )
    return Validated(
        examples=kept, duplicates=duplicates, first_duplicate_line=first_dup, extras=parsed.extras
    )

"""CSV and TSV files: ``text,label`` (or ``text<TAB>label``) with a header row."""

from __future__ import annotations

import csv
import io
from typing import ClassVar

from core.errors import ImportValidationError
from training.datasets.formats.base import RowErrors, importers
from training.datasets.types import ParsedDataset, ParsedExample


@importers.register("csv")
class CsvImporter:
    """``text,label`` with a header row; TSV with tabs."""

    name: ClassVar[str] = "csv"
    extensions: ClassVar[tuple[str, ...]] = (".csv",)
    dataset_types: ClassVar[tuple[str, ...]] = ("text-intent",)
    delimiter: ClassVar[str] = ","

    def parse(self, text: str, dataset_type: str) -> ParsedDataset:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter, strict=True)
        errors = RowErrors()
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise ImportValidationError("the file is empty", errors=[]) from None
        except csv.Error as e:
            raise ImportValidationError(f"line 1: {e}", errors=[]) from e
        expected = ["text", "label"]
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        if missing or extra or len(header) != len(set(header)):
            sep = self.delimiter if self.delimiter != "\t" else "<tab>"
            parts = []
            if missing:
                parts.append(f"missing column(s) {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected column(s) {', '.join(repr(c) for c in extra)}")
            if not parts:
                parts.append("a column appears twice")
            raise ImportValidationError(
                f"line 1: {'; '.join(parts)}; the header must be `text{sep}label` "
                f"(found: {sep.join(header)})",
                errors=[{"line": 1, "message": "bad header"}],
            )
        ti, li = header.index("text"), header.index("label")
        examples: list[ParsedExample] = []
        line = reader.line_num
        try:
            for row in reader:
                line, start = reader.line_num, line + 1  # a quoted field may span lines
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    errors.add(start, f"expected {len(header)} fields, found {len(row)}")
                    continue
                examples.append(ParsedExample(line=start, text=row[ti], label=row[li]))
        except csv.Error as e:
            errors.add(reader.line_num or line, f"malformed row: {e}")
        errors.raise_if_any("the file has bad rows")
        return ParsedDataset(examples=examples)


@importers.register("tsv")
class TsvImporter(CsvImporter):
    name: ClassVar[str] = "tsv"
    extensions: ClassVar[tuple[str, ...]] = (".tsv", ".tab")
    delimiter: ClassVar[str] = "\t"

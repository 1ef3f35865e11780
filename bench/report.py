"""What every bench prints and writes: number formatting, the fixed-width tables, the targets
table (one check per row with PASS/FAIL) and strict JSON (NaN as null)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def fmt(value: float, spec: str) -> str:
    return "-" if isinstance(value, float) and math.isnan(value) else format(value, spec)


def json_safe(value: Any) -> Any:
    """NaN becomes null so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """Fixed-width columns; ``align`` has one ``l``/``r`` a column (default: first left,
    the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if a == "l" else str(c).rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def targets_table(
    checks: Sequence[dict[str, Any]],
    *,
    by: str | None = None,
    marks: tuple[str, str] = ("PASS", "FAIL"),
    verdict: str = "result",
) -> str:
    """The targets table every bench ends with: a row a check (its ``check``, ``shown`` value,
    ``target`` goal and ``pass``), the verdict ``marks[0]`` when met, else ``marks[1]``. With
    ``by`` (``split``, ``engine``), that key of each check is the first column."""
    rows = [
        [
            *([str(c[by])] if by else []),
            c["check"],
            c["shown"],
            c["target"],
            marks[0] if c["pass"] else marks[1],
        ]
        for c in checks
    ]
    header = [*([by] if by else []), "target", "value", "goal", verdict]
    return render_table(header, rows, ("l" if by else "") + "lrrl")

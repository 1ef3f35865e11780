"""What an OCR engine returns: text lines with a confidence and a box, in reading order.

Boxes are axis-aligned, in the input image's pixel coordinates (floats, origin at the top-left
corner, ``x`` to the right, ``y`` down), clipped to the image. Reading order is top to bottom,
and left to right among lines on the same visual line: lines whose vertical extents overlap by
at least half the smaller height share a visual line, so a value printed a few pixels higher
than its label still comes after it. When the engine knows each line's text direction (a
photo turned by a few degrees), "vertical" is measured across that direction and the page's
median skew is undone before sorting, so a right-aligned price still pairs with its item.
Side-by-side lines are chained left to right, the best-overlapping pairs first and only
neighbours, so a line never joins a visual line that merely grazes it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.backends import Box

__all__ = ["SAME_LINE_OVERLAP", "OcrLine", "OcrResult", "reading_order"]

SAME_LINE_OVERLAP = 0.5
"""Two lines share a visual line when their vertical overlap is at least this share of the
smaller of their heights."""


@dataclass(frozen=True)
class OcrLine:
    """One line of text as an engine read it; ``confidence`` is in 0..1; ``engine`` names the
    engine that read it (with ``auto``, the one it chose for this line)."""

    text: str
    confidence: float
    box: Box
    engine: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "confidence": self.confidence,
            "box": self.box.to_dict(),
            "engine": self.engine,
        }


@dataclass(frozen=True)
class OcrResult:
    """The lines of one image in reading order; ``text`` is them joined with newlines."""

    text: str
    lines: list[OcrLine]

    @classmethod
    def from_lines(
        cls, lines: Sequence[OcrLine], angles: Sequence[float] | None = None
    ) -> OcrResult:
        """A result from lines in any order (with their text directions in degrees, when
        known): empty lines dropped, the rest put in reading order."""
        if angles is None:
            angles = [0.0] * len(lines)
        kept = [(line, a) for line, a in zip(lines, angles, strict=True) if line.text.strip()]
        ordered = reading_order([line for line, _ in kept], [a for _, a in kept])
        return cls(text="\n".join(line.text for line in ordered), lines=ordered)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "lines": [line.to_dict() for line in self.lines]}


SHORT_LINE = 4.0
"""A line shorter than this many times its height has too short an edge to measure its
direction: the page's median direction stands in for it."""


@dataclass(frozen=True)
class _Geometry:
    """A line's centre, text direction (radians, clockwise from the x axis, since y points
    down), and its length along and height across that direction."""

    cx: float
    cy: float
    angle: float
    length: float
    height: float

    @classmethod
    def of(cls, box: Box, degrees: float) -> _Geometry:
        angle = math.radians((degrees + 90) % 180 - 90)  # upside-down text: the same line
        cos, sin = math.cos(angle), abs(math.sin(angle))
        # The box bounds a length w x height h rectangle turned by ``angle``:
        # box.width = w cos + h sin, box.height = w sin + h cos; solve for w and h.
        det = cos * cos - sin * sin
        if det > 0.1:
            length = (box.width * cos - box.height * sin) / det
            height = (box.height * cos - box.width * sin) / det
        else:
            length, height = box.width, box.height
        # a wrong angle must not erase the line
        length = max(length, 0.25 * box.width, 1.0)
        height = max(height, 0.25 * box.height, 1.0)
        return cls((box.x_min + box.x_max) / 2, (box.y_min + box.y_max) / 2, angle, length, height)

    def with_angle(self, angle: float) -> _Geometry:
        return _Geometry(self.cx, self.cy, angle, self.length, self.height)


def _same_line_share(a: _Geometry, b: _Geometry) -> float:
    """The overlap of ``a`` and ``b`` across their common text direction (their directions
    averaged, weighted by length), as a share of the smaller height."""
    angle = (a.angle * a.length + b.angle * b.length) / (a.length + b.length)
    dx, dy = b.cx - a.cx, b.cy - a.cy
    d = dy * math.cos(angle) - dx * math.sin(angle)  # b's centre below a's, across the text
    overlap = min(d + b.height / 2, a.height / 2) - max(d - b.height / 2, -a.height / 2)
    return overlap / min(a.height, b.height)


def reading_order(lines: Sequence[OcrLine], angles: Sequence[float] | None = None) -> list[OcrLine]:
    """``lines`` top to bottom, and left to right within a visual line (see the module).

    ``angles``, one per line, is each line's text direction in degrees (clockwise, as y points
    down), when the engine knows it: a photo turned by a few degrees then still pairs a price
    with its item although the price's box sits higher or lower than the item's.
    """
    if angles is None:
        angles = [0.0] * len(lines)
    if len(angles) != len(lines):
        raise ValueError(f"{len(angles)} angles for {len(lines)} lines")
    geometry = [_Geometry.of(line.box, angle) for line, angle in zip(lines, angles, strict=True)]
    measured = [g.angle for g in geometry if g.length >= SHORT_LINE * g.height]
    skew = statistics.median(measured or [g.angle for g in geometry] or [0.0])
    geometry = [g if g.length >= SHORT_LINE * g.height else g.with_angle(skew) for g in geometry]
    cos, sin = math.cos(skew), math.sin(skew)
    n = len(lines)
    across = [g.cy * cos - g.cx * sin for g in geometry]  # down the page, skew undone
    along = [g.cx * cos + g.cy * sin for g in geometry]  # along the text direction
    starts = [along[i] - geometry[i].length / 2 for i in range(n)]
    ends = [along[i] + geometry[i].length / 2 for i in range(n)]
    tallest = max((g.height for g in geometry), default=0.0)

    # Link each line to its right-hand neighbour on the same visual line: candidate pairs
    # (side by side, overlapping enough across the text) are taken best overlap first, each
    # line getting at most one neighbour on either side, and never a pair with a line of the
    # same visual line between them. The chains of links are the visual lines.
    share: dict[tuple[int, int], float] = {}
    for i in range(n):
        for j in range(n):
            if i == j or along[j] <= along[i]:
                continue
            if abs(across[j] - across[i]) > tallest + 0.15 * (along[j] - along[i]):
                continue  # too far apart across the text for any slant up to 8 degrees
            slack = 0.5 * min(geometry[i].height, geometry[j].height)
            if starts[j] >= ends[i] - slack:
                value = _same_line_share(geometry[i], geometry[j])
                if value >= SAME_LINE_OVERLAP:
                    share[i, j] = value
    right: dict[int, int] = {}
    left: dict[int, int] = {}
    for (i, j), _ in sorted(share.items(), key=lambda item: -item[1]):
        if i in right or j in left:
            continue
        if any((i, k) in share and (k, j) in share for k in range(n)):
            continue  # a line between them belongs to the same visual line
        right[i], left[j] = j, i
    rows: list[list[int]] = []
    for i in range(n):
        if i in left:
            continue
        row = [i]
        while row[-1] in right:
            row.append(right[row[-1]])
        rows.append(row)
    rows.sort(key=lambda row: (statistics.fmean(across[i] for i in row), along[row[0]]))
    return [lines[i] for row in rows for i in row]

"""Synthetic scanned document lines with their exact text, for OCR benchmarks (the ``scanned``
set of ``bench/ocr.py``).

Each document is a block of 3-6 lines of running text cut from a page "scanned" at 300 dpi:

* text: paragraphs put together from the sentences below, written for this benchmark (no
  third-party text, so no licence to carry), with capitals, digits, dates, amounts, codes and
  punctuation, word-wrapped to a column 4.5-6 inches wide;
* type: a regular, bold or italic face of the DejaVu, Liberation or FreeFont families (serif,
  sans and mono; condensed and extra-light faces left out), 9-12 pt, i.e. 38-50 px at 300 dpi,
  line spacing 1.15-1.4;
* the scan: a skew of up to 0.6 degrees either way, a slight blur (radius 0.3-0.8 px), light
  noise (sigma 4-12 grey levels), then binarised at a threshold of 110-160 (ragged edges, thin
  strokes broken or thickened), saved as a bilevel PNG.

Everything follows from ``seed``. ``Document.kind`` is ``scan``; ``noisy`` is false (the
degradation is that of a scanner, not a phone).

    .venv/bin/python -m bench.scans --n 10 --out /tmp/scans
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from bench.documents import Document, fonts

__all__ = ["SENTENCES", "generate_scans", "scan_fonts"]

DPI = 300
SENTENCES = (
    "Please find enclosed the signed copy of the agreement dated 14 March 2025.",
    "The meeting has been moved to Thursday at 10:30 in room B-214.",
    "All invoices must be paid within 30 days of receipt, unless agreed otherwise in writing.",
    "Our records show a balance of $1,284.50 on account 4471-2093.",
    "If you have any questions, contact the help desk at extension 5521.",
    "The warehouse in Rotterdam will close for inventory from 2 to 6 January.",
    "Each unit is tested twice before it leaves the factory floor.",
    "Store the device in a dry place, away from direct sunlight and heat.",
    "The committee approved the budget of EUR 48,000 for the next quarter.",
    "Replace the filter every 90 days, or sooner when the warning light comes on.",
    "We regret to inform you that item SKU 7731-B is no longer available.",
    "The river rose by almost two metres during the storms of last October.",
    "She walked along the harbour wall while the fishing boats came in.",
    "A new bridge, 420 metres long, will connect the two halves of the town.",
    "Delivery is free for orders over $75; smaller orders cost $6.95.",
    "The library opens at 9 a.m. on weekdays and at noon on Sundays.",
    "Fill in sections A, B and D, then return the form by 31 May.",
    "His grandfather kept bees in the orchard behind the old mill.",
    "Results from the second trial (n = 212) confirmed the earlier findings.",
    "The train to Glasgow leaves from platform 7 at 16:45 every day.",
    "Reference number QX-2291-07 must appear on all correspondence.",
    "Temperatures will fall to -4 degrees overnight, with frost on the roads.",
    "The quick brown fox jumps over the lazy dog near the riverbank.",
    "Patients should not eat or drink for six hours before the procedure.",
    "Thank you for your order; it will be dispatched within 2 working days.",
    "The council received 1,734 responses to its consultation on parking.",
    "Keep this receipt as proof of purchase for the 24-month warranty.",
    "Mr. Okafor joined the company in 2019 as a senior engineer.",
    "Turn the dial clockwise until the indicator points to position 3.",
    "Every Saturday the market square fills with stalls selling fruit and bread.",
    "The report, attached as Appendix C, covers the period from April to June.",
    "Our office at 58 Kingsway, London WC2B 6AH, is open until 5:30 p.m.",
    "Section 4.2 describes how the samples were collected and stored.",
    "Wind speeds of up to 110 km/h were recorded on the northern coast.",
    "Please allow 10-14 days for the refund to appear on your statement.",
    "The garden was planted with roses, lavender and three young apple trees.",
    "Any changes to this schedule will be announced by email.",
    "Version 2.8 fixes the error that stopped some files from opening.",
    "At the end of the year, the school had 846 pupils and 52 teachers.",
    "He paid 3 x 12.40 for the tickets and kept the change.",
)
"""Sentences written for this benchmark: no third-party text."""


def scan_fonts() -> tuple[Path, ...]:
    """The text faces a printed document uses: regular, bold and italic serif, sans and mono
    (no condensed, narrow or extra-light faces)."""
    skip = ("condensed", "narrow", "extralight")
    return tuple(p for p in fonts() if not any(s in p.name.lower() for s in skip))


def _paragraph(rng: random.Random) -> str:
    return " ".join(rng.sample(SENTENCES, rng.randint(3, 5)))


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def _scan(rng: random.Random, nprng: np.random.Generator) -> tuple[bytes, list[str]]:
    face = rng.choice(scan_fonts())
    points = rng.uniform(9, 12)
    font = ImageFont.truetype(str(face), round(points * DPI / 72))
    column = rng.uniform(4.5, 6.0) * DPI
    wrapped = _wrap(_paragraph(rng), font, column)
    start = rng.randint(0, max(0, len(wrapped) - 3))
    lines = wrapped[start : start + rng.randint(3, 6)]
    spacing = font.size * rng.uniform(1.15, 1.4)
    margin = round(0.3 * DPI)
    size = (round(column) + 2 * margin, round(spacing * len(lines)) + 2 * margin)
    page = Image.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(lines):
        draw.text((margin, margin + font.size + i * spacing), line, font=font, fill=0, anchor="ls")
    page = page.rotate(rng.uniform(-0.6, 0.6), Image.Resampling.BICUBIC, fillcolor=255)
    page = page.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    grey = np.asarray(page, dtype=np.float32) + nprng.normal(0, rng.uniform(4, 12), page.size[::-1])
    bilevel = Image.fromarray(np.where(grey > rng.uniform(110, 160), 255, 0).astype(np.uint8))
    out = io.BytesIO()
    bilevel.convert("1").save(out, format="PNG", dpi=(DPI, DPI))
    return out.getvalue(), lines


def generate_scans(n: int, *, seed: int = 0) -> list[Document]:
    """``n`` scanned blocks of running text (see the module); the same ``seed`` gives the
    same documents."""
    docs = []
    for index in range(n):
        rng = random.Random(f"{seed}:{index}:scan")
        data, lines = _scan(rng, np.random.default_rng([seed, index, 7]))
        image = Image.open(io.BytesIO(data)).convert("RGB")
        docs.append(Document(image, data, lines, "scan", False, index))
    return docs


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20, help="documents to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="folder for images + truth.json")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    truth = []
    for doc in generate_scans(args.n, seed=args.seed):
        name = f"{doc.index:04d}-scan.png"
        (args.out / name).write_bytes(doc.data)
        truth.append({"file": name, "kind": doc.kind, "lines": doc.lines})
    (args.out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    print(f"wrote {len(truth)} scanned documents and truth.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

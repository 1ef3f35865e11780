"""Synthetic shipping labels and till receipts with their exact text, for OCR benchmarks.

Each document is drawn with Pillow from made-up but realistic content:

* ``label`` (800 x 600 px): a carrier band, service code, sender block beside date / weight /
  pieces, a larger recipient block, barcode stripes with the tracking number under them
  (UPS-style ``1Z 999 AA1 01 2345 6784`` or a carrier's own format), order number and
  reference, ruled separators and a border;
* ``receipt`` (600 x 800 px): shop name, address, phone, date and till, item lines with the
  price right-aligned (and ``2 x 1.29`` quantity lines), subtotal, tax, total, card, a
  footer.

Fonts are drawn at random from every TrueType font under ``/usr/share/fonts/truetype``
(DejaVu, Liberation, FreeFont families; math fonts excluded): sans, serif, mono, condensed,
bold, oblique and extra-light faces; text from 16 px (small print) to 38 px (headings).

``noisy`` documents are the same documents photographed badly: shrunk onto a desk-coloured
background, uneven lighting, a perspective warp (corners moved up to 4 % of the size), a
rotation of up to 5 degrees either way, Gaussian blur (radius 0.3-1.3 px), Gaussian noise
(sigma 3-12 grey levels) and JPEG compression at quality 30-85. ``clean`` ones are the flat
render, saved as PNG.

The ground truth ``lines`` are the visual rows in reading order (top to bottom, left to
right): text drawn on one baseline (a field and the value right-aligned beside it) is one
row, its pieces joined by one space. Barcodes and rules are not text. Everything follows
from ``seed``: the same seed gives the same documents, pixel for pixel, and document ``i``
has the same content in its clean and noisy variants.

    .venv/bin/python -m bench.documents --n 20 --out /tmp/docs            # mixed, clean
    .venv/bin/python -m bench.documents --n 20 --noisy --kind label --out /tmp/labels
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = ["KINDS", "Document", "fonts", "generate", "normalize_text"]

KINDS = ("label", "receipt")
FONT_ROOT = Path("/usr/share/fonts/truetype")
LABEL_SIZE = (800, 600)
RECEIPT_SIZE = (600, 800)

# --- content ------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST = _words(
    "Maria James Aisha Oliver Sofia Liam Chen Fatima Lukas Emma Noah Priya Mateo Hannah "
    "Kwame Yuki Ingrid Tomasz Amelia Diego Zoe Samuel Leila Viktor Grace Omar Elena Jonas "
    "Chloe Rafael Nadia Henry Mei Arjun Clara Felix Ava Hugo Isla Ravi"
)
LAST = _words(
    "Gonzalez Smith Okafor Muller Rossi Nguyen Patel Johansson Kowalski Brown Garcia "
    "Fischer Tanaka Dubois OConnor Silva Novak Hernandez Schmidt Wilson Moreau Khan Larsen "
    "Costa Becker Murphy Ivanova Lee Martin Walker Haddad Jensen Romano Thompson Weber"
)
COMPANIES = (
    "Acme Widgets Ltd",
    "Northwind Traders",
    "Bluebird Apparel Co",
    "Keller & Sons GmbH",
    "Harbor Electronics Inc",
    "Greenleaf Organics",
    "Summit Outdoor Supply",
    "Pixel Forge Studio",
    "Lumen Home Goods",
    "Copper Kettle Tea Co",
    "Atlas Auto Parts",
    "Riverside Books",
    "Nordic Design AB",
    "Maple & Oak Furniture",
)
STREETS = (
    "Harbour Road",
    "Elm Street",
    "Station Avenue",
    "Mill Lane",
    "Kingsway",
    "Oak Drive",
    "Bahnhofstrasse",
    "Market Square",
    "Church Road",
    "Victoria Street",
    "Park Avenue",
    "Lakeview Blvd",
    "Industrial Way",
    "Rue de la Paix",
    "Via Roma",
    "Canal Street",
    "Hillcrest Road",
    "Queens Parade",
)
CITIES = (  # (city line template, country); {n} digits, {A} letters
    ("Springfield, IL {n5}", "USA"),
    ("Portland, OR {n5}", "USA"),
    ("Austin, TX {n5}-{n4}", "USA"),
    ("Leeds LS{d} {d}{A}{A}", "United Kingdom"),
    ("Manchester M{d} {d}{A}{A}", "United Kingdom"),
    ("{n5} Berlin", "Germany"),
    ("{n5} Hamburg", "Germany"),
    ("{n5} Lyon", "France"),
    ("{n4} Amsterdam {A}{A}", "Netherlands"),
    ("{n5} Milano MI", "Italy"),
    ("Toronto, ON M{d}{A} {d}{A}{d}", "Canada"),
    ("{n3} {n2} Stockholm", "Sweden"),
)
CARRIERS = (
    ("SWIFTSHIP", "GROUND"),
    ("NORTHPOST", "EXPRESS"),
    ("PARCELLINK", "STANDARD"),
    ("BLUE ARROW", "NEXT DAY"),
    ("CARGOLINE", "ECONOMY"),
    ("METRO COURIER", "SAME DAY"),
)
SHOPS = (
    "CORNER MARKET",
    "FRESH FOODS",
    "Hardware Depot",
    "Bean There Cafe",
    "CITY PHARMACY",
    "Green Grocer",
    "BOOK NOOK",
    "QuickStop 24",
    "The Daily Bakery",
)
ITEMS = (
    "Whole Milk 2L",
    "Sourdough Loaf",
    "Free Range Eggs 12",
    "Bananas 1kg",
    "Cheddar 400g",
    "Orange Juice 1L",
    "Coffee Beans 250g",
    "Paper Towels x6",
    "AA Batteries 4pk",
    "Wood Screws 50",
    "Masking Tape",
    "Paint Brush 2in",
    "Cappuccino Large",
    "Blueberry Muffin",
    "Ibuprofen 200mg",
    "Hand Soap 500ml",
    "Notebook A5",
    "Olive Oil 750ml",
    "Basmati Rice 1kg",
    "Tomatoes Vine",
    "Greek Yogurt",
    "Dark Chocolate",
    "Sparkling Water",
    "Dish Sponges 3pk",
)
UPPER = "ABCDEFGHJKLMNPRSTUVWXYZ"
INKS = ((0, 0, 0), (20, 20, 25), (35, 30, 40), (10, 15, 60), (50, 50, 50))
PAPERS = ((255, 255, 255), (250, 250, 245), (246, 244, 238), (252, 251, 248))
DESKS = ((120, 96, 70), (90, 90, 95), (160, 150, 135), (60, 62, 70), (185, 180, 170))


def _fill(template: str, rng: random.Random) -> str:
    out = template
    for key, digits in (("{n5}", 5), ("{n4}", 4), ("{n3}", 3), ("{n2}", 2)):
        while key in out:
            out = out.replace(key, "".join(rng.choice("0123456789") for _ in range(digits)), 1)
    while "{d}" in out:
        out = out.replace("{d}", rng.choice("123456789"), 1)
    while "{A}" in out:
        out = out.replace("{A}", rng.choice(UPPER), 1)
    return out


def _person(rng: random.Random) -> str:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    return name.upper() if rng.random() < 0.3 else name


def _address(rng: random.Random) -> list[str]:
    street = f"{rng.randint(1, 2400)} {rng.choice(STREETS)}"
    lines = [street]
    if rng.random() < 0.35:
        lines.append(rng.choice(("Apt", "Unit", "Suite", "Floor")) + f" {rng.randint(1, 48)}")
    template, country = rng.choice(CITIES)
    lines.append(_fill(template, rng))
    lines.append(country.upper() if rng.random() < 0.5 else country)
    return lines


def _tracking(rng: random.Random) -> str:
    digits = "0123456789"

    def run(chars: str, k: int) -> str:
        return "".join(rng.choice(chars) for _ in range(k))

    style = rng.randrange(3)
    if style == 0:  # UPS-like, as printed: 1Z 999 AA1 01 2345 6784
        return (
            f"1Z {run(digits + UPPER, 3)} {run(UPPER, 2)}{run(digits, 1)} {run(digits, 2)} "
            f"{run(digits, 4)} {run(digits, 4)}"
        )
    if style == 1:
        return "JD" + run(digits, 16)
    return f"{run(UPPER, 2)}{run(digits, 9)}GB"


def _order(rng: random.Random) -> str:
    return f"ORD-{rng.randint(2023, 2026)}-{rng.randint(10000, 99999)}"


def _date(rng: random.Random) -> str:
    y, m, d = rng.randint(2024, 2026), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice((f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{m:02d}/{d:02d}/{y}"))


# --- drawing ------------------------------------------------------------------------------


@cache
def fonts() -> tuple[Path, ...]:
    """Every TrueType text font under ``/usr/share/fonts/truetype`` (math fonts excluded)."""
    found = sorted(p for p in FONT_ROOT.rglob("*.ttf") if "math" not in p.name.lower())
    if not found:
        raise FileNotFoundError(
            f"no .ttf fonts under {FONT_ROOT}: apt-get install fonts-dejavu-core "
            "fonts-liberation fonts-freefont-ttf"
        )
    return tuple(found)


@cache
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def _bold(path: Path) -> Path:
    """The bold face of ``path``'s family when there is one."""
    family = path.name.split("-")[0].removesuffix(".ttf")
    candidates = [p for p in fonts() if p.name.startswith(family) and "Bold" in p.name]
    upright = [p for p in candidates if not any(s in p.name for s in ("Oblique", "Italic"))]
    return (upright or candidates or [path])[0]


@dataclass
class _Canvas:
    image: Image.Image
    draw: ImageDraw.ImageDraw
    ink: tuple[int, int, int]
    rows: list[tuple[float, list[tuple[float, str]]]]  # baseline y, [(x, text)]

    def text(
        self, x: float, y: float, text: str, font: ImageFont.FreeTypeFont, anchor: str = "ls"
    ) -> None:
        """Draw ``text`` with its baseline at ``y``; ``anchor`` ``ls`` / ``rs`` / ``ms`` puts
        ``x`` at its left, right or middle."""
        self.draw.text((x, y), text, font=font, fill=self.ink, anchor=anchor)
        left = self.draw.textbbox((x, y), text, font=font, anchor=anchor)[0]
        for baseline, pieces in self.rows:
            if abs(baseline - y) < 1:
                pieces.append((left, text))
                return
        self.rows.append((y, [(left, text)]))

    def lines(self) -> list[str]:
        return [
            " ".join(t for _, t in sorted(pieces))
            for _, pieces in sorted(self.rows, key=lambda r: r[0])
        ]


def _new_canvas(size: tuple[int, int], rng: random.Random) -> _Canvas:
    image = Image.new("RGB", size, rng.choice(PAPERS))
    return _Canvas(image, ImageDraw.Draw(image), rng.choice(INKS), [])


def _barcode(canvas: _Canvas, x: float, y: float, width: float, height: float, rng: random.Random):
    pos = x
    while pos < x + width:
        bar = rng.choice((1, 2, 2, 3, 4)) * 1.6
        canvas.draw.rectangle((pos, y, pos + bar, y + height), fill=canvas.ink)
        pos += bar + rng.choice((1, 2, 3)) * 1.6


def _rule(canvas: _Canvas, y: float, x0: float, x1: float, width: int = 2) -> None:
    canvas.draw.line((x0, y, x1, y), fill=canvas.ink, width=width)


def _label(rng: random.Random) -> tuple[Image.Image, list[str]]:
    w, h = LABEL_SIZE
    canvas = _new_canvas(LABEL_SIZE, rng)
    face = rng.choice(fonts())
    bold = _bold(face)
    body = rng.randint(18, 24)
    small = max(16, body - rng.randint(2, 5))
    big = body + rng.randint(4, 10)
    f_small, f_body = _font(face, small), _font(face, body)
    f_big, f_head = _font(bold, big), _font(bold, rng.randint(30, 38))
    m = rng.randint(18, 30)  # margin
    canvas.draw.rectangle((m // 2, m // 2, w - m // 2, h - m // 2), outline=canvas.ink, width=3)

    carrier, service = rng.choice(CARRIERS)
    y = m + f_head.size
    canvas.text(m + 8, y, carrier, f_head)
    canvas.text(w - m - 8, y, service, f_head, anchor="rs")
    y += 14
    _rule(canvas, y, m // 2, w - m // 2, 3)

    # sender block, with date / weight / pieces right-aligned on the same baselines
    side = [
        f"Date: {_date(rng)}",
        f"Weight: {rng.randint(1, 30)}.{rng.randint(0, 9)} {rng.choice(('kg', 'lbs'))}",
        f"Pieces: 1 of {rng.randint(1, 3)}",
    ]
    sender = ["FROM:", rng.choice(COMPANIES), *_address(rng)[:-1]]
    step = small * 1.35
    y += 8
    for i, text in enumerate(sender):
        y += step
        canvas.text(m + 8, y, text, f_small)
        if i < len(side):
            canvas.text(w - m - 8, y, side[i], f_small, anchor="rs")
    y += 12
    _rule(canvas, y, m // 2, w - m // 2)

    # recipient
    y += 8 + body * 1.3
    canvas.text(m + 8, y, "SHIP TO:", _font(bold, body))
    y += big * 1.3
    canvas.text(m + 40, y, _person(rng), f_big)
    for text in _address(rng):
        y += body * 1.3
        canvas.text(m + 40, y, text, f_body)
    y += 12
    _rule(canvas, y, m // 2, w - m // 2)

    # barcode, tracking number, order and reference
    tracking = _tracking(rng)
    bar_h = rng.randint(40, 60)
    bar_w = rng.randint(300, 440)
    _barcode(canvas, (w - bar_w) / 2, y + 10, bar_w, bar_h, rng)
    y += 10 + bar_h + small * 1.3
    canvas.text(w / 2, y, f"TRACKING #: {tracking}", f_small, anchor="ms")
    y += small * 1.45
    canvas.text(m + 8, y, f"Order: {_order(rng)}", f_small)
    canvas.text(w - m - 8, y, f"Ref: {rng.randint(100000, 999999)}", f_small, anchor="rs")
    if y > h - m // 2 - 4:  # too tall for this font: draw again smaller
        return _label(rng)
    return canvas.image, canvas.lines()


def _money(cents: int, symbol: str) -> str:
    return f"{symbol}{cents // 100}.{cents % 100:02d}"


def _receipt(rng: random.Random) -> tuple[Image.Image, list[str]]:
    w, h = RECEIPT_SIZE
    canvas = _new_canvas(RECEIPT_SIZE, rng)
    mono = [p for p in fonts() if "Mono" in p.name]
    face = rng.choice(mono) if rng.random() < 0.6 and mono else rng.choice(fonts())
    body = rng.randint(17, 23)
    f_body, f_head = _font(face, body), _font(_bold(face), rng.randint(28, 34))
    f_bold = _font(_bold(face), body + 2)
    symbol = rng.choice(("$", "", "EUR "))
    m = rng.randint(24, 44)
    step = body * 1.4
    y = m + f_head.size
    canvas.text(w / 2, y, rng.choice(SHOPS), f_head, anchor="ms")
    y += step
    address = _address(rng)
    canvas.text(w / 2, y, address[0], f_body, anchor="ms")
    y += step
    canvas.text(w / 2, y, address[-2], f_body, anchor="ms")
    y += step
    phone = f"Tel: {rng.randint(200, 989)}-{rng.randint(200, 989)}-{rng.randint(1000, 9999)}"
    canvas.text(w / 2, y, phone, f_body, anchor="ms")
    y += step
    hh, mm = rng.randint(7, 21), rng.randint(0, 59)
    canvas.text(m, y, f"{_date(rng)} {hh:02d}:{mm:02d}", f_body)
    canvas.text(w - m, y, f"Till {rng.randint(1, 9)}", f_body, anchor="rs")
    y += step * 0.6
    _rule(canvas, y, m, w - m, 1)

    total = 0
    for name in rng.sample(ITEMS, rng.randint(3, 6)):
        y += step
        unit = rng.randint(49, 1899)
        qty = 1 if rng.random() < 0.75 else rng.randint(2, 4)
        canvas.text(m, y, name, f_body)
        canvas.text(w - m, y, _money(unit * qty, symbol), f_body, anchor="rs")
        if qty > 1:
            y += step
            canvas.text(m + 30, y, f"{qty} x {_money(unit, '')}", f_body)
        total += unit * qty
    y += step * 0.6
    _rule(canvas, y, m, w - m, 1)
    rate = rng.choice((0, 5, 7, 8, 19, 20))
    tax = round(total * rate / 100)
    for title, cents, font in (
        ("SUBTOTAL", total, f_body),
        (f"TAX {rate}%", tax, f_body),
        ("TOTAL", total + tax, f_bold),
    ):
        y += step
        canvas.text(m, y, title, font)
        canvas.text(w - m, y, _money(cents, symbol), font, anchor="rs")
    y += step
    card = rng.choice(("VISA", "MASTERCARD", "AMEX", "DEBIT"))
    canvas.text(m, y, f"{card} **** {rng.randint(1000, 9999)}", f_body)
    y += step * 1.5
    canvas.text(
        w / 2,
        y,
        rng.choice(("THANK YOU!", "Thank you for shopping", "See you soon")),
        f_body,
        anchor="ms",
    )
    if y > h - m:
        return _receipt(rng)
    return canvas.image, canvas.lines()


# --- degradation --------------------------------------------------------------------------


def _perspective_coeffs(src: Sequence[tuple[float, float]], dst: Sequence[tuple[float, float]]):
    """Coefficients for ``Image.transform(PERSPECTIVE)``, mapping output ``dst`` to input
    ``src`` corners."""
    a, b = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.extend([u, v])
    return np.linalg.solve(np.array(a, dtype=float), np.array(b, dtype=float)).tolist()


def _photograph(image: Image.Image, rng: random.Random, nprng: np.random.Generator) -> bytes:
    """``image`` as a bad phone photo: see the module docstring. Returns JPEG bytes."""
    w, h = image.size
    desk = rng.choice(DESKS)
    # uneven lighting: a linear gradient across the document, up to 25 % darker
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (xx / w - 0.5) * math.cos(angle) + (yy / h - 0.5) * math.sin(angle)
    light = 1.0 - rng.uniform(0.05, 0.25) * (ramp - ramp.min()) / (np.ptp(ramp) or 1)
    lit = np.asarray(image, dtype=np.float32) * light[..., None]
    page = Image.fromarray(lit.clip(0, 255).astype(np.uint8))
    # shrink onto the desk, then warp the corners and rotate
    scale = rng.uniform(0.84, 0.92)
    inner = page.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
    frame = Image.new("RGB", (w, h), desk)
    ox = (w - inner.width) // 2 + rng.randint(-8, 8)
    oy = (h - inner.height) // 2 + rng.randint(-8, 8)
    frame.paste(inner, (ox, oy))
    jitter = 0.04
    corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    moved = [
        (x + rng.uniform(-jitter, jitter) * w, y + rng.uniform(-jitter, jitter) * h)
        for x, y in corners
    ]
    frame = frame.transform(
        (w, h),
        Image.Transform.PERSPECTIVE,
        _perspective_coeffs(corners, moved),
        Image.Resampling.BICUBIC,
        fillcolor=desk,
    )
    frame = frame.rotate(rng.uniform(-5, 5), Image.Resampling.BICUBIC, fillcolor=desk)
    frame = frame.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.3)))
    noisy = np.asarray(frame, dtype=np.float32) + nprng.normal(0, rng.uniform(3, 12), (h, w, 1))
    frame = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
    out = io.BytesIO()
    frame.save(out, format="JPEG", quality=rng.randint(30, 85))
    return out.getvalue()


# --- API ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """One generated document: its image, the encoded file, and the text drawn on it."""

    image: Image.Image  # RGB, as decoded from ``data``
    data: bytes  # the file: PNG (clean) or JPEG (noisy)
    lines: list[str]  # the visual rows in reading order
    kind: str  # "label" or "receipt"
    noisy: bool
    index: int

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def suffix(self) -> str:
        return ".jpg" if self.noisy else ".png"


def _kind(kind: str, index: int, seed: int) -> str:
    if kind in KINDS:
        return kind
    if kind != "mixed":
        raise ValueError(f"kind {kind!r}: use one of {', '.join((*KINDS, 'mixed'))}")
    return KINDS[random.Random(f"{seed}:{index}:kind").random() < 0.4]  # 60 % labels


def generate(n: int, *, kind: str = "mixed", noisy: bool = False, seed: int = 0) -> list[Document]:
    """``n`` documents of ``kind`` (``label``, ``receipt`` or ``mixed``: 60 % labels),
    photographed badly when ``noisy``; the same ``seed`` gives the same documents."""
    docs = []
    for index in range(n):
        doc_kind = _kind(kind, index, seed)
        rng = random.Random(f"{seed}:{index}:content")
        image, lines = (_label if doc_kind == "label" else _receipt)(rng)
        if noisy:
            noise_rng = random.Random(f"{seed}:{index}:noise")
            data = _photograph(image, noise_rng, np.random.default_rng([seed, index]))
        else:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            data = buf.getvalue()
        decoded = Image.open(io.BytesIO(data)).convert("RGB")
        docs.append(Document(decoded, data, lines, doc_kind, noisy, index))
    return docs


def normalize_text(text: str) -> str:
    """Whitespace runs (newlines too) as one space, ends stripped: how texts are compared."""
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20, help="documents to write")
    p.add_argument("--kind", choices=[*KINDS, "mixed"], default="mixed")
    p.add_argument("--noisy", action="store_true", help="degrade them like phone photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="folder for images + truth.json")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    truth = []
    for doc in generate(args.n, kind=args.kind, noisy=args.noisy, seed=args.seed):
        name = f"{doc.index:04d}-{doc.kind}{doc.suffix}"
        (args.out / name).write_bytes(doc.data)
        truth.append({"file": name, "kind": doc.kind, "noisy": doc.noisy, "lines": doc.lines})
    (args.out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    print(f"wrote {len(truth)} documents and truth.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Small generated images for vision tests: shapes of a few colours on noisy backgrounds,
zipped in Parley's dataset layouts."""

from __future__ import annotations

import io
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SHAPES = {"circle": (220, 40, 40), "square": (40, 90, 220), "triangle": (30, 170, 60)}


def shape_image(kind: str, seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """One ``kind`` shape (circle, square, triangle; each its own colour) at a random place
    and scale on a noisy light background."""
    rng = random.Random(seed)
    w, h = size
    base = tuple(rng.randint(200, 250) for _ in range(3))
    img = Image.new("RGB", size, base)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(img)
    for _ in range(30):  # background clutter
        x, y = rng.randint(0, w), rng.randint(0, h)
        shade = tuple(c - rng.randint(0, 40) for c in base)
        draw.line((x, y, x + rng.randint(-20, 20), y + rng.randint(-20, 20)), fill=shade)
    s = rng.randint(min(w, h) // 3, min(w, h) // 2)
    x0, y0 = rng.randint(0, w - s), rng.randint(0, h - s)
    colour = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in SHAPES[kind])
    if kind == "circle":
        draw.ellipse((x0, y0, x0 + s, y0 + s), fill=colour)
    elif kind == "square":
        draw.rectangle((x0, y0, x0 + s, y0 + s), fill=colour)
    else:
        draw.polygon([(x0 + s / 2, y0), (x0, y0 + s), (x0 + s, y0 + s)], fill=colour)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def encode(img: Image.Image, fmt: str = "JPEG", **kwargs: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


def folder_zip(per_class: int, kinds: tuple[str, ...] = tuple(SHAPES), seed: int = 0) -> bytes:
    """An ``image`` dataset: one folder per shape."""
    return zip_bytes(
        {
            f"{kind}/{kind}_{i}.jpg": encode(shape_image(kind, seed * 1000 + 10 * i + k))
            for k, kind in enumerate(kinds)
            for i in range(per_class)
        }
    )


DETECTION_SIZE = (192, 160)


def draw_object(kind: str, x: int, y: int, s: int, image: Image.Image) -> dict[str, Any]:
    """A red square or a blue disc of side ``s`` at (x, y); its box."""
    d = ImageDraw.Draw(image)
    if kind == "square":
        d.rectangle([x, y, x + s - 1, y + s - 1], fill=(220, 40, 40))
    else:
        d.ellipse([x, y, x + s - 1, y + s - 1], fill=(40, 60, 220))
    return {"label": kind, "x_min": x, "y_min": y, "x_max": x + s, "y_max": y + s}


def detection_scene(
    rng: np.random.Generator, n: int, size: tuple[int, int] = DETECTION_SIZE
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Noise with ``n`` squares or discs (40-70 px) that do not overlap, and their boxes."""
    w, h = size
    noise = rng.normal(128, 25, (h, w, 3))
    image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
    boxes: list[dict[str, Any]] = []
    while len(boxes) < n:
        s = int(rng.integers(40, 70))
        x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        if any(
            x < b["x_max"] and b["x_min"] < x + s and y < b["y_max"] and b["y_min"] < y + s
            for b in boxes
        ):
            continue
        boxes.append(draw_object(("square", "disc")[int(rng.integers(2))], x, y, s, image))
    return image, boxes


def detection_zip(n: int, seed: int = 7) -> bytes:
    """An ``image-detection`` dataset: ``n`` scenes (1-2 objects; every 10th none) and
    ``annotations.csv``."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    rows = ["file,label,x_min,y_min,x_max,y_max"]
    for i in range(n):
        image, boxes = detection_scene(rng, 0 if i % 10 == 9 else 1 + i % 2)
        files[f"images/{i:03d}.png"] = encode(image, "PNG")
        rows += [
            f"{i:03d}.png,{b['label']},{b['x_min']},{b['y_min']},{b['x_max']},{b['y_max']}"
            for b in boxes
        ]
    files["annotations.csv"] = "\n".join(rows).encode()
    return zip_bytes(files)


LABEL_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def shipping_label_png(order: str = "PX-100234") -> bytes:
    """A clean, large shipping label whose order number RapidOCR reads reliably (DejaVu fonts
    come from Debian's fonts-dejavu-core, which scripts/test installs)."""
    font = Path(LABEL_FONT)
    if not font.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{font} is missing; scripts/install-system-deps fonts-dejavu-core")
        pytest.skip("DejaVu fonts not installed (scripts/install-system-deps fonts-dejavu-core)")
    big = ImageFont.truetype(str(font), 48)
    small = ImageFont.truetype(str(font.with_name("DejaVuSans.ttf")), 36)
    image = Image.new("RGB", (900, 500), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 10, 889, 489), outline="black", width=6)
    draw.text((50, 40), "PARCELLY EXPRESS", font=big, fill="black")
    draw.text((50, 140), "SHIP TO: J. DOE", font=small, fill="black")
    draw.text((50, 195), "12 ELM STREET, SPRINGFIELD", font=small, fill="black")
    draw.text((50, 330), f"ORDER {order}", font=big, fill="black")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()

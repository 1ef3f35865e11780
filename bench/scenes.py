"""Synthetic product photos for the vision benchmarks: deterministic (seeded), drawn with
Pillow and numpy, nothing downloaded.

A scene is a background (colour gradient, wood grain, tiles, fabric or a tabletop with a wall)
with objects of six kinds on it: ``parcel`` (a cardboard box in three-quarter view, tape and a
label), ``bottle``, ``shoe``, ``mug``, ``card`` (a label or card with text lines and a barcode)
and ``can``. Each object is shaded by a light ramp, casts a soft shadow, is scaled, rotated
and placed at random, and may be partly hidden by a later object or by the frame; small
clutter (coins, scraps) belongs to no kind. The photo then gets sensor noise, sometimes blur,
and JPEG artefacts.

Boxes are exact: the visible pixels of each object after occlusion, in continuous pixel
coordinates (``x_max`` is one past the last visible column). An object less than
``MIN_VISIBLE`` visible is not placed.

    classification_set(20, ["parcel", "mug"], seed=0)     # [(image, "parcel"), ...]
    detection_set(100, seed=0, size=(320, 240))           # [(image, [{label, x_min, ...}]), ...]

As a command, writes a zip in Parley's dataset layouts::

    .venv/bin/python -m bench.scenes classification --per-class 30 --out /tmp/cls.zip
    .venv/bin/python -m bench.scenes detection --n 120 --size 320x240 --out /tmp/det.zip
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["KINDS", "classification_set", "detection_set", "draw_object", "main"]

Rgb = tuple[int, int, int]
Box = dict[str, Any]

MIN_VISIBLE = 0.55  # share of an object's pixels that must stay visible
ALPHA_VISIBLE = 128  # alpha at or above which an object's pixel counts as the object


# --- colours and helpers --------------------------------------------------------------------


def _rgb(rng: np.random.Generator, base: Sequence[int], spread: int = 25) -> Rgb:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)  # type: ignore[return-value]


def _shade(color: Rgb, factor: float) -> Rgb:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color)  # type: ignore[return-value]


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _canvas(w: int, h: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    return layer, ImageDraw.Draw(layer)


def _lit(layer: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The object lit from one side: a brightness ramp across it, with a soft highlight."""
    w, h = layer.size
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * (xx / max(w, 1) - 0.5) + np.sin(angle) * (yy / max(h, 1) - 0.5)) * 2
    strength = rng.uniform(0.15, 0.35)
    arr = np.asarray(layer, dtype=np.float32).copy()
    arr[..., :3] *= (1.0 + strength * ramp)[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")


# --- the object kinds (each draws on a transparent layer of about ``s`` pixels) ------------


def _parcel(rng: np.random.Generator, s: int) -> Image.Image:
    w, h = s, int(s * rng.uniform(0.7, 0.95))
    layer, d = _canvas(w, h)
    cardboard = _rgb(rng, (178, 134, 84), 20)
    depth = int(w * rng.uniform(0.18, 0.3))
    front = [(0, depth), (w - depth, depth), (w - depth, h - 1), (0, h - 1)]
    top = [(0, depth), (depth, 0), (w - 1, 0), (w - depth, depth)]
    side = [(w - depth, depth), (w - 1, 0), (w - 1, h - depth), (w - depth, h - 1)]
    d.polygon(front, fill=cardboard)
    d.polygon(top, fill=_shade(cardboard, 1.18))
    d.polygon(side, fill=_shade(cardboard, 0.75))
    tape = _rgb(rng, (205, 175, 120), 15)
    cx = (w - depth) // 2
    tw = max(3, w // 14)
    d.rectangle([cx - tw, depth, cx + tw, h - 1], fill=tape)
    d.polygon(
        [(cx - tw, depth), (cx - tw + depth, 0), (cx + tw + depth, 0), (cx + tw, depth)], fill=tape
    )
    if rng.random() < 0.8:  # shipping label
        lx, ly = int(w * 0.08), int(h * 0.5)
        d.rectangle([lx, ly, lx + w // 4, ly + h // 4], fill=(240, 240, 235))
        for k in range(3):
            y = ly + 4 + k * max(3, h // 20)
            d.line([(lx + 3, y), (lx + w // 4 - 4, y)], fill=(40, 40, 40), width=1)
    return layer


def _bottle(rng: np.random.Generator, s: int) -> Image.Image:
    h, w = s, int(s * rng.uniform(0.3, 0.42))
    layer, d = _canvas(w, h)
    glass = _pick(
        rng, [(40, 120, 60), (40, 90, 160), (150, 80, 30), (120, 170, 190), (200, 200, 210)]
    )
    glass = _rgb(rng, glass, 15)
    neck_w = max(3, int(w * rng.uniform(0.3, 0.42)))
    shoulder = int(h * rng.uniform(0.3, 0.4))
    cap = max(3, int(h * 0.07))
    nx = (w - neck_w) // 2
    d.rounded_rectangle([0, shoulder, w - 1, h - 1], radius=max(2, w // 6), fill=(*glass, 235))
    d.polygon(
        [
            (0, shoulder + w // 5),
            (nx, cap + h // 10),
            (nx + neck_w, cap + h // 10),
            (w - 1, shoulder + w // 5),
        ],
        fill=(*glass, 235),
    )
    d.rectangle([nx, cap, nx + neck_w, shoulder], fill=(*glass, 235))
    d.rectangle([nx - 1, 0, nx + neck_w + 1, cap], fill=_rgb(rng, (200, 40, 40), 60))
    if rng.random() < 0.85:  # label band
        top = int(h * rng.uniform(0.5, 0.6))
        d.rectangle([0, top, w - 1, top + int(h * 0.2)], fill=_rgb(rng, (230, 220, 190), 25))
        d.line(
            [(w // 5, top + int(h * 0.1)), (w - w // 5, top + int(h * 0.1))],
            fill=(60, 30, 30),
            width=2,
        )
    d.line(
        [(w // 4, shoulder + 4), (w // 4, h - 6)], fill=(255, 255, 255, 120), width=max(1, w // 12)
    )
    return layer


def _shoe(rng: np.random.Generator, s: int) -> Image.Image:
    w, h = s, int(s * rng.uniform(0.42, 0.55))
    layer, d = _canvas(w, h)
    upper = _rgb(
        rng,
        _pick(rng, [(30, 30, 30), (200, 200, 200), (150, 40, 40), (40, 60, 140), (120, 80, 50)]),
        20,
    )
    sole_h = max(3, int(h * 0.16))
    d.rounded_rectangle([0, h - sole_h - 1, w - 1, h - 1], radius=sole_h // 2, fill=(235, 235, 230))
    body = [
        (int(w * 0.02), h - sole_h),
        (int(w * 0.02), int(h * 0.15)),
        (int(w * 0.3), 0),
        (int(w * 0.42), int(h * 0.08)),
        (int(w * 0.55), int(h * 0.38)),
        (int(w * 0.85), int(h * 0.5)),
        (w - 1, int(h * 0.7)),
        (w - 1, h - sole_h),
    ]
    d.polygon(body, fill=upper)
    lace = (245, 245, 245) if sum(upper) < 400 else (40, 40, 40)
    for k in range(4):
        x = int(w * (0.33 + 0.06 * k))
        y = int(h * (0.1 + 0.09 * k))
        d.line([(x, y), (x + int(w * 0.07), y + int(h * 0.06))], fill=lace, width=max(1, h // 25))
    d.ellipse([int(w * 0.05), int(h * 0.1), int(w * 0.3), int(h * 0.3)], fill=_shade(upper, 0.6))
    return layer


def _mug(rng: np.random.Generator, s: int) -> Image.Image:
    w, h = s, int(s * rng.uniform(0.75, 0.95))
    layer, d = _canvas(w, h)
    color = _rgb(
        rng,
        _pick(rng, [(235, 235, 235), (200, 60, 50), (60, 110, 180), (240, 200, 60), (70, 160, 90)]),
        15,
    )
    body_w = int(w * 0.72)
    ell = max(4, int(h * 0.14))
    handle = [body_w - int(w * 0.08), int(h * 0.25), w - 1, int(h * 0.75)]
    d.ellipse(handle, fill=color)
    inner = [
        handle[0] + int(w * 0.08),
        handle[1] + int(h * 0.12),
        handle[2] - int(w * 0.08),
        handle[3] - int(h * 0.12),
    ]
    d.ellipse(inner, fill=(0, 0, 0, 0))
    d.rectangle([0, ell // 2, body_w, h - ell // 2], fill=color)
    d.ellipse([0, h - ell, body_w, h - 1], fill=color)
    d.ellipse([0, 0, body_w, ell], fill=_shade(color, 0.85))
    d.ellipse([3, 2, body_w - 3, ell - 1], fill=_rgb(rng, (70, 45, 30), 10))
    if rng.random() < 0.5:  # a printed logo
        cx, cy, r = body_w // 2, h // 2, max(3, body_w // 6)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_rgb(rng, (90, 90, 90), 80))
    return layer


def _card(rng: np.random.Generator, s: int) -> Image.Image:
    w, h = s, int(s * rng.uniform(0.55, 0.7))
    layer, d = _canvas(w, h)
    paper = _rgb(
        rng, _pick(rng, [(245, 245, 240), (250, 235, 160), (210, 230, 250), (250, 215, 220)]), 8
    )
    d.rounded_rectangle(
        [0, 0, w - 1, h - 1], radius=max(2, w // 20), fill=paper, outline=_shade(paper, 0.7)
    )
    ink = (30, 30, 40)
    margin = max(3, w // 12)
    d.rectangle(
        [margin, margin, w - margin, margin + max(3, h // 8)], fill=_rgb(rng, (180, 40, 40), 60)
    )
    for k in range(3):
        y = margin + h // 5 + k * max(4, h // 8)
        length = int((w - 2 * margin) * rng.uniform(0.4, 0.95))
        d.line([(margin, y), (margin + length, y)], fill=ink, width=max(1, h // 30))
    bx, by = margin, int(h * 0.68)
    x = bx
    while x < w * 0.6:  # barcode
        bar = int(rng.integers(1, 4))
        d.rectangle([x, by, x + bar - 1, h - margin], fill=ink)
        x += bar + int(rng.integers(1, 4))
    return layer


def _can(rng: np.random.Generator, s: int) -> Image.Image:
    h, w = s, int(s * rng.uniform(0.48, 0.6))
    layer, d = _canvas(w, h)
    color = _rgb(
        rng,
        _pick(rng, [(200, 30, 40), (30, 90, 170), (30, 150, 70), (230, 170, 30), (20, 20, 20)]),
        15,
    )
    ell = max(4, int(w * 0.25))
    d.rectangle([0, ell // 2, w - 1, h - ell // 2], fill=color)
    d.ellipse([0, h - ell, w - 1, h - 1], fill=color)
    d.ellipse([0, 0, w - 1, ell], fill=(190, 190, 195))
    d.ellipse([w // 3, ell // 4, w // 2, ell // 2 + 1], fill=(120, 120, 125))
    for k in range(2):  # metal rims and a stripe
        y = ell // 2 + 2 + k * (h - ell - 4)
        d.line([(0, y), (w - 1, y)], fill=(200, 200, 205), width=max(1, h // 40))
    d.rectangle([0, int(h * 0.45), w - 1, int(h * 0.58)], fill=_rgb(rng, (240, 240, 240), 15))
    d.line([(w // 5, ell), (w // 5, h - ell)], fill=(255, 255, 255, 110), width=max(1, w // 10))
    return layer


KINDS: dict[str, Callable[[np.random.Generator, int], Image.Image]] = {
    "bottle": _bottle,
    "can": _can,
    "card": _card,
    "mug": _mug,
    "parcel": _parcel,
    "shoe": _shoe,
}
"""Object kinds by name; each draws an object about ``s`` pixels long on a transparent layer."""


def draw_object(
    kind: str, rng: np.random.Generator, size: int, *, angle: float = 0.0
) -> Image.Image:
    """One object of ``kind``, lit, about ``size`` pixels long, rotated by ``angle`` degrees,
    on a transparent layer cropped to it."""
    layer = _lit(KINDS[kind](rng, max(8, size)), rng)
    if angle:
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    bbox = layer.getchannel("A").point(lambda a: 255 if a >= ALPHA_VISIBLE else 0).getbbox()
    return layer.crop(bbox) if bbox else layer


def _clutter(rng: np.random.Generator, size: int) -> Image.Image:
    """A small thing of no kind: a coin, a scrap of paper, a pebble."""
    layer, d = _canvas(size, size)
    color = _rgb(
        rng, _pick(rng, [(180, 160, 90), (150, 150, 150), (240, 240, 235), (90, 80, 70)]), 25
    )
    if rng.random() < 0.5:
        d.ellipse([0, 0, size - 1, size - 1], fill=color)
    else:
        pts = [(float(rng.uniform(0, size)), float(rng.uniform(0, size))) for _ in range(5)]
        d.polygon(pts, fill=color)
    return layer


# --- backgrounds ----------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Noise in 0..1 varying over about ``cells`` cells across the image."""
    small = rng.random((max(2, h * cells // max(w, 1)), max(2, cells))).astype(np.float32)
    img = Image.fromarray((small * 255).astype(np.uint8), "L").resize(
        (w, h), Image.Resampling.BICUBIC
    )
    return np.asarray(img, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.array(_rgb(rng, (int(rng.integers(60, 230)),) * 3, 60), dtype=np.float32)
    b = np.array(_rgb(rng, (int(rng.integers(60, 230)),) * 3, 60), dtype=np.float32)
    style = int(rng.integers(5))
    if style == 0:  # gradient
        angle = rng.uniform(0, 2 * math.pi)
        t = np.cos(angle) * xx / w + np.sin(angle) * yy / h
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif style == 1:  # wood grain
        warp = _smooth_noise(rng, w, h, 4) * rng.uniform(4, 12)
        t = 0.5 + 0.5 * np.sin(yy / h * rng.uniform(20, 50) + warp)
        a, b = (
            np.array(_rgb(rng, (150, 105, 60), 25), np.float32),
            np.array(_rgb(rng, (110, 70, 40), 20), np.float32),
        )
    elif style == 2:  # tiles
        tile = int(rng.integers(24, 64))
        t = (((xx // tile) + (yy // tile)) % 2) * 0.35 + 0.3
        t[(xx % tile < 2) | (yy % tile < 2)] = 1.0
    elif style == 3:  # fabric / concrete
        t = 0.6 * _smooth_noise(rng, w, h, 12) + 0.4 * rng.random((h, w)).astype(np.float32)
    else:  # a tabletop against a wall
        horizon = h * rng.uniform(0.25, 0.5)
        t = np.where(
            yy < horizon,
            0.15 * yy / max(horizon, 1),
            0.6 + 0.4 * (yy - horizon) / max(h - horizon, 1),
        )
    arr = a * (1 - t[..., None]) + b * t[..., None]
    arr += (_smooth_noise(rng, w, h, 6)[..., None] - 0.5) * 30  # uneven light
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


# --- composing a scene ----------------------------------------------------------------------


def _shadow(photo: Image.Image, obj: Image.Image, x: int, y: int, rng: np.random.Generator) -> None:
    alpha = obj.getchannel("A").point(lambda a: int(a * rng.uniform(0.35, 0.6)))
    radius = max(1.0, obj.width / 18)
    dx, dy = int(obj.width * rng.uniform(-0.08, 0.08)), int(obj.height * rng.uniform(0.03, 0.1))
    pad = int(radius * 3)
    mask = Image.new("L", (obj.width + 2 * pad, obj.height + 2 * pad), 0)
    mask.paste(alpha, (pad, pad))
    mask = mask.filter(ImageFilter.GaussianBlur(radius))
    dark = Image.new("RGB", mask.size, (15, 15, 20))
    photo.paste(dark, (x + dx - pad, y + dy - pad), mask)


def _place(
    photo: Image.Image,
    owner: np.ndarray,
    obj: Image.Image,
    ident: int,
    rng: np.random.Generator,
    *,
    center: tuple[float, float] | None = None,
    outside: float = 0.12,
) -> bool:
    """Paste ``obj`` at a random spot (or around ``center``) unless it would hide too much of
    an earlier object or be too far out of the frame; ``owner`` records which object each
    pixel shows."""
    w, h = photo.size
    ow, oh = obj.size
    if center is None:
        x = int(rng.integers(-int(ow * outside), max(1, w - ow + int(ow * outside)) + 1))
        y = int(rng.integers(-int(oh * outside), max(1, h - oh + int(oh * outside)) + 1))
    else:
        x, y = int(center[0] - ow / 2), int(center[1] - oh / 2)
    mask = np.asarray(obj.getchannel("A")) >= ALPHA_VISIBLE
    full = np.zeros((h, w), dtype=bool)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + ow), min(h, y + oh)
    if x1 <= x0 or y1 <= y0:
        return False
    full[y0:y1, x0:x1] = mask[y0 - y : y1 - y, x0 - x : x1 - x]
    if full.sum() < MIN_VISIBLE * mask.sum():
        return False
    new_owner = np.where(full, ident, owner)
    for other in np.unique(owner[owner > 0]):
        before = (owner == other).sum()
        if (new_owner == other).sum() < MIN_VISIBLE * before:
            return False
    _shadow(photo, obj, x, y, rng)
    photo.paste(obj, (x, y), obj)
    owner[:] = new_owner
    return True


def _finish(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Sensor noise, sometimes blur, and JPEG artefacts."""
    arr = np.asarray(photo, dtype=np.float32)
    arr = arr + rng.normal(0, rng.uniform(2, 9), arr.shape)
    photo = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.35:
        photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=int(rng.integers(35, 92)))
    buffer.seek(0)
    with Image.open(buffer) as jpeg:
        return jpeg.convert("RGB")


def _boxes(owner: np.ndarray, labels: dict[int, str]) -> list[Box]:
    boxes = []
    for ident, label in labels.items():
        ys, xs = np.nonzero(owner == ident)
        if xs.size == 0:
            continue
        boxes.append(
            {
                "label": label,
                "x_min": float(xs.min()),
                "y_min": float(ys.min()),
                "x_max": float(xs.max() + 1),
                "y_max": float(ys.max() + 1),
            }
        )
    return boxes


def _scene(
    rng: np.random.Generator,
    size: tuple[int, int],
    kinds: Sequence[str],
    *,
    dominant: bool,
) -> tuple[Image.Image, list[Box]]:
    w, h = size
    photo = _background(rng, w, h)
    owner = np.zeros((h, w), dtype=np.int32)
    for _ in range(int(rng.integers(0, 3))):  # clutter under the objects
        bit = _clutter(rng, int(min(w, h) * rng.uniform(0.06, 0.12)))
        _place(photo, np.zeros_like(owner), bit, 1, rng, outside=0.0)
    labels: dict[int, str] = {}
    if dominant:
        kind = _pick(rng, kinds)
        obj = draw_object(
            kind, rng, int(min(w, h) * rng.uniform(0.5, 0.8)), angle=rng.uniform(-30, 30)
        )
        center = (w / 2 + rng.uniform(-0.12, 0.12) * w, h / 2 + rng.uniform(-0.12, 0.12) * h)
        if obj.width > w or obj.height > h:
            obj.thumbnail((w, h))
        if not _place(photo, owner, obj, 1, rng, center=center):
            _place(photo, owner, obj, 1, rng, center=(w / 2, h / 2))
        labels[1] = kind
    else:
        wanted = int(rng.integers(1, 5))
        attempts = 0
        while len(labels) < wanted and attempts < 40:
            attempts += 1
            kind = _pick(rng, kinds)
            scale = rng.uniform(0.22, 0.5) if wanted > 1 else rng.uniform(0.3, 0.65)
            obj = draw_object(kind, rng, int(min(w, h) * scale), angle=rng.uniform(-35, 35))
            ident = len(labels) + 1
            if obj.width < w and obj.height < h and _place(photo, owner, obj, ident, rng):
                labels[ident] = kind
    return _finish(photo, rng), _boxes(owner, labels)


def _check_kinds(classes: Sequence[str] | None) -> list[str]:
    kinds = list(classes) if classes else sorted(KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown object kinds {unknown}; choose from {sorted(KINDS)}")
    return kinds


def classification_set(
    n_per_class: int,
    classes: Sequence[str] | None = None,
    *,
    seed: int,
    size: tuple[int, int] = (320, 320),
) -> list[tuple[Image.Image, str]]:
    """``n_per_class`` photos of each kind in ``classes`` (default: all of ``KINDS``), one
    large object per photo, in a seeded random order: ``[(image, label), ...]``."""
    kinds = _check_kinds(classes)
    out = []
    for c, kind in enumerate(kinds):
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, 1, c, i])
            image, _ = _scene(rng, size, [kind], dominant=True)
            out.append((image, kind))
    order = np.random.default_rng([seed, 2]).permutation(len(out))
    return [out[i] for i in order]


def detection_set(
    n: int,
    *,
    seed: int,
    size: tuple[int, int] = (320, 240),
    classes: Sequence[str] | None = None,
) -> list[tuple[Image.Image, list[Box]]]:
    """``n`` photos with 1-4 objects of the kinds in ``classes`` (default: all) each, and their
    exact boxes: ``[(image, [{"label", "x_min", "y_min", "x_max", "y_max"}, ...]), ...]``."""
    kinds = _check_kinds(classes)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 3, i])
        out.append(_scene(rng, size, kinds, dominant=False))
    return out


# --- command line ---------------------------------------------------------------------------


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_classification_zip(path: Path, data: Sequence[tuple[Image.Image, str]]) -> None:
    """One folder per label (``parcel/0001.jpg``)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (image, label) in enumerate(data):
            zf.writestr(f"{label}/{i:05d}.jpg", _jpeg(image))


def write_detection_zip(path: Path, data: Sequence[tuple[Image.Image, list[Box]]]) -> None:
    """Images and ``annotations.csv`` (``file,label,x_min,y_min,x_max,y_max``)."""
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["file", "label", "x_min", "y_min", "x_max", "y_max"])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (image, boxes) in enumerate(data):
            name = f"images/{i:05d}.jpg"
            zf.writestr(name, _jpeg(image))
            for b in boxes:
                writer.writerow(
                    [name, b["label"], *(f"{b[k]:g}" for k in ("x_min", "y_min", "x_max", "y_max"))]
                )
        zf.writestr("annotations.csv", rows.getvalue())


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"size as WIDTHxHEIGHT, not {text!r}") from e
    if not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise argparse.ArgumentTypeError("each side must be 16-4096 pixels")
    return w, h


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="task", required=True)
    c = sub.add_parser("classification", help="one folder per label")
    c.add_argument("--per-class", type=int, default=30)
    c.add_argument("--classes", default=",".join(sorted(KINDS)), help="comma-separated kinds")
    c.add_argument("--size", type=_size, default=(320, 320), help="WIDTHxHEIGHT")
    d = sub.add_parser("detection", help="images + annotations.csv")
    d.add_argument("--n", type=int, default=120)
    d.add_argument("--classes", default=",".join(sorted(KINDS)), help="comma-separated kinds")
    d.add_argument("--size", type=_size, default=(320, 240), help="WIDTHxHEIGHT")
    for q in (c, d):
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--out", type=Path, required=True, help="the zip to write")
    args = p.parse_args(argv)
    classes = [k.strip() for k in args.classes.split(",") if k.strip()]
    try:
        if args.task == "classification":
            write_classification_zip(
                args.out,
                classification_set(args.per_class, classes, seed=args.seed, size=args.size),
            )
        else:
            write_detection_zip(
                args.out, detection_set(args.n, seed=args.seed, size=args.size, classes=classes)
            )
    except ValueError as e:
        p.error(str(e))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

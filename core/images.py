"""Safe image decoding: every image a tenant or a customer sends goes through ``decode_image``.

What it guarantees, whatever the bytes:

* the size is read from the header and refused over ``max_pixels`` *before* any pixel is
  decoded (decompression bombs), as are dimensions over ``MAX_SIDE`` or under 1;
* only known raster formats are opened (JPEG, PNG, WebP, GIF, BMP, TIFF); anything else, and
  truncated or corrupt files, is an ``InvalidInput`` naming the image;
* EXIF orientation is applied, so width and height are the upright ones;
* the result is 8-bit RGB: CMYK and YCbCr are converted, 16-bit grey is scaled down,
  transparency is composited on white; an animated image yields its first frame (``frames``
  says how many it had).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import InvalidInput

__all__ = ["DEFAULT_MAX_PIXELS", "FORMATS", "MAX_SIDE", "DecodedImage", "decode_image"]

DEFAULT_MAX_PIXELS = 40_000_000
"""Pixels an image may have at most (about 7,300 x 5,500); a setting overrides it."""
MAX_SIDE = 20_000
FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})  # openers (MPO is JPEG)


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, upright
    width: int
    height: int
    format: str  # as the file declared it: JPEG, PNG, ...
    sha256: str  # of the original bytes
    frames: int = 1


def _open(data: bytes, name: str) -> Image.Image:
    if not data:
        raise InvalidInput(f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=sorted(FORMATS))
    except UnidentifiedImageError as e:
        raise InvalidInput(
            f"{name}: not an image Parley can read (send JPEG, PNG, WebP, GIF, BMP or TIFF)"
        ) from e
    except Image.DecompressionBombError as e:
        raise InvalidInput(f"{name}: {e}") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise InvalidInput(f"{name}: the image is truncated or corrupt (header: {e})") from e
    return img


def _check_size(width: int, height: int, name: str, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise InvalidInput(f"{name}: the image has no pixels ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
        raise InvalidInput(
            f"{name}: {width}x{height} pixels is over the limit of {max_pixels:,} pixels "
            f"({MAX_SIDE:,} per side); send a smaller image"
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(scaled.astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def decode_image(
    data: bytes, *, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode ``data`` into an upright 8-bit RGB image (see the module docstring), or raise
    ``InvalidInput`` naming ``name``."""
    img = _open(data, name)
    fmt = str(img.format)
    _check_size(img.width, img.height, name, max_pixels)
    frames = int(getattr(img, "n_frames", 1) or 1)
    try:
        if frames > 1:
            img.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            upright = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb(upright)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise InvalidInput(f"{name}: the image is truncated or corrupt ({e})") from e
    return DecodedImage(
        image=rgb,
        width=rgb.width,
        height=rgb.height,
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
        frames=frames,
    )

"""Images in prediction requests: multipart files, base64 in JSON, or URLs.

URLs are fetched only when the operator enables it (``PARLEY_IMAGE_FETCH__ENABLED``) and only
from allow-listed hosts; the call goes through ``core.outbound`` (the host's addresses must be
public unless ``PARLEY_OUTBOUND__ALLOW_HOSTS`` allows them: a refused URL is a 422 naming it),
redirects are not followed, and the body is capped while it streams.
Every image is decoded safely (``core.images``) and named in errors (``images[2]``, ``file
label.jpg``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from core.errors import Forbidden, InvalidInput, OutboundRefused, PayloadTooLarge
from core.images import DecodedImage, decode_image
from core.outbound import OutboundGuard, SyncOutboundTransport, host_matches
from core.settings import ImageFetchSettings

__all__ = ["decode_base64", "decode_inputs", "fetch_url"]


def _check_size(data: bytes, name: str, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"{name} is {len(data)} bytes; the limit is {max_bytes} "
            "(PARLEY_LIMITS__MAX_IMAGE_BYTES)",
            limit="max_image_bytes",
        )


def decode_base64(value: str, name: str, max_bytes: int) -> bytes:
    """The bytes of a base64 image (a ``data:image/...;base64,`` prefix is allowed)."""
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        if ";base64" not in head:
            raise InvalidInput(f"{name}: a data URL must be base64 (data:image/png;base64,...)")
    if len(value) > max_bytes * 4 // 3 + 8:
        raise PayloadTooLarge(
            f"{name} is over the limit of {max_bytes} bytes (PARLEY_LIMITS__MAX_IMAGE_BYTES)",
            limit="max_image_bytes",
        )
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput(f"{name} is not valid base64 ({e})") from e


def decode_inputs(
    items: Sequence[tuple[str, bytes]], *, max_pixels: int, max_bytes: int
) -> list[DecodedImage]:
    """``(name, bytes)`` pairs → decoded images, or an error naming the first bad one."""
    decoded = []
    for name, data in items:
        _check_size(data, name, max_bytes)
        decoded.append(decode_image(data, name=name, max_pixels=max_pixels))
    return decoded


def fetch_url(
    url: str, name: str, settings: ImageFetchSettings, max_bytes: int, *, guard: OutboundGuard
) -> bytes:
    """The bytes at an image URL, under the rules in the module docstring."""
    if not settings.enabled:
        raise Forbidden(
            f"{name}: fetching images by URL is off on this server; send the image itself "
            "(multipart or base64), or ask the operator to set PARLEY_IMAGE_FETCH__ENABLED"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{name}: {url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise InvalidInput(f"{name}: URLs with credentials are not fetched")
    host = parts.hostname
    if not host_matches(host, settings.allow_hosts):
        raise Forbidden(
            f"{name}: host {host!r} is not in the allow-list (PARLEY_IMAGE_FETCH__ALLOW_HOSTS)"
        )
    transport = SyncOutboundTransport(guard)
    try:
        with (
            httpx.Client(
                transport=transport,
                timeout=settings.timeout_s,
                follow_redirects=False,
                trust_env=False,
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise InvalidInput(f"{name}: {url} answered HTTP {response.status_code}")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"{name}: {url} is over {max_bytes} bytes", limit="max_image_bytes"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    except OutboundRefused as e:
        raise OutboundRefused(f"{name}: {e.message}", **e.details) from e
    except httpx.HTTPError as e:
        raise InvalidInput(f"{name}: could not fetch {url} ({type(e).__name__}: {e})") from e

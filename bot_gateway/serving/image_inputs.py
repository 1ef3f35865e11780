"""Images in prediction requests: multipart files, base64 in JSON, or URLs.

URLs are fetched only when the operator enables it (``PARLEY_IMAGE_FETCH__ENABLED``) and only
from allow-listed hosts; the host's addresses must all be public (no loopback, private,
link-local, reserved or multicast ranges — checked on the resolved address, which is then the
one connected to), redirects are not followed, and the body is capped while it streams.
Every image is decoded safely (``core.images``) and named in errors (``images[2]``, ``file
label.jpg``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from core.errors import Forbidden, InvalidInput, PayloadTooLarge
from core.images import DecodedImage, decode_image
from core.settings import ImageFetchSettings

__all__ = ["decode_base64", "decode_inputs", "fetch_url", "host_allowed"]


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


def host_allowed(host: str, allow: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allow:
        entry = entry.lower().rstrip(".")
        if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
            return True
        if host == entry:
            return True
    return False


def _public_address(host: str, port: int) -> str:
    """The host's first address, if every address it resolves to is public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise InvalidInput(f"cannot resolve {host!r} ({e})") from e
    addresses = {info[4][0] for info in infos}
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise Forbidden(
                f"{host!r} resolves to {address}, a private or reserved address; image URLs "
                "must point to public hosts"
            )
    return sorted(addresses)[0]


def fetch_url(url: str, name: str, settings: ImageFetchSettings, max_bytes: int) -> bytes:
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
    if not host_allowed(host, settings.allow_hosts):
        raise Forbidden(
            f"{name}: host {host!r} is not in the allow-list (PARLEY_IMAGE_FETCH__ALLOW_HOSTS)"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = _public_address(host, port)
    # connect to the address checked above (no second resolution), keep the Host header / SNI
    transport = httpx.HTTPTransport(retries=0)
    target = httpx.URL(url)
    try:
        with httpx.Client(
            transport=transport, timeout=settings.timeout_s, follow_redirects=False
        ) as client:
            request = client.build_request(
                "GET", target.copy_with(host=address), headers={"Host": target.netloc.decode()}
            )
            if parts.scheme == "https":
                request.extensions["sni_hostname"] = host
            response = client.send(request, stream=True)
            try:
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
            finally:
                response.close()
    except httpx.HTTPError as e:
        raise InvalidInput(f"{name}: could not fetch {url} ({type(e).__name__}: {e})") from e

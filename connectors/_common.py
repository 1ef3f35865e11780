"""Small helpers shared by the Slack and Messenger connectors: checking an HMAC-SHA256
signature header, making the image URLs a bot sends absolute, and cutting text to a provider's
limits."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

from core.errors import Unauthenticated
from core.logging import log_event

__all__ = ["check_signature", "clip", "hmac_sha256", "public_url", "split_text"]


def hmac_sha256(secret: str, data: bytes) -> str:
    """The hex HMAC-SHA256 of ``data`` under ``secret``."""
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def check_signature(given: str | None, expected: str, *, channel: str, header: str) -> None:
    """Raise ``Unauthenticated`` unless the ``header`` value ``given`` equals ``expected``
    (compared in constant time). Neither value is ever quoted in the error."""
    if not given:
        reason = f"the {header} header is missing"
    elif hmac.compare_digest(given.encode(), expected.encode()):
        return
    else:
        reason = f"the {header} header does not match the request body"
    log_event(f"connector.{channel}.verify_failed", reason=reason)
    raise Unauthenticated(
        f"{reason}; this webhook was not signed by {channel} with this channel's secret: "
        f"check the secret saved in the {channel} channel's config"
    )


def public_url(url: str | None, base: str, *, channel: str) -> str | None:
    """An image URL the provider can download: relative URLs resolve against ``base`` (the
    gateway's public webhook URL); anything but http(s) (an inline ``data:`` image) is left out
    with a logged event, since the provider cannot fetch it."""
    if not url:
        return None
    absolute = urljoin(base, url)
    if urlsplit(absolute).scheme in ("http", "https"):
        return absolute
    log_event(
        f"connector.{channel}.image_left_out",
        reason=f"a {urlsplit(absolute).scheme or 'schemeless'} URL; send an http(s) image URL",
    )
    return None


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis where it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_text(text: str, limit: int, cost: Callable[[str], int] = len) -> list[str]:
    """``text`` in pieces of at most ``limit`` (measured by ``cost``, e.g. the length once
    escaped), cut at a line break or space where there is one."""
    pieces: list[str] = []
    rest = text
    while cost(rest) > limit:
        end, used = 0, 0
        while end < len(rest) and used + cost(rest[end]) <= limit:
            used += cost(rest[end])
            end += 1
        cut = max(rest.rfind("\n", 0, end), rest.rfind(" ", 0, end))
        if cut <= 0:
            cut = max(end, 1)
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not pieces:
        pieces.append(rest)
    return pieces

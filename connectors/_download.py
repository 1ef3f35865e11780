"""Downloading a customer's media within a size limit, shared by the connectors whose ``fetch``
reads a provider's file URL (Telegram, Twilio).

The declared size (the provider's own ``file_size``, then ``Content-Length``) is checked before
reading, and reading stops at ``max_bytes + 1``, so an oversized or lying download never fills
memory. Errors never quote the URL: some carry a secret (Telegram's bot token).
"""

from __future__ import annotations

import httpx

from core.errors import DeliveryFailed, PayloadTooLarge

__all__ = ["download", "refuse_oversized"]


def refuse_oversized(size: int | None, *, max_bytes: int, what: str) -> None:
    """Raise ``PayloadTooLarge`` when a declared ``size`` is over ``max_bytes``."""
    if size is not None and size > max_bytes:
        raise PayloadTooLarge(
            f"{what} is {size} bytes, over the limit of {max_bytes}; ask the customer for a "
            "smaller image or raise the channel's media limit",
            size=size,
            limit=max_bytes,
        )


async def download(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    what: str,
    auth: tuple[str, str] | None = None,
    follow_redirects: bool = False,
) -> bytes:
    """The body of ``GET url``, at most ``max_bytes`` long.

    Raises ``PayloadTooLarge`` past the limit and ``DeliveryFailed`` when the provider does
    not answer with the file."""
    try:
        async with client.stream(
            "GET", url, auth=auth, follow_redirects=follow_redirects
        ) as response:
            if not response.is_success:
                raise DeliveryFailed(
                    f"{what}: the provider answered {response.status_code} to the download; "
                    "the file may have expired, ask the customer to send it again"
                )
            length = response.headers.get("content-length", "")
            if length.isdigit():
                refuse_oversized(int(length), max_bytes=max_bytes, what=what)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise PayloadTooLarge(
                        f"{what} is over the limit of {max_bytes} bytes; ask the customer for "
                        "a smaller image or raise the channel's media limit",
                        limit=max_bytes,
                    )
    except httpx.RequestError as e:
        raise DeliveryFailed(f"{what}: the download failed ({type(e).__name__})") from e
    return bytes(body)

"""Deeply nested JSON bodies refused before anything parses them.

FastAPI (and routes that call ``json.loads`` themselves) parse JSON bodies by recursion: a body
of 100,000 ``[`` was a ``RecursionError`` and a 500. ``JsonDepthLimit`` is a pure ASGI
middleware: for a request whose content type is JSON (``application/json`` or
``application/*+json``) it reads the body, scans it with ``core.documents.check_json_depth``
(no parsing, strings skipped), answers ``422 {"error": "limit_exceeded", "limit":
"max_document_depth", ...}`` when it is nested deeper than ``limits.max_document_depth``, and
otherwise hands the same body on to the app. A body whose text holds an escaped NUL
character (``\u0000``, which PostgreSQL cannot store) is refused the same way (``422
invalid_input``).

It caps no sizes: the body-size middleware (``bot_gateway.body_limits``) runs outside it, so
the body it reads is already within the route's limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot_gateway.errors import problem
from core.documents import check_json_depth, check_json_nul
from core.errors import InvalidInput, LimitExceeded

__all__ = ["JsonDepthLimit", "is_json"]


def is_json(content_type: str) -> bool:
    """Whether a ``Content-Type`` value is one FastAPI parses as JSON."""
    kind = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = kind.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


class JsonDepthLimit:
    """Refuse JSON request bodies nested deeper than ``max_depth`` (422), before parsing."""

    def __init__(self, app: ASGIApp, *, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_json(_header(scope, b"content-type")):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away: let the app see it
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_json_depth(body, self.max_depth, what="the JSON body")
            check_json_nul(body, what="the JSON body")
        except (LimitExceeded, InvalidInput) as e:
            await problem(422, e.code, e.message, **e.details)(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""

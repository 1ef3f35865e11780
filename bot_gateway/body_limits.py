"""Request bodies capped by route class while they stream in, before any other work.

``BodyLimits`` is a pure ASGI middleware that sits outside everything that reads a body or
authenticates a caller (only the audit log, which reads nothing before the answer, is outside
it, so refused writes are recorded). For each HTTP request it picks a class from
``ROUTE_CLASSES`` (path and content type) and its cap from ``settings.limits``:

- ``webhook`` (``max_webhook_bytes``): channel webhooks, ``/webhooks/...`` and
  ``/v1/bots/{id}/webhooks/...`` (the REST channel);
- ``upload`` (``max_upload_bytes``): multipart forms (dataset files, bot files, chat uploads,
  images to predict and OCR) and dataset examples sent as JSON (``/v1/datasets``,
  ``/v1/datasets/{id}/examples``);
- ``json`` (``max_json_bytes``): everything else, JSON, YAML and text bodies (predict and OCR
  with base64 images included: larger images go as multipart files).

A declared ``Content-Length`` over the cap is answered ``413`` at once, unread. A body without
one (``Transfer-Encoding: chunked``) is counted as the app receives it: past the cap, the
receive channel raises ``BodyTooLarge`` and whatever the app answers instead (a route may turn
a failed read into a ``400`` or ``422``) is replaced by the ``413``, so a huge body is never
consumed. The answer is ``{"error": "payload_too_large", "message": ..., "limit":
"<setting>", "max_bytes": N}``.

It also refuses, with ``415 unsupported_media_type``, a body whose content type the route does
not read (``text/plain`` to a JSON route), instead of letting FastAPI parse it anyway: the
content types a route reads are those its OpenAPI operation documents
(``bot_gateway.openapi``); a route documenting ``*/*`` reads anything, and a body without a
``Content-Type`` is taken as JSON, as FastAPI does.

Websocket messages are limited by their own routes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot_gateway.errors import problem
from bot_gateway.json_depth import is_json
from bot_gateway.openapi import documented_operation
from core.settings import LimitSettings

__all__ = ["ROUTE_CLASSES", "BodyLimits", "BodyTooLarge", "body_class"]


@dataclass(frozen=True)
class BodyClass:
    name: str
    setting: str  # the LimitSettings field that caps it

    def limit(self, limits: LimitSettings) -> int:
        return int(getattr(limits, self.setting))


WEBHOOK = BodyClass("webhook", "max_webhook_bytes")
UPLOAD = BodyClass("upload", "max_upload_bytes")
JSON = BodyClass("json", "max_json_bytes")

_WEBHOOK_ROUTES = re.compile(r"^(/webhooks/|/v1/bots/[^/]+/webhooks/)")
_DATASET_ROUTES = re.compile(r"^/v1/datasets(/[^/]+/examples)?/?$")

ROUTE_CLASSES: tuple[tuple[str, Callable[[str, str], bool], BodyClass], ...] = (
    # (what, predicate(path, media type), class): the first that holds decides
    ("channel webhooks", lambda path, kind: bool(_WEBHOOK_ROUTES.match(path)), WEBHOOK),
    ("multipart forms", lambda path, kind: kind.startswith("multipart/"), UPLOAD),
    ("dataset examples as JSON", lambda path, kind: bool(_DATASET_ROUTES.match(path)), UPLOAD),
    ("anything else", lambda path, kind: True, JSON),
)
"""Route classes of request bodies, decided by path and media type (see the module
docstring)."""


def body_class(path: str, content_type: str) -> BodyClass:
    """The class of a request body sent to ``path`` with ``content_type``."""
    kind = _media_type(content_type)
    return next(cls for _, holds, cls in ROUTE_CLASSES if holds(path, kind))


class BodyTooLarge(Exception):
    """Raised from the receive channel once a body passes its cap (the middleware answers)."""


class BodyLimits:
    """Cap request bodies by route class (413) and refuse unread content types (415)."""

    def __init__(self, app: ASGIApp, *, limits: LimitSettings) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        content_type = headers.get("content-type", "")
        cls = body_class(scope["path"], content_type)
        limit = cls.limit(self.limits)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await self._too_large(cls, limit)(scope, receive, send)
            return
        has_body = (length.isdigit() and int(length) > 0) or "transfer-encoding" in headers
        accepted = self._accepted(scope) if has_body and content_type else frozenset()
        if accepted and not _reads(accepted, content_type):
            await problem(
                415,
                "unsupported_media_type",
                f"this route does not read {_media_type(content_type)} bodies; send "
                + ", ".join(sorted(accepted)),
                accepted=sorted(accepted),
            )(scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False
        answered = False

        async def counted() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            nonlocal started, answered
            if exceeded and not started:  # the app's answer to a body it could not finish
                if not answered:
                    answered = True
                    await self._too_large(cls, limit)(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:  # BodyTooLarge, or whatever a route made of it: the 413 stands
            if not exceeded or started:
                raise
        if exceeded and not started and not answered:
            await self._too_large(cls, limit)(scope, receive, send)

    def _too_large(self, cls: BodyClass, limit: int) -> JSONResponse:
        setting = cls.setting
        return problem(
            413,
            "payload_too_large",
            f"the request body is over the {cls.name} limit of {limit} bytes "
            f"(PARLEY_LIMITS__{setting.upper()})",
            limit=setting,
            max_bytes=limit,
        )

    # -- content types ---------------------------------------------------------------------------

    def _accepted(self, scope: Scope) -> frozenset[str]:
        """The media types the request's operation documents for its body (none: no check)."""
        app = scope.get("app")
        if not isinstance(app, FastAPI):
            return frozenset()
        operation = documented_operation(app, scope["method"], scope["path"]) or {}
        return frozenset((operation.get("requestBody") or {}).get("content") or ())


def _reads(accepted: frozenset[str], content_type: str) -> bool:
    kind = _media_type(content_type)
    return (
        "*/*" in accepted or kind in accepted or (is_json(kind) and "application/json" in accepted)
    )


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _headers(scope: Scope) -> dict[str, str]:
    return {
        bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1")
        for k, v in scope.get("headers", ())
    }

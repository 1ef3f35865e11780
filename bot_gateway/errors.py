"""Domain errors → HTTP problem responses ``{"error": code, "message": ...}``, in one place;
and the form of an error a chat visitor sees (``for_visitor``): the widget's REST calls and the
web chat socket tell the visitor to send the message again, never where the servers are."""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import errors as e
from core.logging import log_event

STATUS: list[tuple[type[e.ParleyError], int]] = [
    # most specific first
    (e.PayloadTooLarge, 413),
    (e.UnsupportedMediaType, 415),
    (e.LimitExceeded, 422),
    (e.InvalidInput, 422),
    (e.Unauthenticated, 401),
    (e.TooManyRequests, 429),
    (e.Forbidden, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.ModelLoadError, 500),
    (e.DeliveryFailed, 502),
    (e.RemoteModelError, 502),
    (e.Unavailable, 503),
    (e.ConfigurationError, 500),
]

HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    503: "unavailable",
}


CLOSE_CODES: list[tuple[type[e.ParleyError], int]] = [
    (e.Unauthenticated, 4401),
    (e.Forbidden, 4403),
    (e.NotFound, 4404),
    (e.Conflict, 4409),
    (e.TooManyRequests, 4429),
    (e.Unavailable, 4503),
]
"""Websocket close codes: 4000 + the HTTP status, as for the REST API."""


def close_code_for(error: e.ParleyError) -> int:
    for cls, code in CLOSE_CODES:
        if isinstance(error, cls):
            return code
    return 1011


VISITOR_UNAVAILABLE = "the chat is briefly unavailable; send your message again in a few seconds"


def for_visitor(error: e.ParleyError) -> e.ParleyError:
    """The form of ``error`` a chat visitor (the widget) sees: ``Unavailable`` becomes "send
    your message again" with its ``retry_after`` (its message names the server, for operators:
    it goes to the server log); other errors are returned unchanged."""
    if not isinstance(error, e.Unavailable):
        return error
    log_event("chat.unavailable", error=error.message)
    retry_after = error.details.get("retry_after")
    shown = e.Unavailable(
        VISITOR_UNAVAILABLE, **({"retry_after": retry_after} if retry_after is not None else {})
    )
    shown.__cause__ = error
    return shown


@contextmanager
def visitor_errors(visitor: bool = True) -> Iterator[None]:
    """Raise errors of the block in the form a chat visitor sees (``for_visitor``) when
    ``visitor``; unchanged otherwise (an API key's caller is a server, told everything)."""
    try:
        yield
    except e.ParleyError as error:
        shown = for_visitor(error) if visitor else error
        if shown is error:
            raise
        raise shown from error


def status_for(error: e.ParleyError) -> int:
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 500


def problem(http_status: int, code: str, message: str, /, **details: object) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if http_status == 401 else {}
    retry_after = details.get("retry_after")
    if isinstance(retry_after, int | float) and retry_after >= 0:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    body = {**details, "error": code, "message": message}
    return JSONResponse(body, http_status, headers=headers or None)


def allowed_methods(request: Request, exc: StarletteHTTPException) -> list[str]:
    """The methods answered at the request's path (the ``Allow`` of a 405): the documented
    operations' and those of the route that refused the method."""
    from bot_gateway.openapi import documented_methods  # it imports the routers, which import us

    refused_by = (exc.headers or {}).get("Allow", "")
    methods = {m.strip() for m in refused_by.split(",") if m.strip()}
    return sorted(methods | set(documented_methods(request.app, request.scope["path"])))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(e.ParleyError)
    async def _domain(request: Request, exc: e.ParleyError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log_event("http.error", path=request.url.path, error=exc.message)
        return problem(status, exc.code, exc.message, **exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in err["loc"] if p != "body"), "message": err["msg"]}
            for err in exc.errors()
        ]
        message = "; ".join(
            f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details
        )
        return problem(422, "invalid_request", message or "invalid request", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        if exc.status_code == 405:
            allowed = allowed_methods(request, exc)
            response = problem(
                405, code, f"{request.url.path} answers {', '.join(allowed)}, not {request.method}"
            )
            response.headers["Allow"] = ", ".join(allowed)
            return response
        return problem(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log_event("http.unhandled", path=request.url.path, error=traceback.format_exc())
        return problem(500, "internal", "internal server error; the server log has the details")

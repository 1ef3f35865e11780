"""The one error tree of Parley.

Services raise these domain errors; ``bot_gateway.errors`` maps them to HTTP problem
responses ``{"error": code, "message": ...}`` in one place.

    ParleyError                      500 internal
    ├── InvalidInput                 422 invalid_input
    │   ├── UnknownPluginError       422 unknown_plugin
    │   ├── UnsupportedMediaType     415 unsupported_media_type (an upload that is not an image)
    │   ├── ImportValidationError    422 invalid_dataset   (row errors: ``line 17: empty text``)
    │   └── OutboundRefused          422 outbound_refused  (a private address; core.outbound)
    ├── LimitExceeded                422 limit_exceeded    (a count over a configured limit)
    │   └── PayloadTooLarge          413 payload_too_large (bytes over a configured limit)
    ├── Unauthenticated              401 unauthenticated   (missing, wrong or revoked key)
    ├── TooManyRequests              429 too_many_requests (e.g. repeated failed logins)
    │   ├── RateLimited              429 rate_limited      (a rate limit; Retry-After, RateLimit-*)
    │   └── QuotaExceeded            429 quota_exceeded    (a tenant's quota; ``details["quota"]``)
    ├── Forbidden                    403 forbidden         (key lacks a scope; operator token)
    │   └── QuotaFull                403 quota_exceeded    (a count or size quota: models, storage)
    ├── NotFound                     404 not_found         (also for another tenant's ids)
    ├── Conflict                     409 conflict
    │   └── NotReady                 409 not_ready         (model or dataset in the wrong status)
    ├── ModelLoadError               500 model_load_failed (artifact missing, corrupt, unreadable)
    ├── DeliveryFailed               502 delivery_failed   (a channel's provider refused a message)
    ├── RemoteModelError             502 remote_model_failed (a tenant's own model server failed:
    │                                                        down, timeout, non-2xx, bad answer)
    ├── Unavailable                  503 unavailable       (a shared service is down: Redis, the
    │                                                        object store; names it; Retry-After)
    └── ConfigurationError           500 configuration     (server set up wrongly; says how to fix)

Every message says what went wrong and what to do next. A ``retry_after`` detail (seconds)
becomes a ``Retry-After`` header.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigurationError",
    "Conflict",
    "DeliveryFailed",
    "Forbidden",
    "ImportValidationError",
    "InvalidInput",
    "LimitExceeded",
    "ModelLoadError",
    "NotFound",
    "NotReady",
    "OutboundRefused",
    "ParleyError",
    "PayloadTooLarge",
    "QuotaExceeded",
    "QuotaFull",
    "RateLimited",
    "RemoteModelError",
    "TooManyRequests",
    "Unauthenticated",
    "Unavailable",
    "UnknownPluginError",
    "UnsupportedMediaType",
]


class ParleyError(Exception):
    """Base of every error Parley raises on purpose."""

    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(ParleyError):
    code = "invalid_input"


class UnknownPluginError(InvalidInput):
    code = "unknown_plugin"


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"


class ImportValidationError(InvalidInput):
    """A dataset file with bad rows; ``details["errors"]`` lists ``{line, message}`` (an image
    zip's: ``{file, line?, message}``), and ``details["details"]`` the same as ``{field,
    line?, message}`` (``field``: ``line 17`` or ``labels.csv line 3``), the shape of the
    API's other validation errors."""

    code = "invalid_dataset"

    def __init__(self, message: str, **details: Any) -> None:
        errors = details.get("errors") or []
        details.setdefault("details", [_row_detail(e) for e in errors if isinstance(e, dict)])
        super().__init__(message, **details)


def _row_detail(error: dict[str, Any]) -> dict[str, Any]:
    line = error.get("line")
    where = [str(error["file"])] if error.get("file") else []
    where += [f"line {line}"] if line is not None else []
    detail = {"field": " ".join(where), "message": error.get("message", "")}
    return detail | ({"line": line} if line is not None else {})


class OutboundRefused(InvalidInput):
    """A call for a tenant (HTTP action, action server, image URL) to an address that is not
    public and not allowed by ``PARLEY_OUTBOUND__ALLOW_HOSTS``; ``details["url"]``."""

    code = "outbound_refused"


class LimitExceeded(ParleyError):
    code = "limit_exceeded"


class PayloadTooLarge(LimitExceeded):
    code = "payload_too_large"


class Unauthenticated(ParleyError):
    code = "unauthenticated"


class TooManyRequests(ParleyError):
    code = "too_many_requests"


class RateLimited(TooManyRequests):
    code = "rate_limited"


class QuotaExceeded(TooManyRequests):
    """A tenant's quota is used up; ``details["quota"]`` names it."""

    code = "quota_exceeded"


class Forbidden(ParleyError):
    code = "forbidden"


class QuotaFull(Forbidden):
    """A tenant's count or size quota is full (waiting does not help, deleting does);
    ``details["quota"]`` names it."""

    code = "quota_exceeded"


class NotFound(ParleyError):
    code = "not_found"


class Conflict(ParleyError):
    code = "conflict"


class NotReady(Conflict):
    code = "not_ready"


class ModelLoadError(ParleyError):
    code = "model_load_failed"


class DeliveryFailed(ParleyError):
    code = "delivery_failed"


class RemoteModelError(ParleyError):
    """A model registered with ``POST /v1/models/remote`` could not be reached or answered
    something Parley cannot read; the message names the model and the server's URL
    (``details["url"]``). Parley itself is fine: other models keep serving."""

    code = "remote_model_failed"


class Unavailable(ParleyError):
    """A service Parley shares between processes (Redis, the object store) cannot be reached;
    the message names it. Nothing was changed: the client may retry."""

    code = "unavailable"


class ConfigurationError(ParleyError):
    code = "configuration"

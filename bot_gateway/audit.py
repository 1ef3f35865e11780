"""Every write to ``/v1`` goes into the audit log (``core.audit``), without slowing it down.

What is recorded: each ``POST``, ``PUT``, ``PATCH`` and ``DELETE`` request under ``/v1`` that
matches a route, whatever its outcome (a refused attempt — 401, 403, 404, 413, 422, 429 — is
recorded with its status, and an unhandled error as 500; one a middleware answered before
routing is matched to its route template by path), with

- who: the API key that authenticated it (``key:<id>``; a Studio user's session on ``/v1``
  is ``user:<id>``: ``request.state.principal``, left
  there by ``deps.get_principal``, else the request's bearer key if it is valid), else the
  agent's console session (``agent:<id>``, ``request.state.agent``), else the operator token
  (``operator``, ``request.state.operator``), else a bot's widget key (``widget:<bot id>``,
  when the request carried one for the path's ``bot_id``), else ``anonymous``;
- the tenant: the key's or agent's; a widget's bot's; for the operator, the tenant in the
  path or the one the request created; none for ``anonymous``;
- what: the method and the route template (``DELETE /v1/bots/{bot_id}``);
- which: the path parameters in order, then the ``id`` of the JSON body of a ``201``/``202``
  answer to a ``POST`` (a new tenant's ``tenant_id`` for the operator), joined by ``/``;
- when (the request's arrival), from where (the client address), and the status.

Not recorded, being reads in effect or per-message chat traffic: predict, parse and OCR
calls, bot story tests (``POST /v1/bots/{bot_id}/test``, a dry run), messages to a bot's
REST channel and agents' messages to customers (``SKIPPED``); channel provider webhooks and
the Rasa-compatible routes lie outside ``/v1``; requests no route matched wrote nothing.

The middleware only queues an entry after the response is sent; ``AuditWriter``'s thread
stores the queue in batches (every ``flush_interval`` seconds or ``batch_size`` entries, and
at shutdown) and purges entries past ``settings.audit.retention_days`` once an hour.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Engine, select
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot_gateway.ratelimit import route_template
from core import audit
from core.db import session_scope, utcnow
from core.errors import ParleyError
from core.logging import log_event
from core.metrics import counters
from core.tables import Bot, Tenant

__all__ = ["SKIPPED", "AuditMiddleware", "AuditWriter", "Pending"]

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PREFIX = "/v1/"
SKIPPED = frozenset(
    {
        "POST /v1/models/{model_id}/predict",
        "POST /v1/models/{model_id}/parse",
        "POST /v1/ocr",
        "POST /v1/bots/{bot_id}/test",
        "POST /v1/bots/{bot_id}/webhooks/rest",
        "POST /v1/agent/conversations/{conversation_id}/messages",
    }
)
MAX_CAPTURED_BODY = 64 * 1024  # a created resource's answer is read for its id up to this
PURGE_EVERY_S = 3600.0


@dataclass(frozen=True)
class Pending:
    """An entry as the middleware saw it; the writer thread finishes it (the created id from
    ``body``, the tenant of a widget's bot or of the operator's target)."""

    actor: str
    tenant_id: str | None
    action: str
    path_ids: tuple[str, ...]
    status: int
    address: str | None
    created_at: datetime
    body: bytes | None = None  # the JSON answer of a create
    widget_bot: str | None = None
    operator_tenant: str | None = None  # a tenant id or name from the path


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()


class AuditWriter:
    """Stores queued entries from a background thread (``submit`` never blocks)."""

    def __init__(
        self,
        engine: Engine,
        *,
        retention_days: int,
        flush_interval: float = 0.5,
        batch_size: int = 500,
        max_backlog: int = 100_000,
    ) -> None:
        self.engine = engine
        self.retention_days = retention_days
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_backlog)
        self._dropped_logged = 0.0
        self._thread: threading.Thread | None = None
        self._next_purge = 0.0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Store what is queued, then end the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, entry: Pending) -> None:
        """Queue ``entry``; past ``max_backlog`` unwritten entries (the database is down or
        too slow) it is dropped, counted as ``audit.dropped`` and logged once a minute."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            counters.incr("audit.dropped")
            now = time.monotonic()
            if now - self._dropped_logged > 60:
                self._dropped_logged = now
                log_event("audit.dropped", backlog=self._queue.qsize(), level=logging.ERROR)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every entry submitted before this call is stored."""
        if self._thread is None:
            return
        marker = _Flush()
        self._queue.put(marker)
        marker.done.wait(timeout)

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[Pending] = []
            flushes: list[_Flush] = []
            try:
                item = self._queue.get(timeout=self.flush_interval)
            except queue.Empty:
                item = None
            deadline = time.monotonic() + self.flush_interval
            while item is not None:
                if item is _STOP:
                    stopping = True
                    break
                if isinstance(item, _Flush):
                    flushes.append(item)
                    break
                batch.append(item)
                if len(batch) >= self.batch_size:
                    break
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    item = None
            if stopping:  # take what was queued behind the stop too
                while True:
                    try:
                        rest = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(rest, Pending):
                        batch.append(rest)
                    elif isinstance(rest, _Flush):
                        flushes.append(rest)
            self._write(batch)
            for marker in flushes:
                marker.done.set()
            self._maybe_purge()

    def _write(self, batch: list[Pending]) -> None:
        if not batch:
            return
        try:
            with session_scope(self.engine) as session:
                entries = [self._finish(session, p) for p in batch]
                audit.record(session, entries)
        except Exception as e:  # noqa: BLE001 - the writer must outlive a database hiccup
            log_event("audit.write_failed", entries=len(batch), error=repr(e), level=logging.ERROR)

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY_S
        try:
            with session_scope(self.engine) as session:
                gone = audit.purge(session, retention_days=self.retention_days)
            if gone:
                log_event("audit.purged", entries=gone, retention_days=self.retention_days)
        except Exception as e:  # noqa: BLE001 - retried at the next purge time
            log_event("audit.purge_failed", error=repr(e), level=logging.ERROR)

    @staticmethod
    def _finish(session: Any, p: Pending) -> audit.Entry:
        created = _body_field(p.body, "id")
        if created is None and p.actor == "operator":  # a new tenant: {"tenant_id", ...}
            created = _body_field(p.body, "tenant_id")
        ids = list(p.path_ids)
        if created is not None and (not ids or ids[-1] != created):
            ids.append(created)
        tenant_id = p.tenant_id
        if p.widget_bot is not None:
            tenant_id = session.scalar(select(Bot.tenant_id).where(Bot.id == p.widget_bot))
        elif p.actor == "operator":
            tenant_id = _tenant_of(session, p.operator_tenant) or _body_field(p.body, "tenant_id")
        return audit.Entry(
            tenant_id=tenant_id,
            actor=p.actor,
            action=p.action,
            target_id=audit.TARGET_SEPARATOR.join(ids) or None,
            status=p.status,
            address=p.address,
            created_at=p.created_at,
        )


def _body_field(body: bytes | None, name: str) -> str | None:
    if not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _tenant_of(session: Any, tenant: str | None) -> str | None:
    if not tenant:
        return None
    found = session.scalar(select(Tenant.id).where((Tenant.id == tenant) | (Tenant.name == tenant)))
    return found if isinstance(found, str) else None


# --- the middleware ---------------------------------------------------------------------------


class AuditMiddleware:
    """Pure ASGI: watches the status (and a create's answer) go by, queues one ``Pending``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.templates = _Templates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in WRITES
            or not scope["path"].startswith(PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        arrived = utcnow()
        scope.setdefault("state", {})
        seen: dict[str, Any] = {"status": 500, "body": None}
        chunks: list[bytes] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = dict(message.get("headers") or [])
                kind = headers.get(b"content-type", b"").split(b";")[0].strip()
                seen["capture"] = (
                    scope["method"] == "POST"
                    and message["status"] in (201, 202)
                    and kind == b"application/json"
                )
                seen["size"] = 0
            elif message["type"] == "http.response.body" and seen.get("capture"):
                chunk = message.get("body", b"")
                seen["size"] += len(chunk)
                if seen["size"] <= MAX_CAPTURED_BODY:
                    chunks.append(chunk)
                else:
                    seen["capture"], chunks[:] = False, []
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            try:
                if seen.get("capture"):
                    seen["body"] = b"".join(chunks)
                await _queue_entry(scope, arrived, seen["status"], seen["body"], self.templates)
            except Exception as e:  # noqa: BLE001 - auditing must never break the answer
                log_event("audit.queue_failed", error=repr(e), level=logging.ERROR)


class _Templates:
    """The app's route templates (from its OpenAPI paths), for requests answered before
    routing (a body refused by a middleware): the most literal template that matches."""

    def __init__(self) -> None:
        self._routes: list[tuple[int, re.Pattern[str], str, frozenset[str]]] | None = None

    def match(self, app: Any, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        if self._routes is None:
            try:
                paths = app.openapi().get("paths", {})
            except Exception as e:  # noqa: BLE001 - then such requests go unrecorded
                log_event("audit.templates_failed", error=repr(e), level=logging.ERROR)
                paths = {}
            self._routes = sorted(
                (
                    (template.count("{"), compile_path(template)[0], template, frozenset(ops))
                    for template, ops in paths.items()
                ),
                key=lambda r: r[0],
            )
        for _, regex, template, methods in self._routes:
            if method.lower() in methods and (found := regex.match(path)):
                return template, found.groupdict()
        return None


async def _queue_entry(
    scope: Scope, arrived: datetime, status: int, body: bytes | None, templates: _Templates
) -> None:
    app = scope.get("app")
    gateway = getattr(getattr(app, "state", None), "gateway", None)
    writer = getattr(gateway, "audit", None)
    if writer is None:
        return
    route = scope.get("route")
    params: dict[str, Any] = scope.get("path_params") or {}
    if route is not None:
        template = route_template(scope)
    elif (matched := templates.match(app, scope["method"], scope["path"])) is not None:
        template, params = matched
    else:
        return  # no route: nothing was written
    action = f"{scope['method']} {template}"
    if action in SKIPPED:
        return
    state: dict[str, Any] = scope.get("state") or {}
    client = scope.get("client")
    pending = Pending(
        actor="anonymous",
        tenant_id=None,
        action=action,
        path_ids=tuple(str(v)[:100] for v in params.values()),
        status=status,
        address=client[0] if client else None,
        created_at=arrived,
        body=body,
    )
    principal = state.get("principal")
    if principal is None:  # a route that checks the key itself, or an answer before routing
        principal = await _key_principal(gateway, scope)
    agent = state.get("agent")
    if principal is not None:
        pending = replace(pending, actor=principal.actor, tenant_id=principal.tenant_id)
    elif agent is not None:
        pending = replace(pending, actor=f"agent:{agent.id}", tenant_id=agent.tenant_id)
    elif state.get("operator"):
        tenant = params.get("tenant_id") or params.get("tenant")
        pending = replace(pending, actor="operator", operator_tenant=tenant)
    elif "bot_id" in params and _widget_key(scope):
        bot_id = str(params["bot_id"])
        pending = replace(pending, actor=f"widget:{bot_id}", widget_bot=bot_id)
    writer.submit(pending)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers") or []}


def _query(scope: Scope) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def _widget_key(scope: Scope) -> bool:
    return bool(_headers(scope).get(b"x-parley-widget-key") or _query(scope).get("key"))


async def _key_principal(gateway: Any, scope: Scope) -> Any:
    """The principal of the request's API key, for routes that authenticate without
    ``deps.get_principal`` (the chat routes accept a key or a widget key)."""
    header = _headers(scope).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    secret = token.strip() if scheme.lower() == "bearer" else _query(scope).get("token")
    if not secret:
        return None
    try:
        return await gateway.lookups.principal(secret)
    except ParleyError:
        return None

"""Caches for the hot path: API key → principal, model id or alias → model.

A prediction should not pay for database round trips it made a second ago. Entries stay until
a change invalidates them (or ``MAX_AGE`` passes): this process forgets a tenant's entries at
once when it revokes a key, moves or deletes an alias, or deletes a model; every change is also
appended to the look-up change log (``core.lookup_changes``) in the same transaction. Other
gateway processes learn of it in one of two ways:

- without Redis, a thread here polls the change log every ``ttl`` seconds — a change is seen
  within ``ttl``, at the cost of one small query per ``ttl`` instead of one per request; if
  the poll fails, the caches are emptied and not filled until it succeeds again;
- with Redis (``redis`` given), a thread here subscribes to the changes published on
  ``core.lookup_changes.CHANNEL`` after each commit (by gateways and workers) and forgets the
  tenant's entries as each arrives — at once, with no polling. While the subscription is down
  (Redis away) the caches are emptied and not filled (look-ups go to the database, predictions
  keep working); once it is back everything cached is forgotten once, since messages may
  have been lost meanwhile.

Only succeeded models and valid keys are cached; failures never are. ``ttl`` 0 turns the
caches off in both modes.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, select

from core import lookup_changes
from core.backends import builtin_models
from core.db import session_scope
from core.errors import NotFound
from core.logging import log_event
from core.redis import sync_client
from core.remote_models import BACKEND as REMOTE_BACKEND
from core.settings import RedisSettings
from core.tables import Alias
from core.tenants import Principal, authenticate, hash_key
from training import registry

BUILTIN = "builtin"
MODEL_PREFIX = "mdl_"
MAX_AGE = 600.0
"""Seconds an entry lives at most, whatever the change log says (a safety net)."""
MAX_ENTRIES = 100_000
"""Entries per table at most; the oldest go first."""
RESUBSCRIBE_S = 1.0
"""Seconds between attempts to subscribe again while Redis is away."""

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class ModelInfo:
    """What serving needs of a model record."""

    id: str
    tenant_id: str
    status: str
    task: str
    backend: str
    artifact_key: str
    artifact_sha256: str
    out_of_scope_threshold: float | None = None
    remote: dict[str, Any] | None = None  # a remote model's params (core.remote_models)


class _Table(Generic[K, V]):
    """A bounded map of ``key -> (expiry, tenant_id, value)`` with per-tenant invalidation.

    ``generation`` grows with every invalidation: a value read from the database before an
    invalidation is not stored after it (it may predate the change).
    """

    def __init__(self) -> None:
        self._entries: dict[K, tuple[float, str, V]] = {}
        self.generation = 0

    def get(self, key: K, now: float) -> V | None:
        hit = self._entries.get(key)
        return hit[2] if hit is not None and hit[0] > now else None

    def put(self, key: K, tenant_id: str, value: V, generation: int) -> None:
        if generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES and key not in self._entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (time.monotonic() + MAX_AGE, tenant_id, value)

    def forget(self, tenant_id: str | None = None) -> None:
        self.generation += 1
        if tenant_id is None:
            self._entries.clear()
            return
        for key in [k for k, v in self._entries.items() if v[1] == tenant_id]:
            self._entries.pop(key, None)


class Lookups:
    def __init__(self, engine: Engine, *, ttl: float, redis: RedisSettings | None = None) -> None:
        self.engine, self.ttl = engine, ttl
        self.redis = redis if redis is not None and redis.url else None
        self._principals: _Table[str, Principal] = _Table()
        self._models: _Table[tuple[str, str], ModelInfo] = _Table()
        self._aliases: _Table[tuple[str, str], str] = _Table()
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()  # one poll at a time
        self._stop = threading.Event()
        self._last_change: int | None = None  # None: the change log is not being followed
        self._subscribed = False  # with Redis: whether changes are being received
        self._poller: threading.Thread | None = None
        if ttl > 0:
            follow = self._poll_loop if self.redis is None else self._subscribe_loop
            self._poller = threading.Thread(target=follow, name="lookups", daemon=True)
            self._poller.start()

    @property
    def caching(self) -> bool:
        if self.redis is not None:
            return self._subscribed
        return self._last_change is not None

    def _forget_all(self) -> None:
        for table in (self._principals, self._models, self._aliases):
            table.forget()

    def _changed(self, tenant_id: str, kind: str) -> None:
        """Forget what a change of ``kind`` of ``tenant_id`` makes stale (under the lock)."""
        if kind == "keys":
            self._principals.forget(tenant_id)
        else:
            self._models.forget(tenant_id)
            self._aliases.forget(tenant_id)

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    # --- the change log -----------------------------------------------------------------

    def poll(self) -> None:
        """Apply the change log's new rows (the poller thread calls this every ``ttl``)."""
        with self._poll_lock:
            self._poll()

    def _poll(self) -> None:
        try:
            with self.engine.connect() as conn:
                if self._last_change is None:
                    last = lookup_changes.latest(conn)
                    changes = []
                else:
                    last = self._last_change
                    changes = lookup_changes.after(conn, last)
        except Exception as e:  # noqa: BLE001 - the database may be away for a while
            if self._last_change is not None:
                log_event("lookups.poll_failed", error=repr(e))
            with self._lock:
                self._last_change = None
                self._forget_all()
            return
        with self._lock:
            if self._last_change is None:  # (re)starting: nothing cached may be trusted
                self._forget_all()
            for change_id, tenant_id, kind in changes:
                self._changed(tenant_id, kind)
                last = change_id
            self._last_change = last

    def _poll_loop(self) -> None:
        self.poll()
        while not self._stop.wait(self.ttl):
            self.poll()

    # --- the changes published on Redis -------------------------------------------------

    def _subscribe_loop(self) -> None:
        assert self.redis is not None
        lost_logged = False
        while not self._stop.is_set():
            pubsub = sync_client(self.redis).pubsub()
            try:
                pubsub.subscribe(lookup_changes.CHANNEL)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)  # raises once Redis is gone
                    if message is not None:
                        self._received(message)
                        lost_logged = False
            except Exception as e:  # noqa: BLE001 - Redis may be away for a while
                with self._lock:
                    self._subscribed = False
                    self._forget_all()
                if not lost_logged and not self._stop.is_set():
                    log_event("lookups.subscription_lost", error=repr(e))
                    lost_logged = True
            finally:
                pubsub.close()
            self._stop.wait(RESUBSCRIBE_S)

    def _received(self, message: dict[str, object]) -> None:
        with self._lock:
            if message["type"] == "subscribe":  # (re)started: messages may have been lost
                self._forget_all()
                self._subscribed = True
                log_event("lookups.subscribed", channel=lookup_changes.CHANNEL)
                return
            if message["type"] != "message":
                return
            try:
                change = json.loads(message["data"])  # type: ignore[arg-type]
                self._changed(str(change["tenant_id"]), str(change["kind"]))
            except (ValueError, KeyError, TypeError) as e:
                log_event("lookups.bad_message", error=repr(e))
                self._forget_all()

    # --- API keys -----------------------------------------------------------------------

    def _authenticate(self, secret: str | None) -> Principal:
        with session_scope(self.engine) as session:
            return authenticate(session, secret)

    async def principal(self, secret: str | None) -> Principal:
        """The principal of a bearer secret (``Unauthenticated`` if bad or revoked)."""
        if not secret or not self.caching:
            return await run_in_threadpool(self._authenticate, secret)
        key = hash_key(secret)
        hit = self._principals.get(key, time.monotonic())
        if hit is not None:
            return hit
        generation = self._principals.generation
        principal = await run_in_threadpool(self._authenticate, secret)
        with self._lock:
            self._principals.put(key, principal.tenant_id, principal, generation)
        return principal

    def forget_keys(self, tenant_id: str | None = None) -> None:
        """Drop cached keys (of one tenant, or all) — after this process revokes one."""
        with self._lock:
            self._principals.forget(tenant_id)

    # --- models -------------------------------------------------------------------------

    def _alias_target(self, tenant_id: str, name: str) -> str:
        with self.engine.connect() as conn:
            target = conn.execute(
                select(Alias.model_id).where(Alias.tenant_id == tenant_id, Alias.name == name)
            ).scalar()
        if target is None:
            raise NotFound(f"no model or alias named {name!r}")
        return str(target)

    def _resolve(self, tenant_id: str, model_id: str) -> ModelInfo:
        with session_scope(self.engine) as session:
            m = registry.get_model(session, tenant_id, model_id)
            oos = (m.metrics or {}).get("out_of_scope") or {}
            return ModelInfo(
                out_of_scope_threshold=oos.get("threshold") or None,
                id=m.id,
                tenant_id=m.tenant_id,
                status=m.status,
                task=m.task,
                backend=m.backend,
                artifact_key=m.artifact_key or "",
                artifact_sha256=m.artifact_sha256 or "",
                remote=dict(m.params or {}) if m.backend == REMOTE_BACKEND else None,
            )

    async def model(self, tenant_id: str, name: str) -> ModelInfo:
        """A model by id or alias, for the calling tenant (``NotFound`` otherwise), or a
        built-in model by name."""
        if name in builtin_models:
            builtin = builtin_models.get(name)
            return ModelInfo(
                id=name,
                tenant_id=tenant_id,
                status="succeeded",
                task=builtin.task,
                backend=BUILTIN,
                artifact_key="",
                artifact_sha256="",
            )
        now = time.monotonic()
        caching = self.caching
        model_id = name
        if not name.startswith(MODEL_PREFIX):
            target = self._aliases.get((tenant_id, name), now) if caching else None
            if target is not None:
                model_id = target
            else:
                generation = self._aliases.generation
                model_id = await run_in_threadpool(self._alias_target, tenant_id, name)
                if caching:
                    with self._lock:
                        self._aliases.put((tenant_id, name), tenant_id, model_id, generation)
        hit = self._models.get((tenant_id, model_id), now) if caching else None
        if hit is not None:
            return hit
        generation = self._models.generation
        info = await run_in_threadpool(self._resolve, tenant_id, model_id)
        if info.status == "succeeded" and caching:
            with self._lock:
                self._models.put((tenant_id, model_id), tenant_id, info, generation)
        return info

    def forget_models(self, tenant_id: str) -> None:
        """Drop a tenant's cached models and aliases — after this process changes one."""
        with self._lock:
            self._models.forget(tenant_id)
            self._aliases.forget(tenant_id)

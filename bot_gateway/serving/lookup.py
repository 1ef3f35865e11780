"""Short-lived caches for the hot path: API key → principal, model id or alias → model.

A prediction should not pay for database round trips it made a second ago. Entries live
``ttl`` seconds; this process drops them at once when it revokes a key, moves or deletes an
alias, or deletes a model, and other gateway processes see such changes within ``ttl``.
Only succeeded models are cached (their artifacts never change); failures are never cached.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from core.db import session_scope
from core.tenants import Principal, authenticate, hash_key
from training import registry
from training.backends import builtin_models

BUILTIN = "builtin"


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


class Lookups:
    def __init__(self, engine: Engine, *, ttl: float) -> None:
        self.engine, self.ttl = engine, ttl
        self._principals: dict[str, tuple[float, Principal]] = {}
        self._models: dict[tuple[str, str], tuple[float, ModelInfo]] = {}
        self._lock = threading.Lock()

    # --- API keys -----------------------------------------------------------------------

    def _authenticate(self, secret: str | None) -> Principal:
        with session_scope(self.engine) as session:
            return authenticate(session, secret)

    async def principal(self, secret: str | None) -> Principal:
        """The principal of a bearer secret (``Unauthenticated`` if bad or revoked)."""
        if secret and self.ttl > 0:
            key = hash_key(secret)
            hit = self._principals.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            principal = await run_in_threadpool(self._authenticate, secret)
            with self._lock:
                self._principals[key] = (time.monotonic() + self.ttl, principal)
            return principal
        return await run_in_threadpool(self._authenticate, secret)

    def forget_keys(self) -> None:
        with self._lock:
            self._principals.clear()

    # --- models -------------------------------------------------------------------------

    def _resolve(self, tenant_id: str, name: str) -> ModelInfo:
        with session_scope(self.engine) as session:
            m = registry.resolve(session, tenant_id, name)
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
        key = (tenant_id, name)
        hit = self._models.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        info = await run_in_threadpool(self._resolve, tenant_id, name)
        if info.status == "succeeded" and self.ttl > 0:
            with self._lock:
                self._models[key] = (time.monotonic() + self.ttl, info)
        return info

    def forget_models(self, tenant_id: str) -> None:
        with self._lock:
            for key in [k for k in self._models if k[0] == tenant_id]:
                del self._models[key]

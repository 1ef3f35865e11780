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
from sqlalchemy import Engine, select

from core.db import session_scope
from core.errors import NotFound
from core.tables import Alias
from core.tenants import Principal, authenticate, hash_key
from training import registry
from training.backends import builtin_models

BUILTIN = "builtin"
MODEL_PREFIX = "mdl_"
MODEL_TTL = 300.0
"""Seconds a succeeded model's record stays cached (it never changes; deleting the model
through this process forgets it at once, through another gateway within this time)."""


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
        self._aliases: dict[tuple[str, str], tuple[float, str]] = {}
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
            )

    async def model(self, tenant_id: str, name: str) -> ModelInfo:
        """A model by id or alias, for the calling tenant (``NotFound`` otherwise), or a
        built-in model by name.

        An alias is looked up again after ``ttl``; a succeeded model's record (which never
        changes) after ``MODEL_TTL`` — this process forgets both at once on changes it makes.
        """
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
        model_id = name
        if not name.startswith(MODEL_PREFIX):
            hit_alias = self._aliases.get((tenant_id, name))
            if hit_alias is not None and hit_alias[0] > now:
                model_id = hit_alias[1]
            else:
                model_id = await run_in_threadpool(self._alias_target, tenant_id, name)
                if self.ttl > 0:
                    with self._lock:
                        self._aliases[(tenant_id, name)] = (now + self.ttl, model_id)
        hit = self._models.get((tenant_id, model_id))
        if hit is not None and hit[0] > now:
            return hit[1]
        info = await run_in_threadpool(self._resolve, tenant_id, model_id)
        if info.status == "succeeded" and self.ttl > 0:
            with self._lock:
                self._models[(tenant_id, model_id)] = (now + max(self.ttl, MODEL_TTL), info)
        return info

    def forget_models(self, tenant_id: str) -> None:
        with self._lock:
            for table in (self._models, self._aliases):
                for key in [k for k in table if k[0] == tenant_id]:
                    del table[key]

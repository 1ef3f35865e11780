"""Remote models: registering a tenant's own Open Inference Protocol (KServe V2) model, and
calling it for predictions (``core.remote_models`` is the protocol).

Calls never touch the micro-batcher or block the event loop: one ``httpx.AsyncClient`` per
gateway process, through ``core.outbound.OutboundTransport`` (private addresses refused unless
``PARLEY_OUTBOUND__ALLOW_HOSTS`` allows them; no proxies from the environment, no redirects).
Each call has ``PARLEY_REMOTE_MODELS__TIMEOUT_S`` in all, waiting for a slot included: a tenant
has at most ``PARLEY_REMOTE_MODELS__PER_TENANT_CONCURRENCY`` calls in flight in a process, so
its slow server holds its own calls only. A failure is ``RemoteModelError`` (502), logged
(``remote_model.failed``) and counted (``remote_model.failed``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
from fastapi.concurrency import run_in_threadpool

from bot_gateway.schemas import ModelPublic, RemoteModelCreate
from core.db import session_scope
from core.errors import RemoteModelError
from core.logging import log_event
from core.lru import Lru
from core.metrics import counters
from core.outbound import OutboundGuard, OutboundRefused, OutboundTransport
from core.remote_models import (
    RemoteModel,
    RemoteParams,
    check_headers,
    describe,
    encode,
    image_request,
    infer,
    normalise_url,
    plan,
    read_scores,
    task_of,
    text_request,
)
from core.secrets import SecretBox, decrypt_value, encrypt_value
from core.settings import Settings
from core.tenants import Principal
from training import registry

__all__ = ["RemoteModels", "register"]

MODELS_KEPT = 1000  # remote models a process keeps ready to call (header values decrypted)


class RemoteModels:
    """This gateway process's calls to remote model servers (see the module docstring);
    ``transport`` replaces the network under the outbound guard (tests)."""

    def __init__(
        self,
        settings: Settings,
        secrets: SecretBox,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = settings.remote_models.timeout_s
        self.per_tenant = settings.remote_models.per_tenant_concurrency
        self.guard = OutboundGuard.from_settings(settings)
        self.secrets = secrets
        self.client = httpx.AsyncClient(
            transport=OutboundTransport(self.guard, transport),
            follow_redirects=False,
            trust_env=False,
            timeout=self.timeout,
        )
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._models: Lru[tuple[str, str, str], RemoteModel] = Lru(MODELS_KEPT)

    async def aclose(self) -> None:
        await self.client.aclose()

    def model(self, model_id: str, task: str, stored: dict[str, Any]) -> RemoteModel:
        """A stored remote model ready to call (its header values decrypted): made once per
        stored version and kept (``_models``), not validated and decrypted on every call."""
        key = (model_id, task, json.dumps(stored, sort_keys=True))
        kept = self._models.get(key)
        if kept is None:
            kept = self._make(model_id, task, stored)
            self._models.put(key, kept)
        return kept

    def _make(self, model_id: str, task: str, stored: dict[str, Any]) -> RemoteModel:
        params = RemoteParams.model_validate(stored)
        return RemoteModel(
            id=model_id,
            task=task,
            url=params.url,
            model_name=params.model_name,
            input=params.input,
            output=params.output,
            labels=tuple(params.labels) if params.labels is not None else None,
            headers={k: decrypt_value(self.secrets, v) for k, v in params.headers.items()},
        )

    async def classify_texts(
        self, tenant_id: str, model: RemoteModel, texts: Sequence[str]
    ) -> tuple[list[str], np.ndarray]:
        """Labels and one row of probabilities per text."""
        answer = await self._call(tenant_id, model, encode(text_request(model, texts)))
        return self._read(model, answer, len(texts))

    async def classify_images(
        self, tenant_id: str, model: RemoteModel, images: Sequence[Any]
    ) -> tuple[list[str], np.ndarray]:
        """Labels and one row of probabilities per image (PIL, RGB)."""
        content = await run_in_threadpool(lambda: encode(image_request(model, images)))
        answer = await self._call(tenant_id, model, content)
        return self._read(model, answer, len(images))

    def _read(self, model: RemoteModel, answer: Any, count: int) -> tuple[list[str], np.ndarray]:
        try:
            return read_scores(model, answer, count)
        except RemoteModelError as e:
            _failed(model, e)
            raise

    async def _call(self, tenant_id: str, model: RemoteModel, content: bytes) -> Any:
        slot = self._slots.setdefault(tenant_id, asyncio.Semaphore(self.per_tenant))
        waiting = True
        try:
            async with asyncio.timeout(self.timeout):
                async with slot:
                    waiting = False
                    return await infer(self.client, model, content, timeout=self.timeout)
        except TimeoutError:
            what = f"did not answer within {self.timeout:g} s"
            if waiting:
                what = (
                    f"was not called: this tenant's {self.per_tenant} calls to remote models "
                    f"in flight did not finish within {self.timeout:g} s"
                )
            error = model.failure(what)
            _failed(model, error)
            raise error from None
        except RemoteModelError as e:
            _failed(model, e)
            raise


def _failed(model: RemoteModel, error: RemoteModelError) -> None:
    log_event("remote_model.failed", level=logging.WARNING, model=model.id, error=error.message)
    counters.incr("remote_model.failed")


async def register(
    remote: RemoteModels, engine: Any, principal: Principal, body: RemoteModelCreate
) -> ModelPublic:
    """Check the remote model (ready, metadata, what to send and read) and store it as a
    succeeded model of the tenant."""
    task = task_of(body.task)
    url = normalise_url(body.url)
    headers = check_headers(body.headers)
    refusal = remote.guard.literal_refusal(url)
    if refusal is not None:
        raise OutboundRefused(f"url refused: {refusal}", url=url, reason=refusal)
    metadata = await describe(
        remote.client, url=url, model_name=body.model_name, headers=headers, timeout=remote.timeout
    )
    spec, output, labels = plan(task, metadata, body.labels)
    params = RemoteParams(
        url=url,
        model_name=body.model_name,
        headers={
            k: encrypt_value(remote.secrets, v, where=f"headers.{k}") for k, v in headers.items()
        },
        input=spec,
        output=output,
        labels=labels,
    ).model_dump(exclude_none=True)

    def store() -> ModelPublic:
        with session_scope(engine) as session:
            model = registry.create_remote_model(
                session,
                tenant_id=principal.tenant_id,
                name=body.name,
                task=task,
                params=params,
                labels=labels,
            )
            session.commit()
            return ModelPublic.of(model, None)

    created = await run_in_threadpool(store)
    log_event("remote_model.registered", model=created.id, tenant=principal.tenant_id, url=url)
    return created

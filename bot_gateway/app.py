"""``create_app()``: the FastAPI application and its lifespan (schema, queue, serving)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from starlette.types import ASGIApp

from bot_gateway.api import (
    agents,
    aliases,
    analytics,
    bots,
    channels,
    chat,
    conversations,
    datasets,
    improve,
    models,
    predict,
    system,
    tenants,
)
from bot_gateway.api import audit as audit_api
from bot_gateway.api import auth as auth_api
from bot_gateway.api import model_cards as model_cards_api
from bot_gateway.api import model_exports as model_exports_api
from bot_gateway.api import remote_models as remote_models_api
from bot_gateway.api import studio as studio_api
from bot_gateway.api import usage as usage_api
from bot_gateway.api import users as users_api
from bot_gateway.audit import AuditMiddleware, AuditWriter
from bot_gateway.body_limits import BodyLimits
from bot_gateway.conversations.actions import Actions
from bot_gateway.conversations.runtime import ConversationRuntime
from bot_gateway.conversations.sharing import sharing_for
from bot_gateway.conversations.understanding import Parse, Seen
from bot_gateway.deps import Gateway
from bot_gateway.errors import install_error_handlers
from bot_gateway.json_depth import JsonDepthLimit
from bot_gateway.metering import MeteredTrackerStore
from bot_gateway.nul_refusal import NulRefusal
from bot_gateway.openapi import install_openapi
from bot_gateway.ratelimit import Admission, RateLimitHeaders
from bot_gateway.schemas import ParseRequest, PredictRequest
from bot_gateway.services import predictions
from bot_gateway.services.datasets import import_in_background
from bot_gateway.services.exports import ModelExports
from bot_gateway.services.remote_models import RemoteModels
from bot_gateway.services.uploads import read_upload_sync
from bot_gateway.serving.batcher import MicroBatcher
from bot_gateway.serving.cache import ModelCache
from bot_gateway.serving.lookup import Lookups
from core import lookup_changes
from core.backends import BackendContext, backends, set_torch_threads
from core.counters import counter_stores
from core.db import ensure_schema, get_engine, session_scope
from core.logging import configure_logging, log_event
from core.outbound import OutboundGuard, OutboundTransport
from core.registry import load_entry_points
from core.secrets import open_box
from core.settings import Settings, get_settings
from core.shared_models import shared_models
from core.storage import store_for
from core.tables import Dataset
from core.tenants import Principal
from core.usage import UsageRecorder
from training.queue import train_queues

API_PREFIX = "/v1"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the platform tells it)."""
    if hasattr(os, "sched_getaffinity"):  # Linux; not macOS
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def build_gateway(settings: Settings) -> Gateway:
    """Connect to the database and storage, and build the serving machinery."""
    load_entry_points()
    engine = get_engine(settings.database_url, echo=settings.db.echo)
    ensure_schema(settings.database_url)
    lookup_changes.publish_on(engine, settings.redis)  # with Redis: look-up invalidation
    secret_box = open_box(settings, engine)  # refuses a missing or wrong PARLEY_SECRET_KEY
    store = store_for(settings)
    inference_threads = settings.serving.inference_threads or max(
        1, usable_cpus() // settings.serving.processes
    )
    context = BackendContext(
        cache_dir=settings.cache_dir,
        device=settings.serving.device,
        threads=settings.serving.torch_threads,
        ocr_threads=settings.serving.ocr_threads or inference_threads,
    )
    queue = train_queues.get(settings.queue.backend).from_settings(settings, engine)
    return Gateway(
        settings=settings,
        engine=engine,
        store=store,
        queue=queue,
        cache=ModelCache(
            store,
            context,
            settings.serving.model_cache_size,
            budget_bytes=settings.serving.model_cache_bytes,
            shared=shared_models,
        ),
        batcher=MicroBatcher(
            max_batch=settings.serving.max_batch,
            wait_ms=settings.serving.batch_wait_ms,
            threads=inference_threads,
        ),
        imports=ThreadPoolExecutor(max_workers=1, thread_name_prefix="import"),
        lookups=Lookups(engine, ttl=settings.serving.lookup_ttl, redis=settings.redis),
        counter_store=counter_stores.get(settings.counter_backend)(settings),
        audit=AuditWriter(engine, retention_days=settings.audit.retention_days),
        secrets=secret_box,
    )


def conversation_runtime(gateway: Gateway, client: httpx.AsyncClient) -> ConversationRuntime:
    """The conversation runtime over this gateway's NLU and vision models."""

    async def parse(principal: Principal, model_id: str, text: str) -> Parse:
        body = ParseRequest(text=text)
        parsed = await predictions.parse_text(gateway, principal, model_id, body)
        return Parse.of(parsed.model_dump())

    async def see(principal: Principal, model_id: str, data: bytes) -> Seen:
        result = await predictions.predict_images(
            gateway, principal, model_id, PredictRequest(), [("image", data)]
        )
        return Seen.of(result.model_dump(exclude_none=True))

    async def read_upload(
        tenant_id: str, bot_id: str, upload_id: str
    ) -> tuple[bytes, dict[str, Any]]:
        return await run_in_threadpool(read_upload_sync, gateway, tenant_id, bot_id, upload_id)

    return ConversationRuntime(
        store=MeteredTrackerStore(gateway.engine, gateway.usage),
        actions=Actions(client, secrets=gateway.secrets),
        parse=parse,
        see=see,
        read_upload=read_upload,
        sharing=sharing_for(gateway.settings),  # Redis locks and fan-out when it is set
    )


def _resume_imports(gateway: Gateway) -> None:
    """Datasets left ``processing`` by a restart are imported again from their stored file."""
    with session_scope(gateway.engine) as session:
        pending = list(session.scalars(select(Dataset.id).where(Dataset.status == "processing")))
    for dataset_id in pending:
        log_event("dataset.import_resumed", dataset=dataset_id)
        gateway.imports.submit(import_in_background, gateway, dataset_id)


BACKGROUND_STOP_S = 5.0


async def _stop_background(gateway: Gateway) -> None:
    """Cancel the channel turns still running and wait (at most ``BACKGROUND_STOP_S``) until
    they have let go of their conversations' locks, which need the Redis client still open."""
    tasks = list(gateway.background)
    for task in tasks:
        task.cancel()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=BACKGROUND_STOP_S)
        for task in done:  # retrieved: a turn that failed while stopping is not news
            if not task.cancelled():
                task.exception()
        if pending:
            log_event("gateway.background_left", turns=len(pending))


def create_app(
    settings: Settings | None = None,
    *,
    warm_encoder: bool = True,
    http_transport: httpx.AsyncBaseTransport | None = None,
    mounts: Mapping[str, ASGIApp] | None = None,
) -> FastAPI:
    """The Parley gateway. The train queue's workers start with the app and stop with it.
    ``http_transport`` replaces the network for calls to channel providers (tests); ``mounts``
    are other ASGI apps served beside it, by path (``parley serve`` mounts the demo's orders
    API there)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = build_gateway(settings)
        app.state.gateway = gateway
        gateway.usage = UsageRecorder(gateway.engine)
        gateway.admission = Admission(gateway, gateway.usage)
        actions_client = httpx.AsyncClient(  # HTTP actions, action servers: core.outbound
            transport=OutboundTransport(OutboundGuard.from_settings(settings)),
            follow_redirects=False,
            trust_env=False,
        )
        gateway.conversations = conversation_runtime(gateway, actions_client)
        await gateway.conversations.start()
        gateway.http = httpx.AsyncClient(transport=http_transport, timeout=10.0)
        gateway.tenant_http = httpx.AsyncClient(  # providers installed by tenants (Chatwoot)
            transport=OutboundTransport(OutboundGuard.from_settings(settings), http_transport),
            timeout=10.0,
            trust_env=False,
        )
        gateway.remote = RemoteModels(settings, gateway.secrets)  # tenants' model servers
        gateway.exports = ModelExports(settings, gateway.store)  # GET /v1/models/{id}/export
        if warm_encoder:  # load shared weights now, not on the first prediction
            for _, backend_cls in backends.items():
                warm_up = getattr(backend_cls, "warm_up", None)
                if warm_up is not None:
                    warm_up(gateway.cache.context)
        # torch only where something loaded it (ONNX serving never does; the model cache sets
        # it for models loaded later)
        set_torch_threads(settings.serving.torch_threads, if_imported=True)
        gateway.queue.start()
        gateway.usage.start()
        gateway.audit.start()
        _resume_imports(gateway)
        log_event("gateway.started", db=gateway.engine.dialect.name)
        try:
            yield
        finally:
            gateway.queue.stop()
            gateway.usage.stop()
            gateway.audit.stop()
            gateway.batcher.stop()
            gateway.lookups.stop()
            gateway.imports.shutdown(wait=False, cancel_futures=True)
            await _stop_background(gateway)  # their locks released before Redis closes
            await gateway.conversations.stop()
            await actions_client.aclose()
            await gateway.http.aclose()
            await gateway.tenant_http.aclose()
            await gateway.remote.aclose()

    app = FastAPI(
        title="Parley",
        version="0.1.0",
        description="Datasets, training, model registry, prediction and bots for Parley tenants.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(JsonDepthLimit, max_depth=settings.limits.max_document_depth)
    app.add_middleware(NulRefusal)  # a NUL in the path or query: 422, not PostgreSQL's 500
    app.add_middleware(RateLimitHeaders)  # RateLimit-* on every answer of a limited route
    # bodies capped by route class (413) and unread content types refused (415) as they
    # arrive, before anything reads or authenticates; inside the audit log, which records them
    app.add_middleware(BodyLimits, limits=settings.limits)
    app.add_middleware(AuditMiddleware)  # after the answer: every write to /v1 (bot_gateway.audit)
    # first: Rasa clients' hottest route is matched before the ~200 others (6 % of a request's
    # CPU went to matching it last); no other route's path can match /model/parse
    app.include_router(predict.rasa_router)
    for module in (
        tenants,
        datasets,
        models,
        predict,
        aliases,
        bots,
        channels,
        conversations,
        chat,
        agents,
        system,
        analytics,
        improve,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(remote_models_api.router, prefix=API_PREFIX)
    app.include_router(model_exports_api.router, prefix=API_PREFIX)
    app.include_router(model_cards_api.router, prefix=API_PREFIX)
    app.include_router(audit_api.router, prefix=API_PREFIX)
    app.include_router(usage_api.router, prefix=API_PREFIX)
    app.include_router(auth_api.router, prefix=API_PREFIX)  # the Studio's sign-in
    app.include_router(users_api.router, prefix=API_PREFIX)
    app.include_router(agents.pages)
    app.include_router(studio_api.pages)  # / and /studio: Parley Studio
    app.include_router(channels.webhook_router)
    app.include_router(chat.public_router)
    for path, mounted in (mounts or {}).items():
        app.mount(path, mounted)
    app.include_router(predict.ocr_router, prefix=API_PREFIX)
    install_openapi(app)  # error answers, hand-read bodies, operation ids (bot_gateway.openapi)
    return app

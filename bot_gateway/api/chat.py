"""Talking to bots: the Rasa-compatible REST channel, the web chat websocket and its image
uploads, the widget's script and the demo page.

Who may chat: a tenant API key with the ``predict`` scope (``Authorization: Bearer`` or
``?token=``), or the bot's public widget key (``?key=wk_...``), which reaches that bot only,
only from the bot's ``allowed_origins`` (a websocket without an ``Origin`` is refused when
they are set), and only for the web chat session it opened: the socket's welcome frame hands
the widget a session token for a new conversation, and every later use of the widget key
(resuming over the socket, the REST channel, uploads) presents it as ``?session_token=`` or
``X-Parley-Session-Token`` (``bot_gateway.conversations.widget_sessions``). Without it the
REST channel and uploads answer ``401``; with a token of another conversation or sender,
``403``; an upload of another conversation is ``404``. The websocket protocol is in
``connectors/webchat/protocol.md``.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from starlette.requests import HTTPConnection
from starlette.types import Message

from bot_gateway import auth_failures
from bot_gateway.conversations import bots as bot_service
from bot_gateway.conversations import widget_sessions
from bot_gateway.conversations.runtime import Inbound, TurnOutcome, message_frame
from bot_gateway.conversations.widget_sessions import WidgetSession
from bot_gateway.deps import Gateway, GatewayDep, bearer
from bot_gateway.errors import close_code_for
from bot_gateway.requests import form_file, read_form, read_limited
from bot_gateway.schemas import RestMessage, UploadPublic
from bot_gateway.services.uploads import read_upload_sync, store_upload
from core.db import session_scope
from core.documents import check_json_depth
from core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    LimitExceeded,
    NotFound,
    ParleyError,
    Unauthenticated,
)
from core.logging import log_event
from core.tables import Bot, Tenant, Upload

router = APIRouter(tags=["chat"])
public_router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parents[2] / "connectors" / "webchat" / "static"
SESSION_ID = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")
MAX_FRAME_CHARS = 16 * 1024
MAX_FRAME_DEPTH = 16  # frames are flat objects; deeper is refused before parsing
MAX_TEXT_CHARS = 4000
HISTORY = 50
BOT_REFRESH_S = 2.0  # an open socket re-reads its bot (version, enabled) at most this often
CHANNEL_WEBCHAT, CHANNEL_REST = "webchat", "rest"
SESSION_TOKEN_HEADER = "x-parley-session-token"


# --- who may chat -----------------------------------------------------------------------------


def origin_allowed(bot: Bot, origin: str | None, *, required: bool = False) -> bool:
    """A browser page may use the widget key only from the bot's ``allowed_origins``; a
    caller without an ``Origin`` (not a browser) is refused only where it is ``required`` (a
    websocket) and the bot names its origins (other than ``*``)."""
    allowed = [o.rstrip("/") for o in bot.definition.get("allowed_origins") or []]
    if origin is None:
        return not (required and allowed and "*" not in allowed)
    return "*" in allowed or origin.rstrip("/") in allowed


@dataclass(frozen=True)
class Caller:
    """Who may chat with ``bot``: with its public widget key (``widget``: then only for the
    web chat session it opened), or with a tenant API key."""

    bot: Bot
    widget: bool


async def authorize(
    gateway: Gateway,
    connection: HTTPConnection,
    bot_id: str,
    *,
    key: str | None,
    token: str | None,
    origin: str | None,
    socket: bool = False,
) -> Caller:
    """The bot, if this caller may chat with it (see the module docstring); a wrong key
    counts as a failed authentication of the caller's address."""
    with auth_failures.guarded(gateway, connection):
        if key:

            def by_key() -> Bot | None:
                with session_scope(gateway.engine) as session:
                    bot = bot_service.bot_by_widget_key(session, key)
                    if bot is not None:
                        bot_service.refresh_status(session, bot)
                    return bot

            found = await run_in_threadpool(by_key)
            if found is None or found.id != bot_id:
                raise Unauthenticated(
                    "invalid widget key for this bot; copy it from GET /v1/bots/{id}"
                )
            if not origin_allowed(found, origin, required=socket):
                log_event("webchat.origin_refused", bot=bot_id, origin=origin)
                raise Forbidden(
                    f"origin {origin or '(none)'} may not use this bot's widget; add it to the "
                    "bot's `allowed_origins`"
                )
            return Caller(found, widget=True)
        principal = await gateway.lookups.principal(token)
    principal.require("predict")

    def by_id() -> Bot:
        with session_scope(gateway.engine) as session:
            return bot_service.get_bot(session, principal.tenant_id, bot_id)

    return Caller(await run_in_threadpool(by_id), widget=False)


async def authorize_request(gateway: Gateway, bot_id: str, request: Request) -> Caller:
    """``authorize`` with the request's widget key (``?key=`` or ``X-Parley-Widget-Key``), API
    key (``Authorization: Bearer`` or ``?token=``) and ``Origin``; then the tenant's rate
    limits and quotas (``bot_gateway.ratelimit``)."""
    caller = await authorize(
        gateway,
        request,
        bot_id,
        key=request.query_params.get("key") or request.headers.get("x-parley-widget-key"),
        token=bearer(request) or request.query_params.get("token"),
        origin=request.headers.get("origin"),
    )
    await gateway.admission.admit_tenant(request, caller.bot.tenant_id)
    return caller


async def widget_session(gateway: Gateway, bot: Bot, connection: HTTPConnection) -> WidgetSession:
    """The web chat session whose token the caller presents (``?session_token=`` or
    ``X-Parley-Session-Token``)."""
    token = connection.query_params.get("session_token") or connection.headers.get(
        SESSION_TOKEN_HEADER
    )
    if not token:
        raise Unauthenticated(
            "the widget key acts only for its web chat session: send the session_token of the "
            "web chat socket's welcome frame (?session_token= or X-Parley-Session-Token)"
        )
    found = await run_in_threadpool(widget_sessions.session_of, gateway.engine, bot.id, token)
    if found is None:
        raise Forbidden(
            "this session token is not one of this bot's web chat sessions; open the web chat "
            "socket for a new one"
        )
    return found


def _cors(response: Response, request: Request, bot: Bot) -> None:
    origin = request.headers.get("origin")
    if origin and origin_allowed(bot, origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"


# --- REST channel -----------------------------------------------------------------------------


def rest_messages(recipient: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outbound messages in Rasa's REST channel shape (quick replies are buttons there)."""
    out = []
    for message in messages:
        item: dict[str, Any] = {"recipient_id": recipient, **message}
        if "quick_replies" in item:
            item["buttons"] = item.get("buttons", []) + item.pop("quick_replies")
        out.append(item)
    return out


@router.post("/bots/{bot_id}/webhooks/rest")
async def rest_webhook(
    bot_id: str, body: RestMessage, request: Request, gateway: GatewayDep
) -> list[dict[str, Any]]:
    """Rasa's REST channel: ``{"sender", "message"}`` (optionally ``attachments``: upload ids)
    → ``[{"recipient_id", "text", "buttons", "image", ...}]``."""
    caller = await authorize_request(gateway, bot_id, request)
    channel, uploads = CHANNEL_REST, tuple(body.attachments)
    if caller.widget:  # the widget's own conversation, as its sender, with its own images
        session = await widget_session(gateway, caller.bot, request)
        if session.sender_id != body.sender:
            raise Forbidden(
                "this session token belongs to another sender; send the session_id of its "
                "welcome frame as `sender`"
            )
        await run_in_threadpool(
            widget_sessions.check_uploads, gateway.engine, session.conversation_id, uploads
        )
        channel = session.channel
    outcome = await _converse(
        gateway,
        caller.bot,
        channel,
        Inbound(sender_id=body.sender, text=body.message, uploads=uploads),
    )
    return rest_messages(body.sender, outcome.messages)


async def _converse(gateway: Gateway, bot: Bot, channel: str, message: Inbound) -> TurnOutcome:
    if len(message.text) > MAX_TEXT_CHARS:
        raise InvalidInput(
            f"the message has {len(message.text)} characters; the limit is {MAX_TEXT_CHARS}"
        )
    if not message.text.strip() and not message.uploads and not message.payload:
        raise InvalidInput("the message is empty; send text, a payload or an image")
    outcome = await gateway.conversations.handle(bot_service.bot_info(bot), channel, message)
    hub = gateway.conversations.hub
    for item in outcome.messages:
        hub.said(outcome.conversation_id, item)
    return outcome


# --- uploads ----------------------------------------------------------------------------------


@router.post("/bots/{bot_id}/uploads", status_code=201, response_model=UploadPublic)
async def upload_image(
    bot_id: str, request: Request, response: Response, gateway: GatewayDep
) -> UploadPublic:
    """An image for a conversation (multipart ``file``); send its ``upload_id`` in a message.
    With the widget key it belongs to the session's conversation, which alone can read it."""
    caller = await authorize_request(gateway, bot_id, request)
    _cors(response, request, caller.bot)
    conversation_id = None
    if caller.widget:
        conversation_id = (await widget_session(gateway, caller.bot, request)).conversation_id
    limit = gateway.settings.limits.max_image_bytes
    form = await read_form(request, limit=limit, max_fields=5, setting="max_image_bytes")
    upload = form_file(form, "file", "the image")
    data = await read_limited(upload, limit, setting="max_image_bytes")
    return await store_upload(
        gateway, caller.bot, data, upload.filename or "image", conversation_id=conversation_id
    )


@public_router.get("/files/{upload_id}/{token}")
async def public_file(upload_id: str, token: str, gateway: GatewayDep) -> Response:
    """An image an agent sent, for the channel's provider to fetch (the token is the key)."""

    def load() -> tuple[bytes, str]:
        with session_scope(gateway.engine) as session:
            row = session.get(Upload, upload_id)
            if (
                row is None
                or not row.public_token
                or not secrets.compare_digest(row.public_token, token)
            ):
                raise NotFound("no such file")
            key, media_type = row.blob_key, row.media_type
        return gateway.store.get_bytes(key), media_type

    data, media_type = await run_in_threadpool(load)
    return Response(data, media_type=media_type, headers={"Cache-Control": "private"})


@router.get("/bots/{bot_id}/uploads/{upload_id}")
async def get_upload(
    bot_id: str, upload_id: str, request: Request, gateway: GatewayDep
) -> Response:
    """An image sent to the bot; with the widget key, only one of the session's own."""
    caller = await authorize_request(gateway, bot_id, request)
    bot, conversation_id = caller.bot, None
    if caller.widget:
        conversation_id = (await widget_session(gateway, bot, request)).conversation_id
    data, public = await run_in_threadpool(
        read_upload_sync, gateway, bot.tenant_id, bot.id, upload_id, conversation_id=conversation_id
    )
    response = Response(
        data, media_type=public["media_type"], headers={"Cache-Control": "private, max-age=3600"}
    )
    _cors(response, request, bot)
    return response


# --- web chat websocket ----------------------------------------------------------------------


def history_item(e: dict[str, Any]) -> dict[str, Any]:
    kind = e.get("event")
    if kind == "user":
        message: dict[str, Any] = {}
        if e.get("text"):
            message["text"] = e["text"]
        if e.get("attachments"):
            message["attachments"] = [
                {"upload_id": a.get("upload_id"), "url": a.get("url")} for a in e["attachments"]
            ]
        return {"from": "user", "message": message, "timestamp": e.get("timestamp")}
    message = {k: v for k, v in {"text": e.get("text"), **(e.get("data") or {})}.items() if v}
    return {"from": kind, "message": message, "timestamp": e.get("timestamp")}


class _Frame(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def frame_text(message: Message) -> str:
    """The text of a websocket message; a binary frame must hold UTF-8 JSON."""
    if message.get("text") is not None:
        return str(message["text"])
    try:
        return bytes(message.get("bytes") or b"").decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Frame("invalid_frame", "frames are JSON text in UTF-8") from e


def read_frame(text: str) -> dict[str, Any]:
    if len(text) > MAX_FRAME_CHARS:
        raise _Frame("frame_too_large", f"frames are at most {MAX_FRAME_CHARS} characters")
    try:
        check_json_depth(text, MAX_FRAME_DEPTH, what="the frame")
        frame = json.loads(text)
    except LimitExceeded as e:  # before json.loads recurses into it
        message = f"frames are JSON objects nested at most {MAX_FRAME_DEPTH} levels deep"
        raise _Frame("invalid_frame", message) from e
    except json.JSONDecodeError as e:
        raise _Frame("invalid_frame", f"frames are JSON objects: {e.msg}") from e
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise _Frame("invalid_frame", 'a frame is a JSON object with a "type"')
    return frame


def inbound_of(frame: dict[str, Any], sender_id: str) -> Inbound:
    text = frame.get("text") or ""
    payload = frame.get("payload")
    attachments = frame.get("attachments") or []
    if not isinstance(text, str) or (payload is not None and not isinstance(payload, str)):
        raise _Frame("invalid_frame", '"text" and "payload" are strings')
    if not isinstance(attachments, list) or len(attachments) > 4:
        raise _Frame("invalid_frame", '"attachments" is a list of at most 4 {"upload_id"}')
    uploads = []
    for item in attachments:
        if not isinstance(item, dict) or not isinstance(item.get("upload_id"), str):
            raise _Frame("invalid_frame", 'each attachment is {"upload_id": "up_..."}')
        uploads.append(item["upload_id"])
    client_id = frame.get("client_id")
    return Inbound(
        sender_id=sender_id,
        text=text,
        payload=payload,
        uploads=tuple(uploads),
        message_id=str(client_id)[:64] if client_id is not None else None,
    )


@router.websocket("/bots/{bot_id}/ws")
async def webchat(websocket: WebSocket, bot_id: str) -> None:
    """The web chat socket (protocol: ``connectors/webchat/protocol.md``)."""
    gateway: Gateway = websocket.app.state.gateway
    params = websocket.query_params
    runtime = gateway.conversations
    await websocket.accept()
    try:
        caller = await authorize(
            gateway,
            websocket,
            bot_id,
            key=params.get("key"),
            token=params.get("token") or bearer(websocket),  # type: ignore[arg-type]
            origin=websocket.headers.get("origin"),
            socket=True,
        )
        bot = caller.bot
        if not bot.enabled:
            raise NotFound(f"bot {bot.id} is disabled; enable it with PATCH /v1/bots/{bot.id}")
        session_id = params.get("session") or ""
        if not SESSION_ID.match(session_id):
            session_id = secrets.token_urlsafe(16)
        record, _ = await runtime.store.open(bot.tenant_id, bot.id, CHANNEL_WEBCHAT, session_id)
        issued = None
        if caller.widget:
            held = await run_in_threadpool(
                widget_sessions.session_of, gateway.engine, bot.id, params.get("session_token")
            )
            if held is None or held.conversation_id != record.id:
                if not record.is_new:  # not this caller's: a conversation of its own instead
                    log_event("webchat.session_refused", bot=bot.id, conversation=record.id)
                    session_id = secrets.token_urlsafe(16)
                    record, _ = await runtime.store.open(
                        bot.tenant_id, bot.id, CHANNEL_WEBCHAT, session_id
                    )
                issued = await run_in_threadpool(widget_sessions.issue, gateway.engine, record.id)
                if issued is None:
                    raise Conflict("this web chat session was just opened elsewhere; reconnect")
    except ParleyError as e:
        await websocket.send_json({"type": "error", "error": e.code, "message": e.message})
        await websocket.close(code=close_code_for(e), reason=e.code)
        return
    history = await runtime.store.transcript(record.id, HISTORY)
    queue = runtime.hub.subscribe(record.id)
    welcome: dict[str, Any] = {
        "type": "welcome",
        "conversation_id": record.id,
        "session_id": session_id,
        "status": record.status,
        "history": [history_item(e) for e in history],
    }
    if issued is not None:  # keep it to resume this conversation (and for uploads)
        welcome["session_token"] = issued
    await websocket.send_json(welcome)
    writer = asyncio.create_task(_forward(websocket, queue))
    own = record.id if caller.widget else None
    try:
        await _read_loop(websocket, gateway, bot, session_id, queue, widget_conversation=own)
    except WebSocketDisconnect:
        pass
    except ParleyError as e:  # the bot was deleted while the socket was open
        await websocket.send_json({"type": "error", "error": e.code, "message": e.message})
        await websocket.close(code=close_code_for(e), reason=e.code)
    finally:
        writer.cancel()
        runtime.hub.unsubscribe(record.id, queue)


async def _forward(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any]]) -> None:
    """Messages published for this conversation by others (another tab, an agent, the API)."""
    while True:
        frame = await queue.get()
        await websocket.send_json(frame)


async def _reload(gateway: Gateway, bot: Bot) -> Bot:
    def load() -> Bot:
        with session_scope(gateway.engine) as session:
            return bot_service.get_bot(session, bot.tenant_id, bot.id)

    return await run_in_threadpool(load)


async def _read_loop(
    websocket: WebSocket,
    gateway: Gateway,
    bot: Bot,
    session_id: str,
    queue: asyncio.Queue[dict[str, Any]],
    *,
    widget_conversation: str | None,
) -> None:
    """Turns of the socket's conversation; a widget session (``widget_conversation``) may
    attach only images it uploaded itself."""
    runtime = gateway.conversations
    loaded = time.monotonic()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        if time.monotonic() - loaded > BOT_REFRESH_S:  # a new version, or disabled meanwhile
            bot, loaded = await _reload(gateway, bot), time.monotonic()
        try:
            frame = read_frame(frame_text(message))
            kind = frame["type"]
            if kind == "ping":
                await websocket.send_json({"type": "pong"})
                continue
            if kind != "message":
                raise _Frame(
                    "invalid_frame", f'unknown frame type "{kind}"; send "message" or "ping"'
                )
            inbound = inbound_of(frame, session_id)
        except _Frame as e:
            await websocket.send_json({"type": "error", "error": e.code, "message": e.message})
            continue
        client_id = {"client_id": inbound.message_id} if inbound.message_id is not None else {}
        await websocket.send_json({"type": "typing", "on": True})
        try:
            if widget_conversation is not None:
                await run_in_threadpool(
                    widget_sessions.check_uploads,
                    gateway.engine,
                    widget_conversation,
                    inbound.uploads,
                )
            outcome = await runtime.handle(bot_service.bot_info(bot), CHANNEL_WEBCHAT, inbound)
        except Exception as e:  # noqa: BLE001 - the socket must survive a failed turn
            if isinstance(e, ParleyError):
                error = {"error": e.code, "message": e.message}
            else:
                log_event("webchat.turn_failed", bot=bot.id, error=repr(e))
                error = {"error": "internal", "message": "something went wrong; try again"}
            await websocket.send_json({"type": "typing", "on": False})
            await websocket.send_json({"type": "error", **error, **client_id})
            continue
        if client_id:  # stored with the conversation: a resend will not run it twice
            await websocket.send_json({"type": "ack", **client_id})
        for item in outcome.messages:
            out = message_frame(item)
            await websocket.send_json(out)
            runtime.hub.publish(outcome.conversation_id, out, skip=queue)
        await websocket.send_json({"type": "typing", "on": False})
        if outcome.status != "bot":
            await websocket.send_json({"type": "status", "status": outcome.status})


# --- the widget and the demo page ------------------------------------------------------------


@public_router.get("/widget.js")
def widget_js() -> Response:
    return Response(
        (STATIC / "widget.js").read_bytes(),
        media_type="application/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


@public_router.get("/demo", response_class=HTMLResponse)
async def demo_page(request: Request, gateway: GatewayDep) -> HTMLResponse:
    """The demo shop page with the demo bot's widget."""

    def demo_bot() -> Bot | None:
        with session_scope(gateway.engine) as session:
            return session.scalar(
                select(Bot)
                .join(Tenant, Tenant.id == Bot.tenant_id)
                .where(Tenant.name == "demo")
                .order_by(Bot.created_at)
            )

    bot = await run_in_threadpool(demo_bot)
    if bot is None:
        raise NotFound(
            "the demo is not set up here; start the server with `parley serve` (demo on)"
        )
    base = str(request.base_url).rstrip("/")
    html = (STATIC / "demo.html").read_text()
    for name, value in {"bot_id": bot.id, "widget_key": bot.widget_key, "base_url": base}.items():
        html = html.replace("{{" + name + "}}", value)
    return HTMLResponse(html)

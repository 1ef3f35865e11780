"""Talking to bots: the Rasa-compatible REST channel, the web chat websocket and its image
uploads, the widget's script and the demo page.

Who may chat: a tenant API key with the ``predict`` scope (``Authorization: Bearer`` or
``?token=``), or the bot's public widget key (``?key=wk_...``), which reaches that bot only,
only from the bot's ``allowed_origins`` (a websocket without an ``Origin`` is refused when
they are set), and only for the web chat session it opened: the socket's welcome frame hands
the widget a session token for a new conversation, and every later use of the widget key
(resuming over the socket, the REST channel, uploads) presents it as ``?session_token=`` or
``X-Parley-Session-Token`` (``bot_gateway.services.chat_access``). Without it the REST channel
and uploads answer ``401``; with a token of another conversation or sender, ``403``; an upload
of another conversation is ``404``. The websocket protocol is in
``connectors/webchat/protocol.md``; its frames are read by ``connectors.webchat``, and turns run
through ``bot_gateway.services.conversations`` like every channel's.

Errors reach a visitor (the widget key's REST calls and uploads, the web chat socket) in the
form ``bot_gateway.errors.for_visitor`` gives them: "send it again", never the address of a
server (the server log keeps it); a caller with an API key (a server) hears the full message.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from bot_gateway.deps import Gateway, GatewayDep, bearer
from bot_gateway.errors import close_code_for, for_visitor, visitor_errors
from bot_gateway.requests import form_file, read_form, read_limited
from bot_gateway.schemas import RestReply, UploadPublic
from bot_gateway.services import conversations, webchat
from bot_gateway.services.chat_access import (
    allow_origin,
    authorize,
    authorize_request,
    widget_conversation,
    widget_session,
)
from bot_gateway.services.uploads import read_public_file, read_upload_sync, store_upload
from connectors.rest import RestMessage
from connectors.webchat import WebchatConnector, static_file
from connectors.webchat.access import WIDGET_KEY_HEADER
from connectors.webchat.frames import FrameError, error_frame, frame_text
from core.errors import ParleyError
from core.logging import log_event
from core.tables import Bot

router = APIRouter(tags=["chat"])
public_router = APIRouter(include_in_schema=False)


# --- REST channel -----------------------------------------------------------------------------


@router.post(
    "/bots/{bot_id}/webhooks/rest",
    response_model=list[RestReply],
    response_model_exclude_unset=True,
)
async def rest_webhook(
    bot_id: str, body: RestMessage, request: Request, gateway: GatewayDep
) -> list[dict[str, Any]]:
    """Rasa's REST channel: ``{"sender", "message"}`` (optionally ``attachments``: upload ids)
    → ``[{"recipient_id", "text", "buttons", "image", ...}]``."""
    with visitor_errors(_from_widget(request)):
        caller = await authorize_request(gateway, bot_id, request)
        session = await widget_session(gateway, caller.bot, request) if caller.widget else None
        return await conversations.rest_turn(gateway, caller.bot, body, widget_session=session)


def _from_widget(request: Request) -> bool:
    """A call with the bot's public widget key (a visitor's browser, ``authorize``)."""
    return bool(request.query_params.get("key") or request.headers.get(WIDGET_KEY_HEADER))


# --- uploads ----------------------------------------------------------------------------------


@router.post("/bots/{bot_id}/uploads", status_code=201, response_model=UploadPublic)
async def upload_image(
    bot_id: str, request: Request, response: Response, gateway: GatewayDep
) -> UploadPublic:
    """An image for a conversation (multipart ``file``); send its ``upload_id`` in a message.
    With the widget key it belongs to the session's conversation, which alone can read it."""
    with visitor_errors(_from_widget(request)):
        caller = await authorize_request(gateway, bot_id, request)
        allow_origin(response, request, caller.bot)
        conversation_id = await widget_conversation(gateway, caller, request)
        limit = gateway.settings.limits.max_image_bytes
        form = await read_form(request, limit=limit, max_fields=5, setting="max_image_bytes")
        upload = form_file(form, "file", "the image")
        data = await read_limited(upload, limit, setting="max_image_bytes")
        return await store_upload(
            gateway, caller.bot, data, upload.filename or "image", conversation_id=conversation_id
        )


@public_router.get("/files/{upload_id}/{token}", response_class=Response)
async def public_file(upload_id: str, token: str, gateway: GatewayDep) -> Response:
    """An image an agent sent, for the channel's provider to fetch (the token is the key)."""
    data, media_type = await run_in_threadpool(read_public_file, gateway, upload_id, token)
    return Response(data, media_type=media_type, headers={"Cache-Control": "private"})


@router.get("/bots/{bot_id}/uploads/{upload_id}", response_class=Response)
async def get_upload(
    bot_id: str, upload_id: str, request: Request, gateway: GatewayDep
) -> Response:
    """An image sent to the bot; with the widget key, only one of the session's own."""
    with visitor_errors(_from_widget(request)):
        caller = await authorize_request(gateway, bot_id, request)
        bot = caller.bot
        conversation_id = await widget_conversation(gateway, caller, request)
        data, public = await run_in_threadpool(
            read_upload_sync,
            gateway,
            bot.tenant_id,
            bot.id,
            upload_id,
            conversation_id=conversation_id,
        )
    response = Response(
        data, media_type=public["media_type"], headers={"Cache-Control": "private, max-age=3600"}
    )
    allow_origin(response, request, bot)
    return response


# --- web chat websocket ----------------------------------------------------------------------


@router.websocket("/bots/{bot_id}/ws")
async def webchat_socket(websocket: WebSocket, bot_id: str) -> None:
    """The web chat socket (protocol: ``connectors/webchat/protocol.md``)."""
    gateway: Gateway = websocket.app.state.gateway
    params = websocket.query_params
    hub = gateway.conversations.hub
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
        chat = await webchat.open_chat(
            gateway,
            caller,
            session=params.get("session"),
            session_token=params.get("session_token"),
        )
    except ParleyError as e:
        await _refuse(websocket, e)
        return
    queue = hub.subscribe(chat.record.id)
    writer: asyncio.Task[None] | None = None
    try:  # from the subscription on: a socket gone at any await below unsubscribes
        await hub.ready(chat.record.id)  # frames from other gateways reach it before the welcome
        await websocket.send_json(chat.welcome())
        writer = asyncio.create_task(_forward(websocket, queue))
        connector = webchat.connector(gateway, caller.bot, chat, socket=websocket.send_json)
        own = chat.record.id if caller.widget else None
        await _read_loop(
            websocket, gateway, caller.bot, connector, widget_conversation=own, listener=queue
        )
    except WebSocketDisconnect:
        pass
    except ParleyError as e:  # the bot was deleted while the socket was open
        await _refuse(websocket, e)
    finally:
        if writer is not None:
            writer.cancel()
        hub.unsubscribe(chat.record.id, queue)


async def _refuse(websocket: WebSocket, error: ParleyError) -> None:
    """Close the socket for ``error``, told in the visitor's form (``for_visitor``)."""
    error = for_visitor(error)
    await websocket.send_json(error_frame(error.code, error.message, **_retry(error)))
    await websocket.close(code=close_code_for(error), reason=error.code)


async def _forward(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any]]) -> None:
    """Messages published for this conversation by others (another tab, an agent, the API)."""
    while True:
        frame = await queue.get()
        await websocket.send_json(frame)


async def _read_loop(
    websocket: WebSocket,
    gateway: Gateway,
    bot: Bot,
    connector: WebchatConnector,
    *,
    widget_conversation: str | None,
    listener: object,
) -> None:
    """Turns of the socket's conversation; a widget session (``widget_conversation``) may
    attach only images it uploaded itself. ``listener`` is the socket's own subscription to
    the conversation: the connector writes the socket, the hub tells the others."""
    loaded = time.monotonic()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        if time.monotonic() - loaded > webchat.BOT_REFRESH_S:  # a new version, or disabled
            bot, loaded = await webchat.reload_bot(gateway, bot), time.monotonic()
        try:
            result = connector.parse_frame(frame_text(message))
        except FrameError as e:
            await websocket.send_json(error_frame(e.code, e.message))
            continue
        if not result.messages:  # a ping
            await websocket.send_text(result.reply.body.decode())
            continue
        inbound = result.messages[0]
        client_id = {"client_id": inbound.message_id} if inbound.message_id is not None else {}
        await websocket.send_json({"type": "typing", "on": True})
        try:
            outcome = await conversations.take_turn(
                gateway,
                bot,
                webchat.CHANNEL_WEBCHAT,
                inbound,
                connector,
                conversation_id=widget_conversation,
            )
        except Exception as e:  # noqa: BLE001 - the socket must survive a failed turn
            if isinstance(e, ParleyError):  # the visitor's form: "send it again" (errors.py)
                shown = for_visitor(e)
                error = error_frame(shown.code, shown.message, **_retry(shown), **client_id)
            else:
                log_event("webchat.turn_failed", bot=bot.id, error=repr(e))
                error = error_frame("internal", "something went wrong; try again", **client_id)
            await websocket.send_json({"type": "typing", "on": False})
            await websocket.send_json(error)
            continue
        if client_id:  # stored with the conversation: a resend will not run it twice
            await websocket.send_json({"type": "ack", **client_id})
        if outcome is not None:
            await conversations.answer(gateway, connector, outcome, inbound, skip=listener)
        await websocket.send_json({"type": "typing", "on": False})
        if outcome is not None and outcome.status != "bot":
            await websocket.send_json({"type": "status", "status": outcome.status})


def _retry(error: ParleyError) -> dict[str, Any]:
    """An error frame's ``retry_after``, where the error has one."""
    retry_after = error.details.get("retry_after")
    return {"retry_after": retry_after} if retry_after is not None else {}


# --- the widget and the demo page ------------------------------------------------------------


@public_router.get("/widget.js", response_class=Response)
def widget_js() -> Response:
    return Response(
        static_file("widget.js").read_bytes(),
        media_type="application/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


@public_router.get("/demo", response_class=HTMLResponse)
async def demo_page(request: Request, gateway: GatewayDep) -> HTMLResponse:
    """The demo shop page with the demo bot's widget."""
    bot = await webchat.demo_bot(gateway)
    base = str(request.base_url).rstrip("/")
    html = static_file("demo.html").read_text()
    for name, value in {"bot_id": bot.id, "widget_key": bot.widget_key, "base_url": base}.items():
        html = html.replace("{{" + name + "}}", value)
    return HTMLResponse(html)

"""The agents' service console: login, the inbox of handed-off conversations, a
conversation's transcript, claim, reply (through the conversation's own channel), notes, hand
back, close; supervisors see every agent's load and reassign. Live updates over a websocket.
The console's pages are served at ``/console/agents`` with a strict Content-Security-Policy.
The work is done by ``bot_gateway.services.agents``.

Agents authenticate with a session cookie (``parley_agent``: HttpOnly, SameSite=Strict) from
``POST /v1/agent/login`` (the Studio's session works too); writes send the session's CSRF token
in ``X-CSRF-Token`` (``bot_gateway.sessions``). Accounts are made with ``parley agents create``
or ``parley users create``; admins work here with a supervisor's rights.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse
from starlette.datastructures import UploadFile

from bot_gateway import sessions
from bot_gateway.conversations.runtime import agents_topic
from bot_gateway.deps import AgentDep, Gateway, GatewayDep
from bot_gateway.errors import close_code_for
from bot_gateway.pages import page, static_file
from bot_gateway.requests import form_file, read_form, read_limited
from bot_gateway.schemas import (
    AgentConversation,
    AgentInbox,
    AgentInboxItem,
    AgentLoad,
    AgentMessage,
    AgentMessageSent,
    AgentNoteAdded,
    AgentPublic,
    AgentSessionPublic,
    Assign,
    Handback,
    Login,
    Note,
)
from bot_gateway.services import agents as service
from bot_gateway.services.accounts import csrf_token
from core.errors import Forbidden, InvalidInput, ParleyError
from core.logging import log_event

router = APIRouter(prefix="/agent", tags=["agents' console"])
pages = APIRouter(include_in_schema=False)

COOKIE = sessions.COOKIE
CONSOLE = Path(__file__).resolve().parents[2] / "console" / "agents"


# --- who is calling ---------------------------------------------------------------------------


@router.post("/login", response_model=AgentSessionPublic)
async def login(
    body: Login, request: Request, response: Response, gateway: GatewayDep
) -> AgentSessionPublic:
    """A session cookie for an agent, a supervisor or an admin (others are ``403``). Five
    failures lock the account for up to five minutes (``429`` with ``Retry-After``; the right
    password too), and failures count against the caller's address as every failed
    authentication does. ``csrf_token`` goes in ``X-CSRF-Token`` on every write."""
    agent, token = await sessions.sign_in(
        gateway,
        request,
        response,
        tenant=body.tenant,
        username=body.username,
        password=body.password,
        console=True,
    )
    return AgentSessionPublic(agent=AgentPublic.of(agent), csrf_token=csrf_token(token))


@router.post("/logout", status_code=204, response_class=Response)
async def logout(request: Request, gateway: GatewayDep) -> Response:
    """End the session (with its CSRF token) and clear the cookie."""
    return await sessions.sign_out(gateway, request)


@router.get("/me", response_model=AgentSessionPublic)
async def me(agent: AgentDep, request: Request) -> AgentSessionPublic:
    token = request.cookies.get(COOKIE, "")
    return AgentSessionPublic(agent=AgentPublic.of(agent), csrf_token=csrf_token(token))


# --- the inbox and a conversation -------------------------------------------------------------


@router.get("/inbox", response_model=AgentInbox, response_model_exclude_unset=True)
async def inbox(agent: AgentDep, gateway: GatewayDep) -> Any:
    """Conversations waiting for an agent (oldest first) and those I hold; supervisors also
    get ``others``, those other agents hold."""
    return await service.inbox(gateway, agent)


@router.get(
    "/conversations/{conversation_id}",
    response_model=AgentConversation,
    response_model_exclude_unset=True,
)
async def conversation(conversation_id: str, agent: AgentDep, gateway: GatewayDep) -> Any:
    """The conversation's inbox line, slots, the last parse and its transcript."""
    return await service.conversation_view(gateway, agent, conversation_id)


@router.get(
    "/conversations/{conversation_id}/uploads/{upload_id}",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}, "description": "the image the customer sent"}},
)
async def conversation_upload(
    conversation_id: str, upload_id: str, agent: AgentDep, gateway: GatewayDep
) -> Response:
    data, media_type = await service.conversation_upload(gateway, agent, conversation_id, upload_id)
    return Response(data, media_type=media_type, headers={"Cache-Control": "private"})


@router.post("/conversations/{conversation_id}/claim", response_model=AgentInboxItem)
async def claim(conversation_id: str, agent: AgentDep, gateway: GatewayDep) -> Any:
    """Take a handed-off conversation (409 when another agent holds it)."""
    return await service.claim(gateway, agent, conversation_id)


@router.post(
    "/conversations/{conversation_id}/messages",
    response_model=AgentMessageSent,
    response_model_exclude_unset=True,
)
async def send_message(
    conversation_id: str, request: Request, agent: AgentDep, gateway: GatewayDep
) -> Any:
    """Write to the customer (JSON ``{text, quick_replies}``, or multipart ``file`` + ``text``);
    it leaves through the conversation's own channel."""
    record = await service.holding(gateway, agent, conversation_id)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        limit = gateway.settings.limits.max_image_bytes
        form = await read_form(request, limit=limit, setting="max_image_bytes")
        text = form.get("text")
        image = None
        if isinstance(form.get("file"), UploadFile):
            image = await read_limited(
                form_file(form, "file", "the image"), limit, setting="max_image_bytes"
            )
        return await service.send_message(
            gateway,
            request,
            agent,
            record,
            text=text if isinstance(text, str) else None,
            image=image,
        )
    try:
        body = AgentMessage.model_validate_json(await request.body())
    except ValueError as e:
        raise InvalidInput(f"invalid message: {e}") from e
    return await service.send_message(
        gateway, request, agent, record, text=body.text, quick_replies=body.quick_replies
    )


@router.post(
    "/conversations/{conversation_id}/notes",
    response_model=AgentNoteAdded,
    response_model_exclude_unset=True,
)
async def add_note(conversation_id: str, body: Note, agent: AgentDep, gateway: GatewayDep) -> Any:
    """An internal note: agents see it, the customer never does."""
    return await service.add_note(gateway, agent, conversation_id, body.text)


@router.post("/conversations/{conversation_id}/handback", response_model=AgentInboxItem)
async def handback(
    conversation_id: str, body: Handback, agent: AgentDep, gateway: GatewayDep
) -> Any:
    """Give the conversation back to the bot (optionally ending its flows)."""
    return await service.handback(gateway, agent, conversation_id, reset_flow=body.reset_flow)


@router.post("/conversations/{conversation_id}/close", response_model=AgentInboxItem)
async def close(conversation_id: str, agent: AgentDep, gateway: GatewayDep) -> Any:
    """End the conversation; the customer's next message starts a new session with the bot."""
    return await service.close(gateway, agent, conversation_id)


# --- supervisors -----------------------------------------------------------------------------


@router.get("/agents", response_model=list[AgentLoad])
async def list_agents(agent: AgentDep, gateway: GatewayDep) -> Any:
    """Every agent of the tenant with the number of conversations they hold."""
    return await service.agent_loads(gateway, agent)


@router.post("/conversations/{conversation_id}/assign", response_model=AgentInboxItem)
async def assign(conversation_id: str, body: Assign, agent: AgentDep, gateway: GatewayDep) -> Any:
    """A supervisor gives a conversation to an agent."""
    return await service.assign(gateway, agent, conversation_id, body.agent_id)


# --- live updates ----------------------------------------------------------------------------


@router.websocket("/ws")
async def live(websocket: WebSocket) -> None:
    """Inbox changes, new turns and status changes of the tenant's handed-off conversations."""
    gateway: Gateway = websocket.app.state.gateway
    await websocket.accept()
    token = websocket.cookies.get(COOKIE)
    try:
        origin = websocket.headers.get("origin")
        host = websocket.headers.get("host", "")
        if origin is not None and not service.console_origin(gateway, host, origin):
            log_event("agents.origin_refused", origin=origin)
            raise Forbidden(
                f"origin {origin} may not open the agents' socket; open the console at this "
                "server's public URL (PARLEY_PUBLIC_URL)"
            )
        agent = await service.session_agent(gateway, token)
    except ParleyError as e:
        await websocket.send_json({"type": "error", "error": e.code, "message": e.message})
        await websocket.close(code=close_code_for(e))
        return
    hub = gateway.conversations.hub
    topic = agents_topic(agent.tenant_id)
    queue = hub.subscribe(topic)

    async def forward() -> None:
        while True:
            frame = service.live_frame(await queue.get())
            if frame is not None:
                await websocket.send_json(frame)

    writer: asyncio.Task[None] | None = None
    try:  # from the subscription on: a socket gone at any await below unsubscribes
        await hub.ready(topic)  # frames from other gateways reach it before the first pong
        writer = asyncio.create_task(forward())
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if '"ping"' in (message.get("text") or ""):  # anything else (binary too) is ignored
                await websocket.send_json({"type": "pong"})
    except WebSocketDisconnect:
        pass
    finally:
        if writer is not None:
            writer.cancel()
        hub.unsubscribe(topic, queue)


# --- the pages --------------------------------------------------------------------------------


@pages.get("/console/agents", response_class=HTMLResponse)
def console_page() -> Response:
    return page(CONSOLE / "index.html", "the agents' console")


@pages.get("/console/agents/static/{name}", response_class=FileResponse)
def console_static(name: str) -> Response:
    return static_file(CONSOLE / "static", name)

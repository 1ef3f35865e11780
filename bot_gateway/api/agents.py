"""The agents' service console: login, the inbox of handed-off conversations, a
conversation's transcript, claim, reply (through the conversation's own channel), notes, hand
back, close; supervisors see every agent's load and reassign. Live updates over a websocket.
The console's pages are served at ``/console/agents`` with a strict Content-Security-Policy.

Agents authenticate with a session cookie (``parley_agent``: HttpOnly, SameSite=Strict) from
``POST /v1/agent/login``; accounts are made with ``parley agents create``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from starlette.datastructures import UploadFile

from bot_gateway import auth_failures
from bot_gateway.conversations import bots as bot_service
from bot_gateway.conversations.runtime import agents_topic
from bot_gateway.conversations.store import WAITING, WITH_AGENT, AgentDesk, ConversationRecord
from bot_gateway.conversations.tracker import event
from bot_gateway.deps import Gateway, GatewayDep
from bot_gateway.errors import close_code_for
from bot_gateway.requests import form_file, read_form, read_limited
from bot_gateway.services import accounts as agent_service
from bot_gateway.services.accounts import AgentPrincipal
from bot_gateway.services.delivery import public_base, send_to_customer
from bot_gateway.services.uploads import read_upload_sync, store_upload
from core.db import session_scope
from core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ParleyError,
)
from core.logging import log_event
from core.messages import OutboundMessage
from core.tables import Agent, Bot, Channel

router = APIRouter(prefix="/agent", tags=["agents' console"])
pages = APIRouter(include_in_schema=False)

COOKIE = "parley_agent"
CONSOLE = Path(__file__).resolve().parents[2] / "console" / "agents"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
TRANSCRIPT_EVENTS = 2000


# --- who is calling ---------------------------------------------------------------------------


async def current_agent(request: Request, gateway: GatewayDep) -> AgentPrincipal:
    token = request.cookies.get(COOKIE)

    def load() -> AgentPrincipal:
        with session_scope(gateway.engine) as session:
            return agent_service.session_agent(session, token)

    agent = await run_in_threadpool(load)
    request.state.agent = agent  # for the audit log
    return agent


AgentDep = Annotated[AgentPrincipal, Depends(current_agent)]


def desk(gateway: Gateway) -> AgentDesk:
    return AgentDesk(gateway.engine)


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str = Field(min_length=1, max_length=200)
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=500)


class AgentPublic(BaseModel):
    id: str
    username: str
    name: str
    role: str
    tenant_id: str

    @classmethod
    def of(cls, agent: AgentPrincipal) -> AgentPublic:
        return cls(
            id=agent.id,
            username=agent.username,
            name=agent.name,
            role=agent.role,
            tenant_id=agent.tenant_id,
        )


@router.post("/login")
async def login(body: Login, request: Request, gateway: GatewayDep) -> Response:
    """A session cookie for an agent. Five failures lock the account for up to five minutes
    (``429`` with ``Retry-After``; the right password too), and failures count against the
    caller's address as every failed authentication does."""

    def check() -> tuple[AgentPrincipal, str]:
        with session_scope(gateway.engine) as session:
            agent = agent_service.authenticate(
                session,
                gateway.counter_store,
                tenant=body.tenant,
                username=body.username,
                password=body.password,
            )
            return AgentPrincipal.of(agent), agent_service.login(session, agent)

    with auth_failures.guarded(gateway, request, expensive=True):
        agent, token = await run_in_threadpool(check)
    request.state.agent = agent  # for the audit log
    response = JSONResponse({"agent": AgentPublic.of(agent).model_dump()})
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or _served_over_https(gateway),
        max_age=int(agent_service.SESSION_TTL.total_seconds()),
        path="/",
    )
    return response


def _served_over_https(gateway: Gateway) -> bool:
    return (gateway.settings.public_url or "").lower().startswith("https://")


@router.post("/logout", status_code=204)
async def logout(request: Request, gateway: GatewayDep) -> Response:
    token = request.cookies.get(COOKIE)
    if token:

        def drop() -> None:
            with session_scope(gateway.engine) as session:
                agent_service.logout(session, token)

        await run_in_threadpool(drop)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/me")
async def me(agent: AgentDep) -> dict[str, Any]:
    return {"agent": AgentPublic.of(agent).model_dump()}


# --- the inbox and a conversation -------------------------------------------------------------


Names = tuple[dict[str, str], dict[str, str], dict[str, str]]


def _names(gateway: Gateway, tenant_id: str) -> Names:
    """Bot names, agent names and channel types of the tenant, by id."""
    with session_scope(gateway.engine) as session:
        bots = dict(
            session.execute(select(Bot.id, Bot.name).where(Bot.tenant_id == tenant_id)).all()
        )
        agents = dict(
            session.execute(select(Agent.id, Agent.name).where(Agent.tenant_id == tenant_id)).all()
        )
        channels = dict(
            session.execute(
                select(Channel.id, Channel.type).where(Channel.tenant_id == tenant_id)
            ).all()
        )
    return bots, agents, channels


def _item(
    record: ConversationRecord,
    names: Names,
    last: str | None = None,
) -> dict[str, Any]:
    bots, agents, channels = names
    return {
        "id": record.id,
        "bot_id": record.bot_id,
        "bot_name": bots.get(record.bot_id),
        "channel": channels.get(record.channel, record.channel),
        "sender_id": record.sender_id,
        "customer_name": (record.state.get("reply_metadata") or {}).get("name"),
        "status": record.status,
        "handoff_reason": record.handoff_reason,
        "waiting_since": record.waiting_since.timestamp() if record.waiting_since else None,
        "assigned_agent_id": record.assigned_agent_id,
        "assigned_agent_name": agents.get(record.assigned_agent_id or ""),
        "last_message": last,
    }


@router.get("/inbox")
async def inbox(agent: AgentDep, gateway: GatewayDep) -> dict[str, Any]:
    """Conversations waiting for an agent (oldest first) and those I hold."""
    records = await desk(gateway).inbox(agent.tenant_id)
    last = await desk(gateway).last_texts([r.id for r in records])
    names = await run_in_threadpool(_names, gateway, agent.tenant_id)
    waiting = [r for r in records if r.status == WAITING and r.assigned_agent_id is None]
    mine = [r for r in records if r.status == WITH_AGENT and r.assigned_agent_id == agent.id]
    others = [r for r in records if r.status == WITH_AGENT and r.assigned_agent_id != agent.id]
    out = {
        "waiting": [_item(r, names, last.get(r.id)) for r in waiting],
        "mine": [_item(r, names, last.get(r.id)) for r in mine],
    }
    if agent.supervisor:
        out["others"] = [_item(r, names, last.get(r.id)) for r in others]
    return out


def turn_of(
    conversation_id: str, e: dict[str, Any], id_: int | None = None
) -> dict[str, Any] | None:
    """A transcript line of an event (None for events agents need not read)."""
    kind = e.get("event")
    data = e.get("data") or {}
    turn: dict[str, Any] = {
        "id": id_ if id_ is not None else e.get("id"),
        "timestamp": e.get("timestamp"),
    }
    if kind == "user":
        turn.update(from_="customer", text=e.get("text") or None)
        attachments = e.get("attachments") or []
        base = f"/v1/agent/conversations/{conversation_id}/uploads"
        if attachments:
            turn["attachments"] = [
                {"upload_id": a.get("upload_id"), "url": f"{base}/{a.get('upload_id')}"}
                for a in attachments
            ]
    elif kind in ("bot", "agent"):
        turn.update(from_=kind, text=e.get("text"))
        for key in ("buttons", "quick_replies", "image", "cards"):
            if data.get(key):
                turn[key] = data[key]
        if kind == "agent":
            turn["agent_name"] = e.get("agent_name")
    elif kind == "note":
        turn.update(from_="note", text=e.get("text"), agent_name=e.get("agent_name"))
    elif kind in SYSTEM_LINES:
        turn.update(from_="system", text=SYSTEM_LINES[kind](e))
    else:
        return None
    turn["from"] = turn.pop("from_")
    return turn


SYSTEM_LINES = {
    "handoff": lambda e: f"Handed to a person: {e.get('reason') or 'no reason given'}",
    "release": lambda e: "Handed back to the bot",
    "claim": lambda e: f"{e.get('agent_name') or 'An agent'} took the conversation",
    "closed": lambda e: f"Closed by {e.get('agent_name') or 'an agent'}",
    "delivery_failed": lambda e: f"Not delivered: {e.get('error')}",
    "session_started": lambda e: "New session",
}


async def _conversation(
    gateway: Gateway, agent: AgentPrincipal, conversation_id: str
) -> ConversationRecord:
    return await gateway.conversations.store.get(agent.tenant_id, conversation_id)


@router.get("/conversations/{conversation_id}")
async def conversation(
    conversation_id: str, agent: AgentDep, gateway: GatewayDep
) -> dict[str, Any]:
    store = gateway.conversations.store
    record = await _conversation(gateway, agent, conversation_id)
    events = await store.events(agent.tenant_id, conversation_id, limit=TRANSCRIPT_EVENTS)
    names = await run_in_threadpool(_names, gateway, agent.tenant_id)
    transcript = [t for e in events if (t := turn_of(conversation_id, e)) is not None]
    parses = [  # the last message the bot read (not those written to an agent)
        e["parse_data"]
        for e in events
        if e.get("event") == "user" and (e.get("parse_data") or {}).get("intent")
    ]
    last = parses[-1] if parses else None
    return {
        "conversation": _item(record, names),
        "slots": record.state.get("slots") or {},
        "last_parse": (
            {"intent": last.get("intent"), "entities": last.get("entities") or []} if last else None
        ),
        "transcript": transcript,
    }


@router.get("/conversations/{conversation_id}/uploads/{upload_id}")
async def conversation_upload(
    conversation_id: str, upload_id: str, agent: AgentDep, gateway: GatewayDep
) -> Response:
    record = await _conversation(gateway, agent, conversation_id)
    data, public = await run_in_threadpool(
        read_upload_sync, gateway, record.tenant_id, record.bot_id, upload_id
    )
    return Response(data, media_type=public["media_type"], headers={"Cache-Control": "private"})


async def _bot(gateway: Gateway, record: ConversationRecord) -> Bot:
    def load() -> Bot:
        with session_scope(gateway.engine) as session:
            return bot_service.get_bot(session, record.tenant_id, record.bot_id)

    return await run_in_threadpool(load)


async def _claim(
    gateway: Gateway, agent: AgentPrincipal, conversation_id: str, *, for_agent: str | None = None
) -> dict[str, Any]:
    record = await _conversation(gateway, agent, conversation_id)
    holder = for_agent or agent.id
    async with gateway.conversations.locked_conversation(record):
        claimed = await desk(gateway).claim(
            agent.tenant_id, conversation_id, holder, take_over=agent.supervisor
        )
    names = await run_in_threadpool(_names, gateway, agent.tenant_id)
    note = event("claim", agent_id=holder, agent_name=names[1].get(holder))
    await gateway.conversations.record(claimed, note)
    gateway.conversations.hub.publish(agents_topic(agent.tenant_id), {"type": "inbox"})
    return _item(claimed, names)


@router.post("/conversations/{conversation_id}/claim")
async def claim(conversation_id: str, agent: AgentDep, gateway: GatewayDep) -> dict[str, Any]:
    """Take a handed-off conversation (409 when another agent holds it)."""
    return await _claim(gateway, agent, conversation_id)


class AgentMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(default="", max_length=4000)
    quick_replies: list[dict[str, str]] = Field(default=[], max_length=10)


async def _holding(
    gateway: Gateway, agent: AgentPrincipal, conversation_id: str
) -> ConversationRecord:
    record = await _conversation(gateway, agent, conversation_id)
    if record.status != WITH_AGENT or record.assigned_agent_id != agent.id:
        raise Conflict("claim the conversation before writing to the customer")
    return record


@router.post("/conversations/{conversation_id}/messages")
async def send_message(
    conversation_id: str, request: Request, agent: AgentDep, gateway: GatewayDep
) -> dict[str, Any]:
    """Write to the customer (JSON ``{text, quick_replies}``, or multipart ``file`` + ``text``);
    it leaves through the conversation's own channel."""
    record = await _holding(gateway, agent, conversation_id)
    message: dict[str, Any] = {}
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        limit = gateway.settings.limits.max_image_bytes
        form = await read_form(request, limit=limit, setting="max_image_bytes")
        text = form.get("text")
        if isinstance(text, str) and text.strip():
            message["text"] = text.strip()
        if isinstance(form.get("file"), UploadFile):
            data = await read_limited(
                form_file(form, "file", "the image"), limit, setting="max_image_bytes"
            )
            bot = await _bot(gateway, record)
            stored = await store_upload(gateway, bot, data, "agent image", public=True)
            message["image"] = public_base(gateway, request) + str(stored.public_url)
    else:
        try:
            body = AgentMessage.model_validate_json(await request.body())
        except ValueError as e:
            raise InvalidInput(f"invalid message: {e}") from e
        if body.text.strip():
            message["text"] = body.text.strip()
        replies = [
            {
                "title": str(q.get("title", ""))[:80],
                "payload": str(q.get("payload") or q.get("title", "")),
            }
            for q in body.quick_replies
            if q.get("title")
        ]
        if replies:
            message["quick_replies"] = replies
    if not message.get("text") and not message.get("image"):
        raise InvalidInput("write a text or attach an image")
    item = event(
        "agent",
        text=message.get("text"),
        data={k: v for k, v in message.items() if k != "text"},
        agent_id=agent.id,
        agent_name=agent.name,
    )
    await gateway.conversations.record(record, item)
    delivered = await send_to_customer(gateway, request, record, OutboundMessage.of(message))
    turn = turn_of(conversation_id, item) or {}
    return {"turn": turn, "delivered": delivered}


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=4000)


@router.post("/conversations/{conversation_id}/notes")
async def add_note(
    conversation_id: str, body: Note, agent: AgentDep, gateway: GatewayDep
) -> dict[str, Any]:
    """An internal note: agents see it, the customer never does."""
    record = await _conversation(gateway, agent, conversation_id)
    item = event("note", text=body.text, agent_id=agent.id, agent_name=agent.name)
    await gateway.conversations.record(record, item)
    return {"turn": turn_of(conversation_id, item)}


class Handback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reset_flow: bool = False


@router.post("/conversations/{conversation_id}/handback")
async def handback(
    conversation_id: str, body: Handback, agent: AgentDep, gateway: GatewayDep
) -> dict[str, Any]:
    """Give the conversation back to the bot (optionally ending its flows)."""
    record = await _conversation(gateway, agent, conversation_id)
    _check_holder(agent, record)
    bot = await _bot(gateway, record)
    outcome = await gateway.conversations.control(
        bot_service.bot_info(bot), record, "release", reset_flow=body.reset_flow
    )
    for item in outcome.messages:
        gateway.conversations.hub.said(record.id, item)
    updated = await _conversation(gateway, agent, conversation_id)
    names = await run_in_threadpool(_names, gateway, agent.tenant_id)
    return _item(updated, names)


def _check_holder(agent: AgentPrincipal, record: ConversationRecord) -> None:
    if record.assigned_agent_id not in (None, agent.id) and not agent.supervisor:
        raise Conflict("another agent holds this conversation")


@router.post("/conversations/{conversation_id}/close")
async def close(conversation_id: str, agent: AgentDep, gateway: GatewayDep) -> dict[str, Any]:
    """End the conversation; the customer's next message starts a new session with the bot."""
    record = await _conversation(gateway, agent, conversation_id)
    _check_holder(agent, record)
    async with gateway.conversations.locked_conversation(record):
        closed = await desk(gateway).close(agent.tenant_id, conversation_id)
    await gateway.conversations.record(
        closed, event("closed", agent_id=agent.id, agent_name=agent.name)
    )
    hub = gateway.conversations.hub
    hub.publish(agents_topic(agent.tenant_id), {"type": "inbox"})
    hub.publish(closed.id, {"type": "status", "status": "closed"})
    names = await run_in_threadpool(_names, gateway, agent.tenant_id)
    return _item(closed, names)


# --- supervisors -----------------------------------------------------------------------------


def _supervisor(agent: AgentPrincipal) -> None:
    if not agent.supervisor:
        raise Forbidden("only a supervisor can do this")


@router.get("/agents")
async def list_agents(agent: AgentDep, gateway: GatewayDep) -> list[dict[str, Any]]:
    """Every agent of the tenant with the number of conversations they hold."""
    _supervisor(agent)
    load = await desk(gateway).load(agent.tenant_id)

    def rows() -> list[dict[str, Any]]:
        with session_scope(gateway.engine) as session:
            found = session.scalars(
                select(Agent).where(Agent.tenant_id == agent.tenant_id).order_by(Agent.username)
            )
            return [
                {
                    "id": a.id,
                    "username": a.username,
                    "name": a.name,
                    "role": a.role,
                    "claimed": load.get(a.id, 0),
                }
                for a in found
            ]

    return await run_in_threadpool(rows)


class Assign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: str


@router.post("/conversations/{conversation_id}/assign")
async def assign(
    conversation_id: str, body: Assign, agent: AgentDep, gateway: GatewayDep
) -> dict[str, Any]:
    """A supervisor gives a conversation to an agent."""
    _supervisor(agent)

    def check() -> None:
        with session_scope(gateway.engine) as session:
            agent_service.get_agent(session, agent.tenant_id, body.agent_id)

    await run_in_threadpool(check)
    return await _claim(gateway, agent, conversation_id, for_agent=body.agent_id)


# --- live updates ----------------------------------------------------------------------------


@router.websocket("/ws")
async def live(websocket: WebSocket) -> None:
    """Inbox changes, new turns and status changes of the tenant's handed-off conversations."""
    gateway: Gateway = websocket.app.state.gateway
    await websocket.accept()
    token = websocket.cookies.get(COOKIE)

    def load() -> AgentPrincipal:
        with session_scope(gateway.engine) as session:
            return agent_service.session_agent(session, token)

    try:
        origin = websocket.headers.get("origin")
        if origin is not None and not _console_origin(gateway, websocket, origin):
            log_event("agents.origin_refused", origin=origin)
            raise Forbidden(
                f"origin {origin} may not open the agents' socket; open the console at this "
                "server's public URL (PARLEY_PUBLIC_URL)"
            )
        agent = await run_in_threadpool(load)
    except ParleyError as e:
        await websocket.send_json({"type": "error", "error": e.code, "message": e.message})
        await websocket.close(code=close_code_for(e))
        return
    hub = gateway.conversations.hub
    topic = agents_topic(agent.tenant_id)
    queue = hub.subscribe(topic)

    async def forward() -> None:
        while True:
            frame = await queue.get()
            if frame.get("type") == "turn":
                turn = turn_of(frame["conversation_id"], frame["event"])
                if turn is None:
                    continue
                frame = {"type": "turn", "conversation_id": frame["conversation_id"], "turn": turn}
            await websocket.send_json(frame)

    writer = asyncio.create_task(forward())
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if '"ping"' in (message.get("text") or ""):  # anything else (binary too) is ignored
                await websocket.send_json({"type": "pong"})
    except WebSocketDisconnect:
        pass
    finally:
        writer.cancel()
        hub.unsubscribe(topic, queue)


def _console_origin(gateway: Gateway, websocket: WebSocket, origin: str) -> bool:
    """Whether a browser's ``Origin`` is the console's own: ``PARLEY_PUBLIC_URL``'s scheme and
    host, else (no public URL set) the host this request came to. A client without an
    ``Origin`` is not a browser page, which only this check would stop from riding on an
    agent's cookie."""
    given = urlsplit(origin.strip().lower())
    public = gateway.settings.public_url
    if public:
        own = urlsplit(public.strip().lower())
        return (given.scheme, given.netloc) == (own.scheme, own.netloc)
    return bool(given.netloc) and given.netloc == websocket.headers.get("host", "").lower()


# --- the pages --------------------------------------------------------------------------------


@pages.get("/console/agents")
def console_page() -> Response:
    index = CONSOLE / "index.html"
    if not index.exists():
        raise NotFound("the agents' console is not installed")
    return FileResponse(index, media_type="text/html", headers=SECURITY_HEADERS)


@pages.get("/console/agents/static/{name}")
def console_static(name: str) -> Response:
    path = (CONSOLE / "static" / name).resolve()
    if path.parent != (CONSOLE / "static").resolve() or not path.is_file():
        raise NotFound(f"no file {name}")
    return FileResponse(path, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

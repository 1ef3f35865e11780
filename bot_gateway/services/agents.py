"""The agents' service console, behind the ``/v1/agent`` routes: sessions, the inbox of
handed-off conversations, a conversation's transcript, claim, reply (through the conversation's
own channel), notes, hand back, close; supervisors see every agent's load and reassign. Live
updates reach the console through the conversation hub's tenant topic (``live_frame`` turns a
hub frame into what the console reads).

Answers are the JSON shapes of ``bot_gateway.schemas`` (``AgentInboxItem``, ``AgentTurn``...)
as dicts: a transcript line has only the keys that apply to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from bot_gateway.conversations import bots as bot_service
from bot_gateway.conversations.definition import SENTIMENT_SLOT
from bot_gateway.conversations.events import event
from bot_gateway.conversations.runtime import agents_topic
from bot_gateway.conversations.store import WAITING, WITH_AGENT, AgentDesk, ConversationRecord
from bot_gateway.deps import Gateway
from bot_gateway.services import accounts
from bot_gateway.services.accounts import AgentPrincipal
from bot_gateway.services.delivery import public_base, send_to_customer
from bot_gateway.services.uploads import read_upload_sync, store_upload
from core.db import session_scope
from core.errors import Conflict, Forbidden, InvalidInput
from core.messages import OutboundMessage
from core.tables import Agent, Bot, Channel

__all__ = [
    "SYSTEM_LINES",
    "TRANSCRIPT_EVENTS",
    "add_note",
    "agent_loads",
    "assign",
    "claim",
    "close",
    "console_origin",
    "conversation_upload",
    "conversation_view",
    "handback",
    "holding",
    "inbox",
    "live_frame",
    "send_message",
    "session_agent",
    "turn_of",
]

TRANSCRIPT_EVENTS = 2000

Names = tuple[dict[str, str], dict[str, str], dict[str, str]]


# --- sessions -----------------------------------------------------------------------------------


async def session_agent(gateway: Gateway, token: str | None) -> AgentPrincipal:
    """The agent a session cookie's token belongs to (``Unauthenticated`` otherwise)."""

    def load() -> AgentPrincipal:
        with session_scope(gateway.engine) as session:
            return accounts.session_agent(session, token)

    return await run_in_threadpool(load)


def console_origin(gateway: Gateway, host: str, origin: str) -> bool:
    """Whether a browser's ``Origin`` is the console's own: ``PARLEY_PUBLIC_URL``'s scheme and
    host, else (no public URL set) the ``host`` the request came to. A client without an
    ``Origin`` is not a browser page, which only this check would stop from riding on an
    agent's cookie."""
    given = urlsplit(origin.strip().lower())
    public = gateway.settings.public_url
    if public:
        own = urlsplit(public.strip().lower())
        return (given.scheme, given.netloc) == (own.scheme, own.netloc)
    return bool(given.netloc) and given.netloc == host.lower()


# --- the inbox and a conversation -------------------------------------------------------------


def _desk(gateway: Gateway) -> AgentDesk:
    return AgentDesk(gateway.engine)


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
        "sentiment": (record.state.get("slots") or {}).get(SENTIMENT_SLOT),
        "waiting_since": record.waiting_since.timestamp() if record.waiting_since else None,
        "assigned_agent_id": record.assigned_agent_id,
        "assigned_agent_name": agents.get(record.assigned_agent_id or ""),
        "last_message": last,
    }


async def _listed(gateway: Gateway, agent: AgentPrincipal, record: ConversationRecord) -> Any:
    names = await run_in_threadpool(_names, gateway, agent.tenant_id)
    return _item(record, names)


async def inbox(gateway: Gateway, agent: AgentPrincipal) -> dict[str, Any]:
    """Conversations waiting for an agent (oldest first) and those the agent holds; a
    supervisor also gets those other agents hold (``others``)."""
    records = await _desk(gateway).inbox(agent.tenant_id)
    last = await _desk(gateway).last_texts([r.id for r in records])
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
        if e.get("sentiment"):  # {label, score} of a typed text (nlu.sentiment)
            turn["sentiment"] = e["sentiment"]
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


SYSTEM_LINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "handoff": lambda e: f"Handed to a person: {e.get('reason') or 'no reason given'}",
    "release": lambda e: "Handed back to the bot",
    "claim": lambda e: f"{e.get('agent_name') or 'An agent'} took the conversation",
    "closed": lambda e: f"Closed by {e.get('agent_name') or 'an agent'}",
    "delivery_failed": lambda e: f"Not delivered: {e.get('error')}",
    "session_started": lambda e: "New session",
}


def live_frame(frame: dict[str, Any]) -> dict[str, Any] | None:
    """What the console's socket receives for a frame of the tenant's agents' topic (None for
    a turn agents need not read)."""
    if frame.get("type") != "turn":
        return frame
    turn = turn_of(frame["conversation_id"], frame["event"])
    if turn is None:
        return None
    return {"type": "turn", "conversation_id": frame["conversation_id"], "turn": turn}


async def _conversation(
    gateway: Gateway, agent: AgentPrincipal, conversation_id: str
) -> ConversationRecord:
    return await gateway.conversations.store.get(agent.tenant_id, conversation_id)


async def conversation_view(
    gateway: Gateway, agent: AgentPrincipal, conversation_id: str
) -> dict[str, Any]:
    """A conversation as the console shows it: the inbox line, slots, the last parse and the
    transcript (the last ``TRANSCRIPT_EVENTS`` events)."""
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


async def conversation_upload(
    gateway: Gateway, agent: AgentPrincipal, conversation_id: str, upload_id: str
) -> tuple[bytes, str]:
    """The bytes and media type of an image the customer sent in the conversation."""
    record = await _conversation(gateway, agent, conversation_id)
    data, public = await run_in_threadpool(
        read_upload_sync, gateway, record.tenant_id, record.bot_id, upload_id
    )
    return data, str(public["media_type"])


async def _bot(gateway: Gateway, record: ConversationRecord) -> Bot:
    def load() -> Bot:
        with session_scope(gateway.engine) as session:
            return bot_service.get_bot(session, record.tenant_id, record.bot_id)

    return await run_in_threadpool(load)


async def claim(
    gateway: Gateway, agent: AgentPrincipal, conversation_id: str, *, for_agent: str | None = None
) -> dict[str, Any]:
    """Take a handed-off conversation, or (``for_agent``) give it to another agent; ``Conflict``
    when another agent holds it and the caller is not a supervisor."""
    record = await _conversation(gateway, agent, conversation_id)
    holder = for_agent or agent.id
    async with gateway.conversations.locked_conversation(record) as fence:
        await fence.check()
        claimed = await _desk(gateway).claim(
            agent.tenant_id, conversation_id, holder, take_over=agent.supervisor
        )
    names = await run_in_threadpool(_names, gateway, agent.tenant_id)
    note = event("claim", agent_id=holder, agent_name=names[1].get(holder))
    await gateway.conversations.record(claimed, note)
    gateway.conversations.hub.publish(agents_topic(agent.tenant_id), {"type": "inbox"})
    return _item(claimed, names)


async def holding(
    gateway: Gateway, agent: AgentPrincipal, conversation_id: str
) -> ConversationRecord:
    """The conversation, when the agent holds it (``Conflict`` otherwise: claim it first)."""
    record = await _conversation(gateway, agent, conversation_id)
    if record.status != WITH_AGENT or record.assigned_agent_id != agent.id:
        raise Conflict("claim the conversation before writing to the customer")
    return record


async def send_message(
    gateway: Gateway,
    request: Request,
    agent: AgentPrincipal,
    record: ConversationRecord,
    *,
    text: str | None = None,
    quick_replies: list[dict[str, str]] | None = None,
    image: bytes | None = None,
) -> dict[str, Any]:
    """Write to the customer of a conversation the agent holds: a text, quick replies, an
    image (kept as a public upload); it leaves through the conversation's own channel."""
    message: dict[str, Any] = {}
    if text is not None and text.strip():
        message["text"] = text.strip()
    if image is not None:
        bot = await _bot(gateway, record)
        stored = await store_upload(gateway, bot, image, "agent image", public=True)
        message["image"] = public_base(gateway, request) + str(stored.public_url)
    replies = [
        {
            "title": str(q.get("title", ""))[:80],
            "payload": str(q.get("payload") or q.get("title", "")),
        }
        for q in quick_replies or []
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
    turn = turn_of(record.id, item.to_dict()) or {}
    return {"turn": turn, "delivered": delivered}


async def add_note(
    gateway: Gateway, agent: AgentPrincipal, conversation_id: str, text: str
) -> dict[str, Any]:
    """An internal note: agents see it, the customer never does."""
    record = await _conversation(gateway, agent, conversation_id)
    item = event("note", text=text, agent_id=agent.id, agent_name=agent.name)
    await gateway.conversations.record(record, item)
    return {"turn": turn_of(conversation_id, item.to_dict())}


def _check_holder(agent: AgentPrincipal, record: ConversationRecord) -> None:
    if record.assigned_agent_id not in (None, agent.id) and not agent.supervisor:
        raise Conflict("another agent holds this conversation")


async def handback(
    gateway: Gateway, agent: AgentPrincipal, conversation_id: str, *, reset_flow: bool
) -> dict[str, Any]:
    """Give the conversation back to the bot (optionally ending its flows)."""
    record = await _conversation(gateway, agent, conversation_id)
    _check_holder(agent, record)
    bot = await _bot(gateway, record)
    outcome = await gateway.conversations.control(
        bot_service.bot_info(bot), record, "release", reset_flow=reset_flow
    )
    for item in outcome.messages:
        gateway.conversations.hub.said(record.id, item)
    updated = await _conversation(gateway, agent, conversation_id)
    return await _listed(gateway, agent, updated)


async def close(gateway: Gateway, agent: AgentPrincipal, conversation_id: str) -> dict[str, Any]:
    """End the conversation; the customer's next message starts a new session with the bot."""
    record = await _conversation(gateway, agent, conversation_id)
    _check_holder(agent, record)
    async with gateway.conversations.locked_conversation(record) as fence:
        await fence.check()
        closed = await _desk(gateway).close(agent.tenant_id, conversation_id)
    await gateway.conversations.record(
        closed, event("closed", agent_id=agent.id, agent_name=agent.name)
    )
    hub = gateway.conversations.hub
    hub.publish(agents_topic(agent.tenant_id), {"type": "inbox"})
    hub.publish(closed.id, {"type": "status", "status": "closed"})
    return await _listed(gateway, agent, closed)


# --- supervisors -----------------------------------------------------------------------------


def _supervisor(agent: AgentPrincipal) -> None:
    if not agent.supervisor:
        raise Forbidden("only a supervisor can do this")


async def agent_loads(gateway: Gateway, agent: AgentPrincipal) -> list[dict[str, Any]]:
    """Every agent of the tenant with the number of conversations they hold (supervisors)."""
    _supervisor(agent)
    load = await _desk(gateway).load(agent.tenant_id)

    def rows() -> list[dict[str, Any]]:
        with session_scope(gateway.engine) as session:
            found = session.scalars(
                select(Agent)
                .where(
                    Agent.tenant_id == agent.tenant_id,
                    Agent.role.in_(accounts.CONSOLE_ROLES),
                    Agent.disabled_at.is_(None),
                )
                .order_by(Agent.username)
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


async def assign(
    gateway: Gateway, agent: AgentPrincipal, conversation_id: str, agent_id: str
) -> dict[str, Any]:
    """A supervisor gives a conversation to an agent of the tenant."""
    _supervisor(agent)

    def check() -> None:
        with session_scope(gateway.engine) as session:
            target = accounts.get_agent(session, agent.tenant_id, agent_id)
            if target.role not in accounts.CONSOLE_ROLES or target.disabled_at is not None:
                raise InvalidInput(
                    f"{target.username} does not work in the agents' console; pick an agent, "
                    "a supervisor or an admin"
                )

    await run_in_threadpool(check)
    return await claim(gateway, agent, conversation_id, for_agent=agent_id)

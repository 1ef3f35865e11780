"""The conversation runtime: one customer message in, the bot's messages out.

Per message: the bot (cached by id and version), the conversation's lock (messages of one
conversation are processed in order, one at a time), its tracker from the store, session expiry,
NLU (skipped for ``/intent`` button payloads), the bot's vision steps for attached images, the
dialog engine, and the new events and state saved in one transaction. Outbound messages also go
to the conversation's live listeners (a web chat socket, the agents' console) through the
``Hub``.

What gateways share (``bot_gateway.conversations.sharing``): with Redis, the conversation's lock
holds across gateways (taken inside the asyncio lock, checked again right before the save) and
the hub's frames reach listeners on every gateway; embedded, both stay in this process.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from bot_gateway.conversations.actions import Actions
from bot_gateway.conversations.definition import BotDefinition, parse_definition
from bot_gateway.conversations.engine import DialogEngine, UserMessage, parse_payload
from bot_gateway.conversations.events import AgentEvent, TrackerEvent, UserEvent
from bot_gateway.conversations.sharing import Fence, HubTransport, InProcess, Sharing
from bot_gateway.conversations.store import CLOSED, ConversationRecord, TrackerStore
from bot_gateway.conversations.tracker import BOT, Tracker
from bot_gateway.conversations.understanding import Parse, Seen, VisionResult
from connectors.webchat.frames import message_frame
from core.errors import Conflict, NotReady, ParleyError
from core.logging import log_event
from core.messages import OutboundMessage
from core.metrics import counters
from core.tenants import Principal

__all__ = ["BotInfo", "ConversationRuntime", "Hub", "Inbound", "TurnOutcome"]

Parser = Callable[[Principal, str, str], Awaitable[Parse]]
"""(principal, model id or alias, text) -> what NLU made of it."""
Seer = Callable[[Principal, str, bytes], Awaitable[Seen]]
"""(principal, model id or alias, image bytes) -> what the image model made of it."""
UploadReader = Callable[[str, str, str], Awaitable[tuple[bytes, dict[str, Any]]]]
"""(tenant id, bot id, upload id) -> image bytes and the attachment's public description."""


@dataclass(frozen=True)
class BotInfo:
    """What the runtime needs of a bot row."""

    id: str
    tenant_id: str
    version: int
    status: str
    enabled: bool
    nlu_model_id: str | None
    definition: dict[str, Any]


@dataclass(frozen=True)
class Inbound:
    """A customer message as a channel hands it over."""

    sender_id: str
    text: str = ""
    payload: str | None = None  # a button's payload (``/intent{...}``)
    uploads: tuple[str, ...] = ()
    message_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # what a channel needs to reply


@dataclass
class TurnOutcome:
    """What one turn did: the bot's messages (wire dicts only at the edges: ``to_wire()``),
    the conversation's status, this turn's events and the slots after it."""

    conversation_id: str
    messages: list[OutboundMessage]
    status: str
    events: list[TrackerEvent] = field(default_factory=list)  # this turn's
    slots: dict[str, Any] = field(default_factory=dict)


class Hub:
    """Live listeners of conversations (web chat sockets, agents), by topic: a conversation id
    or ``agents_topic(tenant)``. A frame published here reaches this process's listeners and,
    through the ``transport``, those of the other gateways (``sharing``)."""

    def __init__(self, transport: HubTransport | None = None) -> None:
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self.transport: HubTransport = transport or InProcess()
        self.transport.attach(self.deliver)

    def subscribe(self, conversation_id: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        listeners = self._listeners.setdefault(conversation_id, set())
        if not listeners:
            self.transport.watch(conversation_id)
        listeners.add(queue)
        return queue

    async def ready(self, conversation_id: str) -> None:
        """Return once frames published on other gateways reach this process's listeners of
        ``conversation_id`` (at once embedded, or while Redis is down)."""
        await self.transport.ready(conversation_id)

    def unsubscribe(self, conversation_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        listeners = self._listeners.get(conversation_id)
        if listeners is not None:
            listeners.discard(queue)
            if not listeners:
                del self._listeners[conversation_id]
                self.transport.unwatch(conversation_id)

    def publish(self, conversation_id: str, frame: dict[str, Any], *, skip: object = None) -> None:
        self.deliver(conversation_id, frame, skip=skip)
        self.transport.send(conversation_id, frame)

    def deliver(self, conversation_id: str, frame: dict[str, Any], *, skip: object = None) -> None:
        """Hand ``frame`` to this process's listeners (but ``skip``)."""
        for queue in list(self._listeners.get(conversation_id, ())):
            if queue is skip:
                continue
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                log_event("hub.listener_full", conversation=conversation_id)

    def said(
        self,
        conversation_id: str,
        message: OutboundMessage,
        *,
        by: str = "bot",
        skip: object = None,
    ) -> None:
        """Tell listeners (but ``skip``) what the bot (or an agent) said (a ``message`` frame)."""
        self.publish(conversation_id, message_frame(message, by=by), skip=skip)

    def listeners(self) -> int:
        return sum(len(s) for s in self._listeners.values())


@dataclass
class _Lock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class ConversationRuntime:
    def __init__(
        self,
        *,
        store: TrackerStore,
        actions: Actions,
        parse: Parser,
        see: Seer,
        read_upload: UploadReader,
        engines_cached: int = 1000,
        sharing: Sharing | None = None,
    ) -> None:
        self.store = store
        self.actions = actions
        self.parse = parse
        self.see = see
        self.read_upload = read_upload
        self.sharing: Sharing = sharing or InProcess()
        self.hub = Hub(self.sharing.transport)
        self._engines: OrderedDict[tuple[str, int], DialogEngine] = OrderedDict()
        self._engines_cached = engines_cached
        self._locks: dict[str, _Lock] = {}

    def engine(self, bot: BotInfo) -> DialogEngine:
        """The dialog engine of this bot version (parsed and compiled once)."""
        key = (bot.id, bot.version)
        found = self._engines.get(key)
        if found is None:
            found = DialogEngine(parse_definition(bot.definition), self.actions)
            self._engines[key] = found
            while len(self._engines) > self._engines_cached:
                self._engines.popitem(last=False)
        else:
            self._engines.move_to_end(key)
        return found

    async def start(self) -> None:
        """Start what the gateways share (the fan-out's tasks); the app's lifespan calls it."""
        await self.sharing.start()

    async def stop(self) -> None:
        await self.sharing.stop()

    @asynccontextmanager
    async def locked(self, key: str) -> AsyncIterator[Fence]:
        """Messages of one conversation run one at a time, in arrival order (asyncio locks are
        fair: waiters acquire in FIFO order); across gateways, one at a time too (``sharing``:
        the fence it yields is checked right before a save)."""
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = _Lock()
        entry.users += 1
        try:
            async with entry.lock, self.sharing.locks.hold(key) as fence:
                yield fence
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._locks.pop(key, None)

    @staticmethod
    def principal(bot: BotInfo) -> Principal:
        return Principal(
            tenant_id=bot.tenant_id, key_id=f"bot:{bot.id}", scopes=frozenset({"predict"})
        )

    @staticmethod
    def check_ready(bot: BotInfo) -> None:
        if not bot.enabled:
            raise Conflict(f"bot {bot.id} is disabled; enable it with PATCH /v1/bots/{bot.id}")
        if bot.status == "training":
            raise NotReady(f"bot {bot.id} is still training its NLU; try again in a minute")
        if bot.status == "failed":
            raise NotReady(f"bot {bot.id} failed to train its NLU; see GET /v1/bots/{bot.id}")

    async def open(
        self, bot: BotInfo, engine: DialogEngine, channel: str, sender_id: str
    ) -> tuple[ConversationRecord, Tracker]:
        recent = 50 if engine.bot.action_server is not None else 0
        record, events = await self.store.open(
            bot.tenant_id, bot.id, channel, sender_id, recent=recent
        )
        tracker = engine.new_tracker(record.id, sender_id, channel)
        tracker.load_state(record.state)
        tracker.status = record.status
        tracker.events = events
        tracker.new_events = len(events)  # what is loaded; the rest is saved
        expiry = engine.bot.session.expiry_minutes * 60
        idle = time.time() - record.updated_at.timestamp()
        never_spoke = record.is_new or not record.state  # (a web chat socket opens it first)
        if tracker.status == CLOSED:  # an agent closed it: the next message starts afresh
            tracker.status = BOT
            engine.start_session(tracker)
        elif never_spoke or (expiry and idle > expiry and tracker.status == BOT):
            engine.start_session(tracker)
        return record, tracker

    async def handle(self, bot: BotInfo, channel: str, message: Inbound) -> TurnOutcome:
        """Process one customer message (see the module docstring)."""
        self.check_ready(bot)
        engine = self.engine(bot)
        # images first: an unknown upload id is refused before a conversation is opened
        uploaded = [
            await self.read_upload(bot.tenant_id, bot.id, upload_id)
            for upload_id in message.uploads
        ]
        async with self.locked(conversation_key(bot.id, channel, message.sender_id)) as fence:
            record, tracker = await self.open(bot, engine, channel, message.sender_id)
            if message.message_id is not None and message.message_id in tracker.seen:
                log_event("conversation.duplicate_message", conversation=record.id)
                return TurnOutcome(record.id, [], tracker.status, [], dict(tracker.slots))
            if message.message_id is not None:
                tracker.seen.append(message.message_id)
            loaded = tracker.new_events
            user = await self._understand(bot, engine.bot, tracker, message, uploaded)
            out = await engine.handle(tracker, user)
            if message.metadata:
                tracker.reply_metadata = dict(message.metadata)
            before = record.status
            new = tracker.events[loaded:]
            await fence.check()
            await self.store.save(
                record,
                status=tracker.status,
                state=tracker.state(),
                events=new,
                uploads=list(message.uploads),
            )
        if before != BOT or tracker.status != BOT:
            self.tell_agents(record, new, changed=before != tracker.status)
        return TurnOutcome(record.id, out, tracker.status, new, dict(tracker.slots))

    def tell_agents(
        self, record: ConversationRecord, events: list[TrackerEvent], *, changed: bool
    ) -> None:
        """Agents of the tenant see new turns of handed-off conversations, and inbox changes."""
        topic = agents_topic(record.tenant_id)
        for item in events:
            if item.event in TURN_EVENTS:
                frame = {"type": "turn", "conversation_id": record.id, "event": item.to_dict()}
                self.hub.publish(topic, frame)
        if changed:
            self.hub.publish(
                topic, {"type": "status", "conversation_id": record.id, "status": record.status}
            )
        if changed or any(isinstance(e, UserEvent) for e in events):
            self.hub.publish(topic, {"type": "inbox"})

    async def _understand(
        self,
        bot: BotInfo,
        definition: BotDefinition,
        tracker: Tracker,
        message: Inbound,
        uploaded: list[tuple[bytes, dict[str, Any]]],
    ) -> UserMessage:
        text = message.text.strip()
        payload = message.payload
        if payload is None and text.isdigit() and 1 <= int(text) <= len(tracker.options):
            payload = tracker.options[int(text) - 1]  # "2": the second option offered (SMS)
        parse = parse_payload(payload or text) if (payload or text) else None
        attachments: list[dict[str, Any]] = []
        vision: list[VisionResult] = []
        principal = self.principal(bot)
        for data, public in uploaded:
            attachments.append(public)
            if tracker.status != BOT:
                continue
            for step in definition.vision:
                try:
                    result = await self.see(principal, step.model, data)
                except ParleyError as e:
                    log_event("conversation.vision_failed", step=step.name, error=e.message)
                    counters.incr("conversation.vision_failed", bot=bot.id)
                    continue
                vision.append(VisionResult(step.name, step.model, result))
        if parse is None and text and tracker.status == BOT and bot.nlu_model_id:
            try:
                parse = await self.parse(principal, bot.nlu_model_id, text)
            except NotReady as e:
                raise NotReady(f"the bot's NLU model is not ready: {e.message}") from e
            except ParleyError as e:
                log_event("conversation.nlu_failed", bot=bot.id, error=e.message)
                counters.incr("conversation.nlu_failed", bot=bot.id)
                parse = None
        return UserMessage(
            text=text,
            parse=parse if parse is not None else Parse(),
            attachments=attachments,
            vision=vision,
            message_id=message.message_id,
        )

    async def control(
        self, bot: BotInfo, record: ConversationRecord, what: str, *, reset_flow: bool = False
    ) -> TurnOutcome:
        """``handoff`` or ``release`` a conversation (an API call or an agent); a release with
        ``reset_flow`` also ends the flows that were running."""
        engine = self.engine(bot)
        async with self.locked_conversation(record) as fence:
            record, tracker = await self.open(bot, engine, record.channel, record.sender_id)
            before, start = record.status, tracker.new_events
            if what == "handoff":
                out = engine.handoff(tracker, "requested through the API")
            else:
                if reset_flow:
                    engine.end_flows(tracker, "reset by an agent")
                out = engine.release(tracker)
            new = tracker.events[start:]
            await fence.check()
            await self.store.save(record, status=tracker.status, state=tracker.state(), events=new)
        self.tell_agents(record, new, changed=before != tracker.status)
        return TurnOutcome(record.id, out, tracker.status, new)

    async def record(self, record: ConversationRecord, item: TrackerEvent) -> None:
        """Add an event from outside the dialog (an agent's message or note, a claim), under
        the conversation's lock (fenced, as every write under it); agents see it."""
        async with self.locked_conversation(record) as fence:
            await fence.check()
            await self.store.append(record.id, [item])
        self.tell_agents(record, [item], changed=False)
        if isinstance(item, AgentEvent):
            message = {k: v for k, v in item.data.items() if v}
            if item.text:
                message["text"] = item.text
            self.hub.said(record.id, OutboundMessage.of(message), by="agent")

    def locked_conversation(self, record: ConversationRecord) -> AbstractAsyncContextManager[Fence]:
        """``locked`` for a stored conversation; check the fence right before each write."""
        return self.locked(conversation_key(record.bot_id, record.channel, record.sender_id))


TURN_EVENTS = frozenset({"user", "bot", "agent", "note", "handoff", "release", "claim", "closed"})


def conversation_key(bot_id: str, channel: str, sender_id: str) -> str:
    """What a conversation's lock is named by (one conversation per bot, channel and sender)."""
    return f"{bot_id}:{channel}:{sender_id}"


def agents_topic(tenant_id: str) -> str:
    """The hub topic the tenant's agents listen to."""
    return f"agents:{tenant_id}"

"""The improve inbox of a bot: the customers' messages its NLU got wrong or nearly wrong,
grouped by meaning, labelled into the NLU model's dataset as feedback examples, and a retrain
with them that the bot picks up when it succeeds. This closes the loop from real conversations
back to the model.

An item is one customer message (a ``user`` event; its id is the event's) of the bot's
conversations in the last ``WINDOW_DAYS`` days, typed (a button's payload is never an item), for
one reason, the first that holds:

- ``fallback``: the bot answered it with a fallback (a ``fallback`` event before the next
  customer message): NLU found no intent, or one below the bot's ``nlu.threshold``, or out of
  scope;
- ``low_confidence``: understood, but with a confidence below the bot's threshold plus
  ``LOW_BAND`` (0.4 + 0.2 = 0.6 by default);
- ``corrected``: a person had to take over: sent after the bot handed the conversation to a
  person following a fallback, before the agent's first reply (there is no "correct the
  intent" action in the agents' console, so what the customer told the person stands for it).

Items are open until labelled (an intent, or ``out_of_scope``) or dismissed; that state lives
in ``improve_items`` (an open item has no row). Open items are grouped greedily by cosine
similarity of their sentence embeddings (the platform's shared encoder, loaded once per
process): in id order, an item joins the group whose mean embedding is nearest if the cosine is
at least the threshold, else it starts a group. The same items always give the same groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot_gateway.conversations import bots as definitions
from bot_gateway.conversations.definition import parse_definition
from core.backends import BackendContext
from core.errors import Conflict, InvalidInput, NotFound
from core.evaluation import OUT_OF_SCOPE
from core.lru import Lru
from core.tables import Alias, Bot, Conversation, ConversationEvent, ImproveItem, Model
from training import registry
from training.datasets import service as datasets
from training.datasets.importers import Limits
from training.datasets.types import ParsedDataset, ParsedExample

__all__ = [
    "LOW_BAND",
    "BotNlu",
    "Group",
    "Inbox",
    "Item",
    "bot_nlu",
    "dismiss",
    "find_items",
    "group_items",
    "inbox_items",
    "intents",
    "label",
    "retrain",
    "unsure_below",
]

Reason = Literal["fallback", "low_confidence", "corrected"]
Status = Literal["open", "labelled", "dismissed", "all"]
STATUSES: tuple[str, ...] = ("open", "labelled", "dismissed", "all")
LOW_BAND = 0.2
"""Messages understood with a confidence under the bot's threshold + this are items."""
SIMILARITY = 0.6
"""Cosine similarity at or above which an item joins a group (MiniLM embeddings)."""
WINDOW_DAYS = 90
MAX_ITEMS = 500
"""The newest items of a status the inbox shows."""
BOT_ALIAS = "bot-{bot_id}"
"""The alias a bot follows after its first retrain from the inbox, when it named a model id."""


@dataclass(frozen=True)
class Item:
    id: int
    text: str
    reason: Reason
    intent: str | None  # what NLU made of it (a label given, for labelled items)
    confidence: float | None
    conversation_id: str
    channel: str
    at: datetime
    status: str


@dataclass(frozen=True)
class Group:
    id: str
    items: tuple[Item, ...]
    suggested_intent: str | None


@dataclass(frozen=True)
class BotNlu:
    """Where a bot's NLU comes from: its model (through ``alias`` when it names one) and the
    model's dataset, which labelling adds to."""

    bot: Bot
    model: Model
    alias: str | None

    @property
    def dataset_id(self) -> str:
        return self.model.dataset_id


@dataclass(frozen=True)
class Inbox:
    nlu: BotNlu
    intents: list[str]
    groups: list[Group]


def bot_nlu(session: Session, tenant_id: str, bot_id: str) -> BotNlu:
    """The bot (``NotFound`` for another tenant's) and its NLU model; ``Conflict`` when it has
    none to improve."""
    bot = definitions.get_bot(session, tenant_id, bot_id)
    name = bot.nlu_model_id
    if name is None:
        raise Conflict(
            f"bot {bot_id} has no NLU model to improve; give it one (nlu.model, nlu.dataset or "
            f"nlu.intents) with PUT /v1/bots/{bot_id}"
        )
    alias = session.get(Alias, (tenant_id, name))
    model = registry.resolve(session, tenant_id, name)
    if model.task != "intent":
        raise Conflict(f"the bot's NLU model {model.id} is a {model.task} model, not an intent one")
    return BotNlu(bot=bot, model=model, alias=alias.name if alias is not None else None)


def unsure_below(bot: Bot) -> float:
    """The confidence under which an understood message is a ``low_confidence`` item."""
    return round(parse_definition(bot.definition).nlu.threshold + LOW_BAND, 4)


def intents(nlu: BotNlu) -> list[str]:
    """The intents an item can be labelled with: the bot's model's (out of scope aside)."""
    return sorted(set(nlu.model.labels or []) - {OUT_OF_SCOPE})


def inbox_items(
    session: Session,
    bot: Bot,
    *,
    status: str = "open",
    now: datetime | None = None,
    limit: int | None = MAX_ITEMS,
) -> list[Item]:
    """The bot's items of ``status`` (or ``all``), the newest ``limit`` (None: all), in id
    order."""
    if status not in STATUSES:
        raise InvalidInput(
            f"status: {status!r}; use one of {', '.join(STATUSES)}",
            details=[{"field": "status", "message": f"use one of {', '.join(STATUSES)}"}],
        )
    since = (now or datetime.now(UTC)) - timedelta(days=WINDOW_DAYS)
    rows = session.execute(
        select(
            ConversationEvent.id,
            ConversationEvent.conversation_id,
            ConversationEvent.kind,
            ConversationEvent.data,
            ConversationEvent.created_at,
            Conversation.channel,
        )
        .join(Conversation, Conversation.id == ConversationEvent.conversation_id)
        .where(
            Conversation.bot_id == bot.id,
            Conversation.tenant_id == bot.tenant_id,
            ConversationEvent.created_at >= since,
            ConversationEvent.kind.in_(("user", "fallback", "handoff", "agent", "session_started")),
        )
        .order_by(ConversationEvent.conversation_id, ConversationEvent.id)
    ).all()
    states = {
        row.event_id: row
        for row in session.scalars(select(ImproveItem).where(ImproveItem.bot_id == bot.id))
    }
    found = find_items(rows, unsure_below(bot))
    items = []
    for item in found:
        state = states.get(item.id)
        item_status = state.status if state is not None else "open"
        if status not in ("all", item_status):
            continue
        if state is not None and state.intent is not None:
            item = replace(item, status=item_status, intent=state.intent, confidence=None)
        else:
            item = replace(item, status=item_status)
        items.append(item)
    items.sort(key=lambda i: i.id)
    return items if limit is None else items[-limit:]


def find_items(rows: Sequence[Any], unsure_below: float) -> list[Item]:
    """The items among a bot's events, given as ``(id, conversation_id, kind, data,
    created_at, channel)`` ordered by conversation then id (see the module docstring for the
    reasons); open, in that order."""
    items: list[Item] = []
    message: Item | None = None  # the customer's last message
    reason: Reason | None = None  # why it is an item so far (a fallback may still follow)
    conversation = None
    fallback_seen = handed_over = agent_replied = False
    for event_id, conv_id, kind, data, created_at, channel in rows:
        if conv_id != conversation or kind == "user":
            if message is not None and reason is not None:
                items.append(replace(message, reason=reason))
            message, reason = None, None
        if conv_id != conversation:
            conversation = conv_id
            fallback_seen = handed_over = agent_replied = False
        if kind == "session_started":
            fallback_seen = handed_over = agent_replied = False
        elif kind == "fallback":
            fallback_seen = True
            reason = "fallback" if message is not None else None
        elif kind == "handoff":
            handed_over = fallback_seen
        elif kind == "agent":
            agent_replied = True
        elif kind == "user":
            message = _item(event_id, conv_id, data, created_at, channel)
            if message is None:
                continue
            if handed_over and not agent_replied:
                reason = "corrected"
            elif (
                message.intent not in (None, OUT_OF_SCOPE)
                and message.confidence is not None
                and message.confidence < unsure_below
            ):
                reason = "low_confidence"
    if message is not None and reason is not None:
        items.append(replace(message, reason=reason))
    return items


def _item(
    event_id: int, conv_id: str, data: dict[str, Any], created_at: datetime, channel: str
) -> Item | None:
    text = str(data.get("text") or "").strip()
    parse = data.get("parse_data") or {}
    if not text or parse.get("payload") is not None:
        return None  # an image alone, or a button's payload: nothing typed to learn from
    intent = parse.get("intent") or {}
    name = intent.get("name") if isinstance(intent, dict) else None
    confidence = intent.get("confidence") if isinstance(intent, dict) else None
    return Item(
        id=int(event_id),
        text=text,
        reason="fallback",  # find_items gives the reason
        intent=str(name) if name else None,
        confidence=float(confidence) if isinstance(confidence, int | float) else None,
        conversation_id=conv_id,
        channel=channel,
        at=created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC),
        status="open",
    )


# --- grouping ---------------------------------------------------------------------------------


def group_items(
    items: Sequence[Item], context: BackendContext, *, similarity: float = SIMILARITY
) -> list[Group]:
    """Items grouped by meaning (greedy, in id order; see the module docstring), the biggest
    groups first."""
    if not items:
        return []
    vectors = _embeddings([item.text for item in items], context)
    members: list[list[int]] = []
    sums = np.zeros((len(items), vectors.shape[1]), dtype=np.float64)  # per group
    centroids = np.zeros_like(sums)  # the sums, normalised
    for i, vector in enumerate(vectors):
        scores = centroids[: len(members)] @ vector
        best = int(np.argmax(scores)) if len(members) else -1
        if best < 0 or scores[best] < similarity:
            best = len(members)
            members.append([])
        members[best].append(i)
        sums[best] += vector
        centroids[best] = sums[best] / max(float(np.linalg.norm(sums[best])), 1e-9)
    groups = [
        Group(
            id=f"group-{items[idx[0]].id}",
            items=tuple(items[i] for i in idx),
            suggested_intent=_suggest(items[i] for i in idx),
        )
        for idx in members
    ]
    groups.sort(key=lambda g: (-len(g.items), g.items[0].id))
    return groups


CACHED_TEXTS = 20_000
"""Embeddings kept per process (about 1.5 kB each), so an inbox opened again encodes only its
new messages."""
_cache: Lru[str, np.ndarray] = Lru(CACHED_TEXTS)


def _embeddings(texts: Sequence[str], context: BackendContext) -> np.ndarray:
    """The shared encoder's embeddings of ``texts`` (unit length), the recent ones cached."""
    from nlu.encoder import get_encoder

    known = {t: v for t in set(texts) if (v := _cache.get(t)) is not None}
    new = sorted(set(texts) - set(known))
    if new:
        encoder = get_encoder(
            cache_dir=context.cache_dir, device=context.device, threads=context.threads
        )
        fresh = dict(zip(new, encoder.encode(new), strict=True))
        known.update(fresh)
        for text, vector in fresh.items():
            _cache.put(text, vector)
    return np.stack([known[t] for t in texts])


def _suggest(items: Any) -> str | None:
    """The intent NLU gave most of the group's messages (out of scope aside); ties by name."""
    counts = Counter(i.intent for i in items if i.intent not in (None, OUT_OF_SCOPE))
    if not counts:
        return None
    return min(counts, key=lambda name: (-counts[name], name))


# --- labelling and retraining -----------------------------------------------------------------


def _chosen(session: Session, nlu: BotNlu, item_ids: Sequence[int]) -> list[Item]:
    """The bot's items with these ids, whatever their state; ``NotFound`` naming those that
    are not."""
    wanted = set(item_ids)
    found = {
        i.id: i for i in inbox_items(session, nlu.bot, status="all", limit=None) if i.id in wanted
    }
    missing = sorted(wanted - set(found))
    if missing:
        raise NotFound(
            f"no items {', '.join(map(str, missing[:20]))} in the improve inbox of bot "
            f"{nlu.bot.id}; list them with GET /v1/bots/{nlu.bot.id}/improve"
        )
    return [found[i] for i in sorted(found)]


def _set_state(
    session: Session, nlu: BotNlu, items: Sequence[Item], status: str, intent: str | None
) -> None:
    for item in items:
        row = session.get(ImproveItem, item.id)
        if row is None:
            row = ImproveItem(event_id=item.id, tenant_id=nlu.bot.tenant_id, bot_id=nlu.bot.id)
            session.add(row)
        row.status, row.intent = status, intent
        row.dataset_id = nlu.dataset_id if status == "labelled" else None
    session.flush()


def label(
    session: Session,
    nlu: BotNlu,
    item_ids: Sequence[int],
    *,
    intent: str | None,
    out_of_scope: bool,
    limits: Limits,
) -> int:
    """Add the items' texts to the NLU model's dataset as feedback examples of ``intent`` (or
    ``out_of_scope``) and mark them labelled; the number of examples added (a text already
    there with that label is not added twice)."""
    if out_of_scope == (intent is not None):
        raise InvalidInput(
            'give either "intent" or "out_of_scope": true',
            details=[{"field": "intent", "message": "give an intent or out_of_scope: true"}],
        )
    target = OUT_OF_SCOPE if out_of_scope else str(intent)
    known = set(nlu.model.labels or []) | set(
        datasets.get_dataset(session, nlu.bot.tenant_id, nlu.dataset_id).label_counts
    )
    if not out_of_scope and target not in known:
        names = ", ".join(sorted(known - {OUT_OF_SCOPE}))
        raise InvalidInput(
            f"intent {target!r} is not one of the model's; use one of {names}, or add "
            f"examples of it to dataset {nlu.dataset_id} first",
            details=[{"field": "intent", "message": f"use one of {names}"}],
        )
    items = _chosen(session, nlu, item_ids)
    parsed = ParsedDataset(
        [ParsedExample(line=n, text=item.text, label=target) for n, item in enumerate(items, 1)]
    )
    _, added, _ = datasets.append_examples(
        session, nlu.bot.tenant_id, nlu.dataset_id, parsed, limits, source="feedback"
    )
    _set_state(session, nlu, items, "labelled", target)
    return added


def dismiss(session: Session, nlu: BotNlu, item_ids: Sequence[int]) -> int:
    """Mark the items dismissed (nothing is added); how many."""
    items = _chosen(session, nlu, item_ids)
    _set_state(session, nlu, items, "dismissed", None)
    return len(items)


def retrain(session: Session, nlu: BotNlu) -> Model:
    """A queued model like the bot's (same dataset, backend and params) trained also on the
    feedback examples, promoted to the bot's alias when it succeeds. A bot that named its model
    by id is moved, once, onto alias ``bot-<id>`` (pointing at its current model meanwhile), so
    that it keeps answering until the new model is ready and then uses it."""
    alias = nlu.alias
    if alias is None:
        alias = BOT_ALIAS.format(bot_id=nlu.bot.id)
        registry.set_alias(session, nlu.bot.tenant_id, alias, nlu.model.id)
        data = dict(nlu.bot.definition)
        data["nlu"] = {**(data.get("nlu") or {}), "model": alias, "dataset": None}
        definitions.update_bot(
            session, nlu.bot, data=data, nlu=definitions.Nlu(alias, training=False)
        )
    base = nlu.model.name.removesuffix(" + feedback")
    return registry.create_model(
        session,
        tenant_id=nlu.bot.tenant_id,
        dataset_id=nlu.dataset_id,
        name=f"{base} + feedback",
        backend=nlu.model.backend,
        params={**(nlu.model.params or {}), "with_feedback": True},
        alias=alias,
    )

"""Bots for the gateway: create one from its definition (training its inline NLU first),
replace the definition (a new version), list, enable or disable, read versions (one, or the
diff of two), check a definition without saving it, delete with its uploads. Definitions are
checked and stored by ``bot_gateway.conversations.bots``; this module runs that with the
gateway's engine, store, limits and train queue."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot_gateway.conversations import bots as definitions
from bot_gateway.conversations.definition import (
    BotDefinition,
    InvalidBotDefinition,
    Problem,
    read_definition_text,
)
from bot_gateway.conversations.events import BotEvent, UserEvent
from bot_gateway.conversations.runtime import Inbound
from bot_gateway.conversations.storytest import (
    StoryCase,
    TestReport,
    TurnReply,
    UserTurn,
    run_cases,
)
from bot_gateway.deps import Gateway
from bot_gateway.services.uploads import store_upload
from core.db import session_scope
from core.documents import document_limits
from core.errors import NotFound
from core.tables import Bot, BotVersion

__all__ = [
    "TEST_CHANNEL",
    "create_bot",
    "delete_bot",
    "diff_versions",
    "list_bots",
    "run_story_tests",
    "set_enabled",
    "update_bot",
    "validate_definition",
    "version",
    "versions",
]


async def create_bot(
    gateway: Gateway,
    tenant_id: str,
    data: dict[str, Any],
    *,
    nlu_yaml: str | None = None,
    unsupported: list[str] | None = None,
) -> Bot:
    """A new bot from its definition; its inline NLU examples (or ``nlu_yaml``, a Rasa
    project's) are queued for training first."""
    return await run_in_threadpool(
        _save_new, gateway, tenant_id, data, nlu_yaml=nlu_yaml, unsupported=unsupported
    )


def _save_new(
    gateway: Gateway,
    tenant_id: str,
    data: dict[str, Any],
    *,
    nlu_yaml: str | None = None,
    unsupported: list[str] | None = None,
) -> Bot:
    data, nlu = _checked(gateway, tenant_id, data, nlu_yaml=nlu_yaml)
    with session_scope(gateway.engine) as session:
        bot = definitions.create_bot(
            session, tenant_id=tenant_id, data=data, nlu=nlu, unsupported=unsupported
        )
    if nlu.training and nlu.model_id:
        gateway.queue.submit(nlu.model_id)
    return bot


def _checked(
    gateway: Gateway, tenant_id: str, data: dict[str, Any], *, nlu_yaml: str | None = None
) -> tuple[dict[str, Any], definitions.Nlu]:
    """A definition checked (422 naming the path), its NLU prepared (examples stored as a
    dataset, a model queued), and the data to store naming that model."""
    definition = definitions.check_definition(
        gateway.engine, gateway.settings, tenant_id=tenant_id, data=data
    )
    nlu = definitions.prepare_nlu(
        gateway.engine,
        gateway.store,
        gateway.limits,
        tenant_id=tenant_id,
        bot=definition,
        nlu_yaml=nlu_yaml,
    )
    return _with_model(data, definition, nlu), nlu


def _with_model(data: dict[str, Any], bot: BotDefinition, nlu: definitions.Nlu) -> dict[str, Any]:
    """The stored definition names the model it parses with (trained from its examples)."""
    if nlu.model_id is None or bot.nlu.model == nlu.model_id:
        return data
    return {**data, "nlu": {**(data.get("nlu") or {}), "model": nlu.model_id, "dataset": None}}


async def update_bot(gateway: Gateway, tenant_id: str, bot_id: str, data: dict[str, Any]) -> Bot:
    """Replace a bot's definition: a new version (the old ones stay readable)."""

    def update() -> Bot:
        with session_scope(gateway.engine) as session:
            definitions.get_bot(session, tenant_id, bot_id)
        checked, nlu = _checked(gateway, tenant_id, data)
        with session_scope(gateway.engine) as session:
            bot = definitions.get_bot(session, tenant_id, bot_id)
            definitions.update_bot(session, bot, data=checked, nlu=nlu)
        if nlu.training and nlu.model_id:
            gateway.queue.submit(nlu.model_id)
        return bot

    return await run_in_threadpool(update)


def list_bots(session: Session, tenant_id: str) -> list[Bot]:
    """The tenant's bots, oldest first, their status brought up to date."""
    rows = session.scalars(select(Bot).where(Bot.tenant_id == tenant_id).order_by(Bot.created_at))
    out = []
    for bot in rows:
        definitions.refresh_status(session, bot)
        out.append(bot)
    return out


def set_enabled(session: Session, tenant_id: str, bot_id: str, enabled: bool) -> Bot:
    """Enable or disable a bot: a disabled bot answers no channel."""
    bot = definitions.get_bot(session, tenant_id, bot_id)
    bot.enabled = enabled
    session.flush()
    return bot


def versions(session: Session, tenant_id: str, bot_id: str) -> list[BotVersion]:
    """A bot's definitions, oldest first."""
    definitions.get_bot(session, tenant_id, bot_id)
    rows = session.scalars(
        select(BotVersion).where(BotVersion.bot_id == bot_id).order_by(BotVersion.version)
    )
    return list(rows)


def version(session: Session, tenant_id: str, bot_id: str, number: int) -> BotVersion:
    """One version of a bot's definition (``NotFound`` naming the versions there are)."""
    definitions.get_bot(session, tenant_id, bot_id)
    row = session.get(BotVersion, (bot_id, number))
    if row is None:
        last = session.scalar(
            select(BotVersion.version)
            .where(BotVersion.bot_id == bot_id)
            .order_by(BotVersion.version.desc())
        )
        raise NotFound(f"bot {bot_id} has no version {number}; its versions are 1 to {last}")
    return row


def definition_yaml(definition: dict[str, Any]) -> str:
    """A definition as the YAML a person would write (keys in their order)."""
    return yaml.safe_dump(definition, sort_keys=False, allow_unicode=True, width=100)


def diff_versions(
    session: Session, tenant_id: str, bot_id: str, *, old: int | None, new: int | None
) -> tuple[int, int, str]:
    """(old, new, the unified diff from version ``old`` to version ``new`` of the
    definition's YAML); ``new`` defaults to the latest version, ``old`` to the one before."""
    if new is None:
        new = definitions.get_bot(session, tenant_id, bot_id).version
    if old is None:
        old = max(1, new - 1)
    before = definition_yaml(version(session, tenant_id, bot_id, old).definition)
    after = definition_yaml(version(session, tenant_id, bot_id, new).definition)
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"version {old}",
        tofile=f"version {new}",
    )
    return old, new, "".join(lines)


async def validate_definition(
    gateway: Gateway, tenant_id: str, definition: dict[str, Any] | str
) -> list[Problem]:
    """The problems of a definition (an object, or YAML/JSON text), with their paths, as
    creating or replacing a bot would report them; nothing is saved or trained."""

    def check() -> list[Problem]:
        try:
            data = definition
            if isinstance(data, str):
                data = read_definition_text(data, document_limits(gateway.settings.limits))
            definitions.check_definition(
                gateway.engine, gateway.settings, tenant_id=tenant_id, data=data
            )
        except InvalidBotDefinition as e:
            return e.problems
        return []

    return await run_in_threadpool(check)


def delete_bot(gateway: Gateway, session: Session, tenant_id: str, bot_id: str) -> None:
    """Delete a bot with its conversations and uploads."""
    bot = definitions.get_bot(session, tenant_id, bot_id)
    gateway.store.delete_prefix(f"uploads/{bot.tenant_id}/{bot.id}")
    session.delete(bot)


TEST_CHANNEL = "test"
"""The channel story tests converse on (their conversations are forgotten afterwards)."""


async def run_story_tests(
    gateway: Gateway,
    tenant_id: str,
    bot_id: str,
    cases: Sequence[StoryCase],
    *,
    files: Mapping[str, bytes],
) -> TestReport:
    """Run story tests against the bot with its real NLU, vision and actions (``files``: the
    images the stories name); each story is a fresh conversation on channel ``test``,
    forgotten afterwards."""

    def load() -> Bot:
        with session_scope(gateway.engine) as session:
            return definitions.get_bot(session, tenant_id, bot_id)

    bot = await run_in_threadpool(load)
    info = definitions.bot_info(bot)
    runtime = gateway.conversations
    runtime.check_ready(info)
    senders: set[str] = set()

    async def converse(sender_id: str, turn: UserTurn) -> TurnReply:
        senders.add(sender_id)
        uploads: tuple[str, ...] = ()
        if turn.image_bytes is not None:
            stored = await store_upload(gateway, bot, turn.image_bytes, turn.image or "image")
            uploads = (stored.upload_id,)
        outcome = await runtime.handle(
            info,
            TEST_CHANNEL,
            Inbound(sender_id=sender_id, text=turn.text, payload=turn.payload, uploads=uploads),
        )
        bot_events = [e for e in outcome.events if isinstance(e, BotEvent)]
        user = next((e for e in outcome.events if isinstance(e, UserEvent)), None)
        parse = user.parse_data if user is not None else {}
        return TurnReply(
            messages=outcome.messages,
            responses=[e.response for e in bot_events],
            slots=outcome.slots,
            status=outcome.status,
            intent=(parse.get("intent") or {}).get("name"),
            entities=parse.get("entities"),
        )

    try:
        report = await run_cases(cases, converse, files=files)
    finally:
        for sender in senders:
            record, _ = await runtime.store.open(bot.tenant_id, bot.id, TEST_CHANNEL, sender)
            for key in await runtime.store.delete(bot.tenant_id, record.id):
                await run_in_threadpool(gateway.store.delete_prefix, key)
    return report

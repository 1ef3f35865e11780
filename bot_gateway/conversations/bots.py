"""Bots as tenant data: create (with NLU training when the definition brings examples),
version on every change, look up by id or widget key, enable/disable, delete."""

from __future__ import annotations

import csv
import io
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot_gateway.conversations.definition import BotDefinition, parse_definition
from core.db import session_scope
from core.errors import InvalidInput, NotFound
from core.ids import new_id
from core.storage import ArtifactStore
from core.tables import Bot, BotVersion, Model
from training import registry
from training.datasets import service
from training.datasets.importers import Limits

__all__ = ["Nlu", "create_bot", "get_bot", "prepare_nlu", "refresh_status", "update_bot"]

WIDGET_KEY_PREFIX = "wk_"
RASA_PLACEHOLDER = "__rasa_import__"


@dataclass(frozen=True)
class Nlu:
    """The model a bot parses with, and whether it is still training."""

    model_id: str | None
    training: bool


def prepare_nlu(
    engine: Engine,
    store: ArtifactStore,
    limits: Limits,
    *,
    tenant_id: str,
    bot: BotDefinition,
    nlu_yaml: str | None = None,
) -> Nlu:
    """Resolve or train the bot's NLU: ``nlu.model`` is used as it is; ``nlu.dataset`` is
    trained; inline ``nlu.intents`` (or a Rasa ``nlu.yml``) become a dataset that is trained.
    The caller submits the returned model to the train queue."""
    cfg = bot.nlu
    if nlu_yaml is None and cfg.model is not None:
        return Nlu(cfg.model, training=False)
    dataset_id = cfg.dataset if cfg.dataset not in (None, RASA_PLACEHOLDER) else None
    if dataset_id is None:
        if nlu_yaml is not None:
            data, filename = nlu_yaml.encode(), "nlu.yml"
        elif cfg.intents:
            data, filename = _intents_csv(cfg.intents), "intents.csv"
        else:
            return Nlu(None, training=False)
        with session_scope(engine) as session:
            dataset = service.create_dataset(
                session,
                store,
                tenant_id=tenant_id,
                name=f"{bot.name} (bot NLU)",
                dataset_type="text-intent",
                filename=filename,
                data=data,
            )
            dataset_id = dataset.id
        service.run_import(engine, store, dataset_id, limits)
    with session_scope(engine) as session:
        dataset = service.get_dataset(session, tenant_id, dataset_id)
        if dataset.status != "ready":
            raise InvalidInput(
                f"the bot's NLU data could not be imported: {dataset.status_message}",
                dataset_id=dataset_id,
            )
        model = registry.create_model(
            session, tenant_id=tenant_id, dataset_id=dataset_id, name=f"{bot.name} NLU"
        )
        return Nlu(model.id, training=True)


def _intents_csv(intents: dict[str, list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    for intent, examples in intents.items():
        for text in examples:
            writer.writerow([text, intent])
    return out.getvalue().encode()


def create_bot(
    session: Session,
    *,
    tenant_id: str,
    data: dict[str, Any],
    nlu: Nlu,
    unsupported: list[str] | None = None,
) -> Bot:
    bot = Bot(
        id=new_id("bot"),
        tenant_id=tenant_id,
        name=str(data.get("name")),
        version=1,
        definition=data,
        status="training" if nlu.training else "ready",
        enabled=True,
        nlu_model_id=nlu.model_id,
        widget_key=WIDGET_KEY_PREFIX + secrets.token_urlsafe(24),
        unsupported=unsupported,
    )
    session.add(bot)
    session.add(BotVersion(bot_id=bot.id, version=1, definition=data))
    session.flush()
    return bot


def update_bot(session: Session, bot: Bot, *, data: dict[str, Any], nlu: Nlu) -> Bot:
    bot.version += 1
    bot.definition = data
    bot.name = str(data.get("name"))
    bot.nlu_model_id = nlu.model_id
    bot.status = "training" if nlu.training else "ready"
    bot.status_message = None
    session.add(BotVersion(bot_id=bot.id, version=bot.version, definition=data))
    session.flush()
    return bot


def get_bot(session: Session, tenant_id: str, bot_id: str) -> Bot:
    bot = session.get(Bot, bot_id)
    if bot is None or bot.tenant_id != tenant_id:
        raise NotFound(f"bot {bot_id} not found; list your bots with GET /v1/bots")
    refresh_status(session, bot)
    return bot


def bot_by_widget_key(session: Session, key: str) -> Bot | None:
    if not key.startswith(WIDGET_KEY_PREFIX):
        return None
    return session.scalar(select(Bot).where(Bot.widget_key == key))


def refresh_status(session: Session, bot: Bot) -> None:
    """A bot whose NLU was training becomes ``ready`` (or ``failed``) with its model."""
    if bot.status != "training" or bot.nlu_model_id is None:
        return
    model = session.get(Model, bot.nlu_model_id)
    if model is None:
        bot.status, bot.status_message = "failed", "its NLU model was deleted"
    elif model.status == "succeeded":
        bot.status, bot.status_message = "ready", None
    elif model.status in ("failed", "cancelled"):
        bot.status = "failed"
        bot.status_message = f"NLU training {model.status}: {model.failure_message or ''}".strip()


def definition_of(bot: Bot) -> BotDefinition:
    return parse_definition(bot.definition)

"""Bots as tenant data: check a definition against the tenant (the models, aliases and
datasets it names) and the server (action URLs), create (with NLU training when the definition
brings examples), version on every change, look up by id or widget key, enable/disable,
delete."""

from __future__ import annotations

import csv
import io
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot_gateway.conversations.definition import (
    BotDefinition,
    HttpAction,
    InvalidBotDefinition,
    Problem,
    parse_definition,
)
from bot_gateway.conversations.runtime import BotInfo
from core.backends import builtin_models
from core.db import session_scope
from core.errors import InvalidInput, NotFound
from core.ids import new_id
from core.outbound import OutboundGuard
from core.settings import Settings
from core.storage import ArtifactStore
from core.tables import Alias, Bot, BotVersion, Dataset, Model
from training import registry
from training.datasets import service
from training.datasets.importers import Limits
from training.datasets.types import DATASET_TYPES

__all__ = [
    "Nlu",
    "check_definition",
    "create_bot",
    "get_bot",
    "prepare_nlu",
    "refresh_status",
    "update_bot",
]

WIDGET_KEY_PREFIX = "wk_"
RASA_PLACEHOLDER = "__rasa_import__"


VISION_TASKS = frozenset(
    {*(t.task for t in DATASET_TYPES.values() if t.modality == "image"), "ocr"}
)
"""The tasks a vision step can run: the image dataset types' and the built-in OCR."""


def check_definition(
    engine: Engine, settings: Settings, *, tenant_id: str, data: dict[str, Any]
) -> BotDefinition:
    """``parse_definition`` and what depends on the tenant and the server: every model (id or
    alias), built-in model and dataset the bot names is the tenant's own and fits where it is
    used, and no action URL has a refused IP address for its host. ``InvalidBotDefinition``
    lists each problem with its path; another tenant's ids are "not found" like unknown ones."""
    bot = parse_definition(data)
    with session_scope(engine) as session:
        errors = _reference_problems(session, tenant_id, bot)
    errors += _url_problems(bot, OutboundGuard.from_settings(settings))
    if errors:
        raise InvalidBotDefinition(errors)
    return bot


def _reference_problems(session: Session, tenant_id: str, bot: BotDefinition) -> list[Problem]:
    problems: list[Problem] = []
    nlu = bot.nlu
    if nlu.model is not None:
        problems += _model_problem(
            session,
            tenant_id,
            path="nlu.model",
            name=nlu.model,
            tasks={"intent"},
            hint="the bot's NLU needs an intent model (train one on a text-intent dataset)",
        )
    if nlu.entities_model is not None:
        problems += _model_problem(
            session,
            tenant_id,
            path="nlu.entities_model",
            name=nlu.entities_model,
            tasks={"entities"},
            hint="give prebuilt-entities or a model trained on a text-entities dataset",
        )
    if nlu.dataset not in (None, RASA_PLACEHOLDER):
        dataset = session.get(Dataset, nlu.dataset)
        if dataset is None or dataset.tenant_id != tenant_id:
            problems.append(Problem("nlu.dataset", f'no dataset "{nlu.dataset}" in this tenant'))
        elif DATASET_TYPES[dataset.type].task != "intent":
            problems.append(
                Problem(
                    "nlu.dataset",
                    f'dataset "{nlu.dataset}" is of type {dataset.type}; the bot\'s NLU trains '
                    "on a text-intent dataset",
                )
            )
    for i, step in enumerate(bot.vision):
        problems += _model_problem(
            session,
            tenant_id,
            path=f"vision[{i}].model",
            name=step.model,
            tasks=VISION_TASKS,
            hint="a vision step runs an image model (classification, detection) or prebuilt-ocr",
        )
    return problems


def _model_problem(
    session: Session,
    tenant_id: str,
    *,
    path: str,
    name: str,
    tasks: set[str] | frozenset[str],
    hint: str,
) -> list[Problem]:
    """The problem with the model ``name`` (an id, an alias or a built-in) at ``path``."""
    if name in builtin_models:
        task = builtin_models.get(name).task
        model = None
    else:
        model_id = name
        if not name.startswith("mdl_"):
            alias = session.get(Alias, (tenant_id, name))
            model_id = alias.model_id if alias is not None else ""
        model = session.get(Model, model_id) if model_id else None
        if model is None or model.tenant_id != tenant_id:
            return [Problem(path, f'no model "{name}" (or alias) in this tenant')]
        task = model.task
    if task not in tasks:
        article = "an" if task[0] in "aeiou" else "a"
        return [Problem(path, f'model "{name}" is {article} {task} model; {hint}')]
    if model is not None and model.status in ("failed", "cancelled"):
        return [
            Problem(
                path,
                f'model "{name}" {model.status}; point at a model that trained (or train it again)',
            )
        ]
    return []


def _url_problems(bot: BotDefinition, guard: OutboundGuard) -> list[Problem]:
    """Action URLs whose host is an IP address the server will not call."""
    urls = [
        (f"actions.{name}.url", action.url)
        for name, action in bot.actions.items()
        if isinstance(action, HttpAction)
    ]
    if bot.action_server is not None:
        urls.append(("action_server.url", bot.action_server.url))
    return [
        Problem(path, problem)
        for path, url in urls
        if (problem := guard.literal_refusal(url)) is not None
    ]


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


def bot_info(bot: Bot) -> BotInfo:
    return BotInfo(
        id=bot.id,
        tenant_id=bot.tenant_id,
        version=bot.version,
        status=bot.status,
        enabled=bot.enabled,
        nlu_model_id=bot.nlu_model_id,
        definition=bot.definition,
    )

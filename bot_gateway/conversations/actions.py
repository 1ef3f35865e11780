"""Runs a bot's actions: its HTTP and ``set_slot`` actions, and the custom actions of its
rasa-sdk action server. ``domain_of(bot)`` is the Rasa domain that server is sent.

``Actions(client).run(name, bot=..., tracker=...)`` never raises for a remote failure and
never waits longer than the action's ``timeout_s``: a failure comes back as
``ActionResult(error="<what went wrong>", error_response="<response to send, or None>")``
with no events and no responses. The gateway's ``client`` goes through ``core.outbound``'s
``OutboundTransport``: a call to a private or loopback address that the operator has not
allowed is such a failure too (the action's ``on_error``, logged and counted as
``outbound.refused``), sent nowhere.

Templates: ``{slot}`` (and ``{sender_id}``, ``{bot_name}``) in an HTTP action's ``url``,
``headers`` and ``body`` strings, and in ``set_slot`` values. Values put into a URL are
percent-encoded; a string that is just ``"{slot}"`` keeps the slot's value as it is (a number
stays a number in a JSON body). A slot that is not set makes the action fail before any
request is sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from bot_gateway.conversations.definition import (
    ActionStep,
    AskStep,
    BotDefinition,
    BranchStep,
    HttpAction,
    SetSlotAction,
    Slot,
)
from bot_gateway.conversations.events import SlotEvent, TrackerEvent, event
from bot_gateway.conversations.tracker import ActionResult, Tracker
from core.errors import OutboundRefused
from core.logging import log_event
from core.secrets import SecretBox, decrypt_value

__all__ = ["RASA_VERSION", "Actions", "domain_of"]

RASA_VERSION = "3.21.1"  # the ``version`` an action server is told it is talking to
APPLIED_EVENTS = frozenset({"slot", "reset_slots", "followup", "active_loop", "restart", "bot"})
DROPPED_EVENTS = frozenset(
    {
        "user", "action", "session_started", "session_ended", "action_execution_rejected",
        "loop_interrupted", "form_validation", "reminder", "cancel_reminder", "export", "pause",
        "resume", "undo", "rewind", "user_featurization", "agent",
    }
)  # fmt: skip
SLOT_TYPES = {"number": "float"}  # Parley slot type -> Rasa slot type, where they differ
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MISSING = object()


class _Failed(Exception):
    """An action that cannot complete; ``str(e)`` is the sentence for ``ActionResult.error``."""


class _SlotNotSet(Exception):
    def __init__(self, slot: str) -> None:
        super().__init__(slot)
        self.slot = slot


class Actions:
    """The ``ActionRunner`` that calls out over ``client`` (an injected ``httpx.AsyncClient``)."""

    def __init__(self, client: httpx.AsyncClient, *, secrets: SecretBox | None = None) -> None:
        self._client = client
        self._secrets = secrets or SecretBox()  # header values are stored encrypted

    def _headers(self, headers: dict[str, str]) -> dict[str, str]:
        return {key: decrypt_value(self._secrets, value) for key, value in headers.items()}

    async def run(
        self,
        name: str,
        *,
        bot: BotDefinition,
        tracker: Tracker,
        extra_events: list[TrackerEvent] | None = None,
    ) -> ActionResult:
        """Run action ``name`` of ``bot``. ``extra_events`` (slot candidates for a validation
        action) are appended to the tracker an action server sees."""
        action = bot.actions.get(name)
        if isinstance(action, HttpAction):
            return await self._http(name, action, bot=bot, tracker=tracker)
        if isinstance(action, SetSlotAction):
            return _set_slots(name, action, bot=bot, tracker=tracker)
        if bot.is_custom_action(name):
            return await self._custom(name, bot=bot, tracker=tracker, extra_events=extra_events)
        return ActionResult(
            error=f"unknown action '{name}': it is not one of the bot's `actions` and the bot "
            "has no `action_server` that serves it"
        )

    async def _http(
        self, name: str, action: HttpAction, *, bot: BotDefinition, tracker: Tracker
    ) -> ActionResult:
        values = _template_values(bot, tracker)
        try:
            url = _fill_url(action.url, values)
            filled = _fill(self._headers(action.headers), values)
            headers = {key: str(v) for key, v in filled.items()}
            body = _fill(action.body, values)
        except _SlotNotSet as e:
            error = f"slot {e.slot} is not set, so action '{name}' cannot build its request"
            return _failure("action.http_failed", error, action.on_error, action=name)
        where = f"{action.method} {_public_url(url)}"
        status: int | None = None
        try:
            if not url.startswith(("http://", "https://")):
                raise _Failed("is not an http:// or https:// URL")
            response = await self._send(
                action.method, url, timeout_s=action.timeout_s, headers=headers, json=body
            )
            status = response.status_code
            if not response.is_success:
                raise _Failed(f"answered {status} {response.reason_phrase}")
            data = _json(response) if action.response else None
        except _Failed as e:
            fallback = (action.on_not_found if status == 404 else None) or action.on_error
            error = f"action '{name}': {where} {e}"
            return _failure("action.http_failed", error, fallback, action=name, url=where)
        events = [
            event("slot", name=slot, value=_field(data, path, action=name, slot=slot)).to_dict()
            for slot, path in action.response.items()
        ]
        responses = [{"response": action.reply}] if action.reply else []
        return ActionResult(events=events, responses=responses)

    async def _custom(
        self,
        name: str,
        *,
        bot: BotDefinition,
        tracker: Tracker,
        extra_events: list[TrackerEvent] | None,
    ) -> ActionResult:
        server = bot.action_server
        assert server is not None  # is_custom_action() says so
        call = {
            "next_action": name,
            "sender_id": tracker.sender_id,
            "tracker": _rasa_tracker(bot, tracker, extra_events or []),
            "domain": domain_of(bot),
            "version": RASA_VERSION,
        }
        try:
            response = await self._send(
                "POST",
                server.url,
                timeout_s=server.timeout_s,
                headers=self._headers(server.headers),
                json=call,
            )
            if not response.is_success:
                raise _Failed(_server_error(response))
            return _checked_answer(name, _json(response))
        except _Failed as e:
            error = f"action server {e} (action '{name}' at {_public_url(server.url)})"
            return _failure("action.server_failed", error, server.on_error, action=name)

    async def _send(
        self, method: str, url: str, *, timeout_s: float, **kwargs: Any
    ) -> httpx.Response:
        """The response to one request, whatever its status; ``_Failed`` when none came back
        within ``timeout_s`` (in all, not per read)."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._client.request(method, url, timeout=timeout_s, **kwargs)
        except (TimeoutError, httpx.TimeoutException) as e:
            raise _Failed(f"did not answer within {timeout_s:g} s") from e
        except OutboundRefused as e:
            raise _Failed(f"was not called: {e.details.get('reason', e.message)}") from e
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise _Failed(f"could not be reached ({type(e).__name__}: {e})") from e


def domain_of(bot: BotDefinition) -> dict[str, Any]:
    """The bot as a Rasa domain (``domain`` in an action server request): what rasa-sdk's
    ``Tracker``, ``FormValidationAction`` (``forms.<flow>.required_slots``) and
    ``ValidationAction`` read. Every flow with ``ask`` steps is a form of that name."""
    forms = {
        flow_name: {"required_slots": slots}
        for flow_name, flow in bot.flows.items()
        if (slots := _unique(s.ask for s in _walk(flow.steps) if isinstance(s, AskStep)))
    }
    mappings = [m for slot in bot.slots.values() for m in slot.mappings]
    story_steps = [step for story in bot.stories for step in story.steps]
    intents = [
        *(bot.nlu.intents or {}),
        *(i for flow in bot.flows.values() for i in flow.intents),
        *bot.handoff.intents,
        *(step.intent for step in story_steps if step.intent),
        *(i for m in mappings for i in [*m.intents(), *m.not_intents()]),
    ]
    steps = [step for flow in bot.flows.values() for step in _walk(flow.steps)]
    used = [
        *(s.action for s in steps if isinstance(s, ActionStep)),
        *(s.validate_.action for s in steps if isinstance(s, AskStep) and s.validate_),
        *(step.action for step in story_steps),
    ]
    served = bot.action_server.actions if bot.action_server else []
    return {
        "version": "3.1",
        "intents": _unique(intents),
        "entities": _unique(m.entity for m in mappings if m.entity),
        "slots": {name: _rasa_slot(slot) for name, slot in bot.slots.items()},
        "responses": {
            name: [variant.model_dump(exclude_none=True) for variant in variants]
            for name, variants in bot.responses.items()
        },
        "actions": _unique([*bot.actions, *served, *filter(bot.is_custom_action, _unique(used))]),
        "forms": forms,
        "session_config": {
            "session_expiration_time": bot.session.expiry_minutes,
            "carry_over_slots_to_new_session": bot.session.carry_over_slots,
        },
    }


# --- built-in kinds -------------------------------------------------------------------------


def _set_slots(
    name: str, action: SetSlotAction, *, bot: BotDefinition, tracker: Tracker
) -> ActionResult:
    values = _template_values(bot, tracker)
    try:
        filled = {slot: _fill(value, values) for slot, value in action.slots.items()}
    except _SlotNotSet as e:
        return ActionResult(error=f"slot {e.slot} is not set, so action '{name}' cannot set slots")
    return ActionResult(
        events=[event("slot", name=slot, value=v).to_dict() for slot, v in filled.items()]
    )


def _template_values(bot: BotDefinition, tracker: Tracker) -> dict[str, Any]:
    return {**tracker.slots, "sender_id": tracker.sender_id, "bot_name": bot.name}


def _fill(template: Any, values: dict[str, Any], *, in_url: bool = False) -> Any:
    """``template`` with its ``{name}`` placeholders replaced, in strings at any depth;
    ``_SlotNotSet`` for a placeholder whose value is missing or None."""
    if isinstance(template, dict):
        return {key: _fill(item, values, in_url=in_url) for key, item in template.items()}
    if isinstance(template, list):
        return [_fill(item, values, in_url=in_url) for item in template]
    if not isinstance(template, str):
        return template

    def value(name: str) -> Any:
        if values.get(name) is None:
            raise _SlotNotSet(name)
        return values[name]

    whole = PLACEHOLDER.fullmatch(template)
    if whole and not in_url:
        return value(whole[1])
    return PLACEHOLDER.sub(
        lambda m: quote(str(value(m[1])), safe="") if in_url else str(value(m[1])), template
    )


def _fill_url(template: str, values: dict[str, Any]) -> str:
    """The URL of an HTTP action: placeholder values percent-encoded, except a placeholder
    that starts the URL (``{api_base}/orders/{order_id}``), which is its base."""
    base = PLACEHOLDER.match(template)
    if base is None:
        return str(_fill(template, values, in_url=True))
    return str(_fill(base[0], values)) + _fill(template[base.end() :], values, in_url=True)


def _field(data: Any, path: str, *, action: str, slot: str) -> Any:
    """The value at dotted ``path`` (``items.0.name``) of a JSON answer; None (and a log
    line) when it is not there."""
    found: Any = data
    for part in path.split("."):
        if isinstance(found, dict):
            found = found.get(part, _MISSING)
        elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
            found = found[int(part)]
        else:
            found = _MISSING
        if found is _MISSING:
            log_event("action.http_field_missing", level=logging.WARNING, action=action,
                      slot=slot, path=path)  # fmt: skip
            return None
    return found


# --- the action server ----------------------------------------------------------------------


def _rasa_tracker(
    bot: BotDefinition, tracker: Tracker, extra_events: list[TrackerEvent]
) -> dict[str, Any]:
    """``tracker.to_rasa()`` with every slot of the bot, and ``extra_events`` at the end of
    its events and applied to its slots (rasa-sdk validates the trailing slot events)."""
    state = tracker.to_rasa()
    candidates = {e.name: e.value for e in extra_events if isinstance(e, SlotEvent)}
    state["slots"] = {**dict.fromkeys(bot.slots), **state["slots"], **candidates}
    state["events"] = [*state["events"], *(e.to_dict() for e in extra_events)]
    return state


def _checked_answer(name: str, body: Any) -> ActionResult:
    """An action server's ``{"events": [...], "responses": [...]}`` as a result: the events
    the engine applies (stamped), the others dropped with a log line; ``_Failed`` for
    anything malformed or unknown, so that nothing of a bad answer is applied."""
    if not (
        isinstance(body, dict)
        and isinstance(body.get("events"), list)
        and isinstance(body.get("responses"), list)
    ):
        raise _Failed('answered with something else than {"events": [...], "responses": [...]}')
    kept: list[dict[str, Any]] = []
    dropped: list[str] = []
    for item in body["events"]:
        kind = item.get("event") if isinstance(item, dict) else None
        if kind in APPLIED_EVENTS:
            if kind in ("slot", "followup") and not isinstance(item.get("name"), str):
                raise _Failed(f"returned a '{kind}' event without a name")
            kept.append({**item, "timestamp": item.get("timestamp") or time.time()})
        elif kind in DROPPED_EVENTS:
            dropped.append(kind)
        elif isinstance(kind, str):
            raise _Failed(f"returned an unknown event '{kind}'")
        else:
            raise _Failed("returned an event that is not an object with an `event` name")
    if not all(isinstance(item, dict) for item in body["responses"]):
        raise _Failed("returned a response that is not an object")
    if dropped:
        reminders = {"reminder", "cancel_reminder"} & set(dropped)
        note = "; reminders are not supported" if reminders else ""
        log_event("action.events_dropped", action=name, events=dropped,
                  reason=f"Parley does not apply these events{note}")  # fmt: skip
    return ActionResult(events=kept, responses=list(body["responses"]))


def _server_error(response: httpx.Response) -> str:
    """A failed answer in words, with the server's own ``error`` message when it sent one
    (rasa-sdk: 404 for an unknown action, 400 for ``ActionExecutionRejection``, 500 for an
    action that raised)."""
    try:
        message = response.json().get("error")
    except (ValueError, AttributeError):
        message = None
    status = f"{response.status_code} {response.reason_phrase}"
    if not message and response.status_code == 404:
        return f"answered {status} (is `action_server.url` its /webhook address?)"
    if not message:
        return f"answered {status}"
    message = str(message)[:300]
    if response.status_code == 404:
        return f"does not know the action: {message}"
    if response.status_code == 400:
        return f"rejected the action: {message}"
    return f"answered {status}: {message}"


# --- small helpers --------------------------------------------------------------------------


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as e:
        raise _Failed(f"answered {response.status_code} but not with JSON") from e


def _failure(log: str, error: str, error_response: str | None, **fields: Any) -> ActionResult:
    log_event(log, level=logging.WARNING, error=error, error_response=error_response, **fields)
    return ActionResult(error=error, error_response=error_response)


def _public_url(url: str) -> str:
    """``url`` without what may hold secrets: user info, query and fragment."""
    scheme, netloc, path, _, _ = urlsplit(url)
    return urlunsplit((scheme, netloc.rpartition("@")[2], path, "", ""))


def _rasa_slot(slot: Slot) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": SLOT_TYPES.get(slot.type, slot.type),
        "initial_value": slot.initial_value,
        "influence_conversation": False,
        "mappings": [mapping.model_dump(exclude_none=True) for mapping in slot.mappings],
    }
    if slot.values is not None:
        out["values"] = list(slot.values)
    if slot.min is not None:
        out["min_value"] = slot.min
    if slot.max is not None:
        out["max_value"] = slot.max
    return out


def _walk(steps: Iterable[Any]) -> Iterator[Any]:
    """Every step of a flow, those inside ``if`` branches included, in order."""
    for step in steps:
        yield step
        if isinstance(step, BranchStep):
            for case in step.if_:
                yield from _walk(case.then)
            yield from _walk(step.else_)


def _unique(names: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))

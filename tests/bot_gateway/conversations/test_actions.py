"""Actions: HTTP and set_slot actions against MockTransport, the rasa-sdk protocol against a
fake server, and the same protocol against a real rasa-sdk action server (a subprocess)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot_gateway.conversations.actions import RASA_VERSION, Actions, domain_of
from bot_gateway.conversations.definition import BotDefinition, parse_definition
from bot_gateway.conversations.events import event
from bot_gateway.conversations.tracker import ActionResult, FlowFrame, Tracker
from core.metrics import counters
from core.outbound import OutboundGuard, OutboundTransport
from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[3]
ACTIONS_PYTHON = ROOT / ".venv-actions" / "bin" / "python"
FIXTURE_MODULE = "tests.bot_gateway.conversations.action_server_fixture"
SERVER = "http://actions.test/webhook"

Handler = Callable[[httpx.Request], Any]


def make_bot(**changes: Any) -> BotDefinition:
    """A shop bot: an order lookup over HTTP, a returns API, a set_slot action, and an
    action server that validates the order form."""
    data: dict[str, Any] = {
        "name": "shop",
        "nlu": {"intents": {"track_order": ["where is my order"], "greet": ["hi"]}},
        "slots": {
            "order_id": {"type": "text", "mappings": [{"type": "from_entity", "entity": "order"}]},
            "status": {"type": "text"},
            "eta": {"type": "text"},
            "item": {"type": "text"},
            "qty": {"type": "number", "min": 1, "max": 10},
            "size": {"type": "categorical", "values": ["s", "m", "l"]},
            "vip": {"type": "bool", "initial_value": False},
            "note": {"type": "text"},
        },
        "responses": {
            "utter_status": [{"text": "Your order is {status}."}],
            "utter_lookup_failed": [{"text": "I cannot look that up right now."}],
            "utter_no_such_order": [{"text": "I found no such order."}],
            "utter_server_down": [{"text": "Something broke on our side."}],
            "utter_no_order": [{"text": "I found no order {order_id}."}],
            "utter_ask_order_id": [{"text": "Your order number?", "buttons": []}],
        },
        "actions": {
            "lookup_order": {
                "url": "https://user:pw@shop.test/orders/{order_id}?key=secret",
                "headers": {"X-Customer": "{sender_id}"},
                "response": {"status": "status", "eta": "delivery.eta", "item": "items.0.name"},
                "reply": "utter_status",
                "on_error": "utter_lookup_failed",
                "on_not_found": "utter_no_such_order",
            },
            "create_return": {
                "method": "POST",
                "url": "https://shop.test/returns",
                "body": {
                    "order": "{order_id}",
                    "qty": "{qty}",
                    "note": "for {sender_id}: {order_id}",
                    "lines": [{"id": "{order_id}"}],
                    "fixed": 3,
                },
                "on_error": "utter_lookup_failed",
            },
            "mark_vip": {"type": "set_slot", "slots": {"vip": True, "note": "vip {order_id}"}},
        },
        "action_server": {"url": SERVER, "on_error": "utter_server_down", "timeout_s": 5},
        "flows": {
            "order_form": {
                "intents": ["track_order"],
                "steps": [
                    {"ask": "order_id", "validate": {"action": "validate_order_form"}},
                    {"if": [{"slot": "vip", "equals": True, "then": [{"ask": "size"}]}]},
                    {"ask": "qty"},
                    {"action": "action_lookup_order"},
                    {"action": "lookup_order"},
                ],
            },
            "greeting": {"intents": ["greet"], "steps": [{"reply": "utter_status"}]},
        },
        "handoff": {"intents": ["human"]},
    }
    data.update(changes)
    return parse_definition(data)


BOT = make_bot()


def tracker(**slots: Any) -> Tracker:
    return Tracker(conversation_id="c1", sender_id="user 1", slots=slots)


def run_action(
    name: str,
    *,
    handler: Handler | None = None,
    bot: BotDefinition = BOT,
    slots: dict[str, Any] | None = None,
    extra_events: list[dict[str, Any]] | None = None,
    the_tracker: Tracker | None = None,
) -> ActionResult:
    """Run ``name`` through ``Actions``: over MockTransport(handler), or over real HTTP."""

    async def go() -> ActionResult:
        transport = httpx.MockTransport(handler) if handler else None
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            return await Actions(client).run(
                name,
                bot=bot,
                tracker=the_tracker or tracker(**(slots or {})),
                extra_events=extra_events,
            )

    return asyncio.run(go())


def recording(response: httpx.Response | Callable[[], Any]) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering ``response`` (or raising what the callable raises) that keeps the
    requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response if isinstance(response, httpx.Response) else response()

    return handler, seen


def must_not_send(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected, got {request.method} {request.url}")


# --- HTTP actions ---------------------------------------------------------------------------

FAILED = "utter_lookup_failed"  # lookup_order's on_error
ORDER = {"status": "shipped", "delivery": {"eta": "Friday"}, "items": [{"name": "boots"}]}


def test_http_action_templates_and_percent_encodes_the_url_and_maps_the_answer() -> None:
    handler, seen = recording(httpx.Response(200, json=ORDER))
    result = run_action("lookup_order", handler=handler, slots={"order_id": "A/12 3?x=1&y"})

    (request,) = seen
    assert request.method == "GET"
    assert request.url.raw_path == b"/orders/A%2F12%203%3Fx%3D1%26y?key=secret"
    assert request.headers["X-Customer"] == "user 1"
    assert result.error is None
    assert [(e["event"], e["name"], e["value"]) for e in result.events] == [
        ("slot", "status", "shipped"),
        ("slot", "eta", "Friday"),
        ("slot", "item", "boots"),
    ]
    assert all(isinstance(e["timestamp"], float) for e in result.events)
    assert result.responses == [{"response": "utter_status"}]


def test_a_missing_field_of_the_answer_sets_the_slot_to_none_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler, _ = recording(httpx.Response(200, json={"status": "lost", "items": []}))
    with caplog.at_level(logging.WARNING, logger="parley"):
        result = run_action("lookup_order", handler=handler, slots={"order_id": "A-1"})

    assert {e["name"]: e["value"] for e in result.events} == {
        "status": "lost",
        "eta": None,
        "item": None,
    }
    assert "action.http_field_missing" in caplog.text and '"items.0.name"' in caplog.text


def test_http_body_is_templated_at_any_depth_and_a_whole_placeholder_keeps_its_type() -> None:
    handler, seen = recording(httpx.Response(201))
    result = run_action("create_return", handler=handler, slots={"order_id": "A-1", "qty": 2.0})

    assert result == ActionResult()
    assert seen[0].method == "POST"
    assert json.loads(seen[0].content) == {
        "order": "A-1",
        "qty": 2.0,
        "note": "for user 1: A-1",
        "lines": [{"id": "A-1"}],
        "fixed": 3,
    }


def test_a_url_that_starts_with_a_placeholder_takes_it_as_its_base() -> None:
    bot = make_bot(
        slots={"api": {"type": "text", "initial_value": "x"}, "order_id": {"type": "text"}},
        responses={},
        flows={},
        action_server=None,
        actions={"lookup": {"url": "{api}/orders/{order_id}"}},
    )
    handler, seen = recording(httpx.Response(200))
    slots = {"api": "https://shop.test/v2", "order_id": "a b"}
    assert run_action("lookup", handler=handler, bot=bot, slots=slots) == ActionResult()
    assert str(seen[0].url) == "https://shop.test/v2/orders/a%20b"

    result = run_action("lookup", handler=must_not_send, bot=bot, slots={**slots, "api": "ftp:x"})
    assert result.error is not None and "is not an http:// or https:// URL" in result.error


@pytest.mark.parametrize("slots", [{}, {"order_id": None}], ids=["missing", "none"])
def test_an_unset_slot_in_the_template_fails_before_any_request(
    slots: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="parley"):
        result = run_action("lookup_order", handler=must_not_send, slots=slots)

    assert result == ActionResult(
        error="slot order_id is not set, so action 'lookup_order' cannot build its request",
        error_response="utter_lookup_failed",
    )
    assert "action.http_failed" in caplog.text


@pytest.mark.parametrize(
    ("answer", "error_response", "said"),
    [
        (httpx.Response(404), "utter_no_such_order", "answered 404 Not Found"),
        (httpx.Response(500, text="x"), FAILED, "answered 500 Internal Server Error"),
        (httpx.Response(403), FAILED, "answered 403 Forbidden"),
        (httpx.Response(200, text="<html>"), FAILED, "answered 200 but not with JSON"),
    ],
    ids=["404", "500", "403", "not-json"],
)
def test_http_failures_give_the_actions_error_response(
    answer: httpx.Response, error_response: str, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler, _ = recording(answer)
    with caplog.at_level(logging.WARNING, logger="parley"):
        result = run_action("lookup_order", handler=handler, slots={"order_id": "A-1"})

    assert result.events == [] and result.responses == []
    assert result.error_response == error_response
    assert result.error == f"action 'lookup_order': GET https://shop.test/orders/A-1 {said}"
    assert "secret" not in result.error and "pw" not in result.error
    assert "action.http_failed" in caplog.text and "secret" not in caplog.text


def test_a_404_falls_back_to_on_error_without_on_not_found() -> None:
    handler, _ = recording(httpx.Response(404))
    result = run_action("create_return", handler=handler, slots={"order_id": "A", "qty": 1})
    assert result.error_response == "utter_lookup_failed"


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (httpx.ConnectError("connection refused"), "could not be reached (ConnectError: "),
        (httpx.ReadTimeout("read timed out"), "did not answer within 5 s"),
    ],
)
def test_transport_errors_are_failures_not_exceptions(raised: Exception, said: str) -> None:
    def fail() -> httpx.Response:
        raise raised

    handler, _ = recording(fail)
    result = run_action("lookup_order", handler=handler, slots={"order_id": "A-1"})
    assert result.error is not None and said in result.error
    assert result.error_response == "utter_lookup_failed"


def test_a_server_that_never_answers_times_out_after_timeout_s() -> None:
    bot = make_bot(actions={"slow": {"url": "https://shop.test/slow", "timeout_s": 0.2}})

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    started = time.monotonic()
    result = run_action("slow", handler=hang, bot=bot)
    assert time.monotonic() - started < 5
    assert result == ActionResult(
        error="action 'slow': GET https://shop.test/slow did not answer within 0.2 s"
    )


# --- set_slot and unknown actions -------------------------------------------------------------


def test_set_slot_templates_string_values() -> None:
    result = run_action("mark_vip", handler=must_not_send, slots={"order_id": "A-1"})
    assert [(e["event"], e["name"], e["value"]) for e in result.events] == [
        ("slot", "vip", True),
        ("slot", "note", "vip A-1"),
    ]
    assert result.error is None


def test_set_slot_with_an_unset_slot_is_an_error() -> None:
    result = run_action("mark_vip", handler=must_not_send)
    assert result == ActionResult(
        error="slot order_id is not set, so action 'mark_vip' cannot set slots"
    )


def test_an_unknown_action_is_an_error() -> None:
    bot = make_bot(action_server=None, flows={})
    result = run_action("action_lookup_order", handler=must_not_send, bot=bot)
    assert result.error is not None and result.error.startswith(
        "unknown action 'action_lookup_order'"
    )
    assert result.events == [] and result.error_response is None


# --- the rasa-sdk protocol (fake server) ------------------------------------------------------


def test_a_custom_action_gets_the_rasa_sdk_call_and_its_answer_is_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer = {
        "events": [
            {"event": "slot", "timestamp": None, "name": "status", "value": "shipped"},
            {"event": "action", "name": "x"},  # dropped: the engine records its own
            {"event": "reminder", "name": "r", "intent": "i"},  # dropped: unsupported
            {"event": "followup", "name": "action_listen", "timestamp": 12.5},
        ],
        "responses": [{"text": "Shipped!", "buttons": [], "response": None}],
    }
    handler, seen = recording(httpx.Response(200, json=answer))
    the_tracker = tracker(order_id="old", vip=True)
    the_tracker.add(event("user", text="A-1234", parse_data={"intent": {"name": "inform"}}))
    candidate = event("slot", name="order_id", value="A-1234")

    with caplog.at_level(logging.INFO, logger="parley"):
        result = run_action(
            "validate_order_form",
            handler=handler,
            the_tracker=the_tracker,
            extra_events=[candidate],
        )

    call = json.loads(seen[0].content)
    assert str(seen[0].url) == SERVER and seen[0].method == "POST"
    assert call["next_action"] == "validate_order_form"
    assert call["sender_id"] == "user 1"
    assert call["version"] == RASA_VERSION
    assert call["domain"] == domain_of(BOT)
    sent = call["tracker"]
    assert [e["event"] for e in sent["events"]] == ["user", "slot"]
    assert sent["events"][-1] == candidate.to_dict()
    assert sent["slots"]["order_id"] == "A-1234" and sent["slots"]["vip"] is True
    assert sent["slots"]["eta"] is None  # every slot of the bot is there
    assert the_tracker.slots["order_id"] == "old"  # the tracker itself is not changed

    assert result.error is None
    assert [(e["event"], e["name"]) for e in result.events] == [
        ("slot", "status"),
        ("followup", "action_listen"),
    ]
    assert isinstance(result.events[0]["timestamp"], float)
    assert result.events[1]["timestamp"] == 12.5
    assert result.responses == answer["responses"]
    assert "action.events_dropped" in caplog.text and "reminders are not supported" in caplog.text


SERVER_ERROR_SUFFIX = " (action 'action_lookup_order' at http://actions.test/webhook)"
NOT_AN_ANSWER = 'answered with something else than {"events": [...], "responses": [...]}'


def answer(events: Any = (), responses: Any = (), status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"events": list(events), "responses": list(responses)})


def rasa_error(status: int, message: str) -> httpx.Response:
    """What rasa-sdk answers when an action is unknown (404), rejected (400) or raised (500)."""
    return httpx.Response(status, json={"error": message, "action_name": "action_lookup_order"})


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (answer([{"event": "slot", "name": "a"}, {"event": "x"}]), "returned an unknown event 'x'"),
        (answer(["slot"]), "returned an event that is not an object with an `event` name"),
        (answer([{"event": "slot", "value": 1}]), "returned a 'slot' event without a name"),
        (answer(responses=["hi"]), "returned a response that is not an object"),
        (httpx.Response(200, json=[{"event": "slot"}]), NOT_AN_ANSWER),
        (httpx.Response(200, json={"events": {}, "responses": []}), NOT_AN_ANSWER),
        (httpx.Response(200, text="{not json"), "answered 200 but not with JSON"),
        (rasa_error(404, "No action 'a'."), "does not know the action: No action 'a'."),
        (rasa_error(400, "Rejected 'a'."), "rejected the action: Rejected 'a'."),
        (rasa_error(500, "boom"), "answered 500 Internal Server Error: boom"),
        (
            httpx.Response(404, text="Not Found"),
            "answered 404 Not Found (is `action_server.url` its /webhook address?)",
        ),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), "answered 502 Bad Gateway"),
    ],
    ids=[
        "unknown-event", "event-not-object", "slot-without-name", "response-not-object",
        "not-an-object", "events-not-list", "invalid-json", "unknown-action", "rejected",
        "crashed", "wrong-url", "proxy-error",
    ],
)  # fmt: skip
def test_bad_action_server_answers_are_errors_with_nothing_applied(
    answer: httpx.Response, said: str
) -> None:
    handler, _ = recording(answer)
    result = run_action("action_lookup_order", handler=handler)
    assert result == ActionResult(
        error=f"action server {said}{SERVER_ERROR_SUFFIX}", error_response="utter_server_down"
    )


def test_an_action_server_that_is_down_or_slow_is_an_error() -> None:
    def refuse() -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    handler, _ = recording(refuse)
    result = run_action("action_lookup_order", handler=handler)
    assert result.error == (
        "action server could not be reached (ConnectError: connection refused)"
        + SERVER_ERROR_SUFFIX
    )
    assert result.error_response == "utter_server_down"

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    bot = make_bot(action_server={"url": SERVER, "timeout_s": 0.2})
    result = run_action("action_lookup_order", handler=hang, bot=bot)
    assert result == ActionResult(
        error="action server did not answer within 0.2 s" + SERVER_ERROR_SUFFIX
    )


# --- calls to private addresses (core.outbound) -----------------------------------------------


def guarded_action(
    name: str,
    *,
    guard: OutboundGuard,
    handler: Handler,
    bot: BotDefinition = BOT,
    slots: dict[str, Any] | None = None,
) -> ActionResult:
    """Run ``name`` over the gateway's guarded transport, with ``handler`` as the network."""

    async def go() -> ActionResult:
        transport = OutboundTransport(guard, httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            return await Actions(client).run(name, bot=bot, tracker=tracker(**(slots or {})))

    return asyncio.run(go())


def test_an_http_action_to_a_private_address_takes_its_error_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    internal = OutboundGuard(resolver=lambda host, port: ["10.0.0.8"])
    before = counters.get("outbound.refused")
    with caplog.at_level(logging.WARNING, logger="parley"):
        result = guarded_action(
            "lookup_order", guard=internal, handler=must_not_send, slots={"order_id": "A-1"}
        )
    assert result.events == [] and result.error_response == "utter_lookup_failed"
    assert result.error is not None and result.error.startswith(
        "action 'lookup_order': GET https://shop.test/orders/A-1 was not called: shop.test "
        "resolves to 10.0.0.8, a private address"
    )
    assert counters.get("outbound.refused") == before + 1
    assert "outbound.refused" in caplog.text and "action.http_failed" in caplog.text
    # the operator allows that network: the call is made, to the checked address
    handler, seen = recording(httpx.Response(200, json=ORDER))
    allowed = OutboundGuard(("10.0.0.0/24",), resolver=lambda host, port: ["10.0.0.8"])
    result = guarded_action("lookup_order", guard=allowed, handler=handler, slots={"order_id": "A"})
    assert result.error is None and seen[0].headers["host"] == "shop.test"


def test_an_action_server_on_loopback_is_refused_unless_allowed() -> None:
    bot = make_bot(
        action_server={"url": "http://127.0.0.1:5055/webhook", "on_error": "utter_server_down"}
    )
    result = guarded_action(
        "action_lookup_order", guard=OutboundGuard(), handler=must_not_send, bot=bot
    )
    assert result.error_response == "utter_server_down"
    assert result.error is not None and "was not called: 127.0.0.1 is a loopback address" in (
        result.error
    )
    handler, seen = recording(httpx.Response(200, json={"events": [], "responses": []}))
    allowed = OutboundGuard(("127.0.0.1",))
    result = guarded_action("action_lookup_order", guard=allowed, handler=handler, bot=bot)
    assert result.error is None and str(seen[0].url) == "http://127.0.0.1:5055/webhook"


def test_a_resolver_that_hangs_is_bounded_by_the_actions_timeout() -> None:
    def slow(host: str, port: int) -> list[str]:
        time.sleep(1.5)
        return ["93.184.216.34"]

    bot = make_bot(actions={"slow": {"url": "https://shop.test/slow", "timeout_s": 0.2}})

    async def go() -> tuple[float, ActionResult]:
        transport = OutboundTransport(
            OutboundGuard(resolver=slow), httpx.MockTransport(must_not_send)
        )
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            started = time.monotonic()
            result = await Actions(client).run("slow", bot=bot, tracker=tracker())
            return time.monotonic() - started, result

    took, result = asyncio.run(go())  # (waits for the look-up thread to end on its own)
    assert took < 1.0
    assert result == ActionResult(
        error="action 'slow': GET https://shop.test/slow did not answer within 0.2 s"
    )


# --- the domain -------------------------------------------------------------------------------


def test_domain_of_describes_the_bot_as_rasa_does() -> None:
    domain = domain_of(BOT)

    assert domain["version"] == "3.1"
    assert domain["intents"] == ["track_order", "greet", "human"]
    assert domain["entities"] == ["order"]
    assert domain["slots"]["order_id"] == {
        "type": "text",
        "initial_value": None,
        "influence_conversation": False,
        "mappings": [{"type": "from_entity", "entity": "order", "conditions": []}],
    }
    assert domain["slots"]["qty"]["type"] == "float"
    assert (domain["slots"]["qty"]["min_value"], domain["slots"]["qty"]["max_value"]) == (1, 10)
    assert domain["slots"]["size"]["values"] == ["s", "m", "l"]
    assert domain["slots"]["vip"]["initial_value"] is False
    assert domain["responses"]["utter_ask_order_id"] == [
        {"text": "Your order number?", "buttons": [], "quick_replies": [], "cards": [],
         "condition": []}
    ]  # fmt: skip
    assert domain["actions"] == [
        "lookup_order", "create_return", "mark_vip", "action_lookup_order", "validate_order_form"
    ]  # fmt: skip
    # ask steps in order, those inside if branches included; flows without asks are no forms
    assert domain["forms"] == {"order_form": {"required_slots": ["order_id", "size", "qty"]}}
    assert domain["session_config"] == {
        "session_expiration_time": 60,
        "carry_over_slots_to_new_session": False,
    }
    json.dumps(domain)  # it travels as JSON


# --- a real rasa-sdk action server ------------------------------------------------------------


@pytest.fixture(scope="module")
def action_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m rasa_sdk`` serving action_server_fixture.py on a free loopback port."""
    if not ACTIONS_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail("rasa-sdk is not installed; scripts/install-action-server installs it")
        pytest.skip("rasa-sdk is not installed (scripts/install-action-server)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("action-server") / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [ACTIONS_PYTHON, "-m", "rasa_sdk", "--actions", FIXTURE_MODULE, "-p", str(port)],
            cwd=ROOT,
            env={**os.environ, "SANIC_HOST": "127.0.0.1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_health(f"http://127.0.0.1:{port}/health", process, log_path)
        yield f"http://127.0.0.1:{port}/webhook"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_health(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the action server exited:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the action server did not start in 60 s:\n{log_path.read_text(errors='replace')}")


def real_bot(url: str) -> BotDefinition:
    return make_bot(action_server={"url": url, "on_error": "utter_server_down"})


def slot_values(result: ActionResult) -> dict[str, Any]:
    return {e["name"]: e["value"] for e in result.events if e["event"] == "slot"}


@pytest.mark.slow
@pytest.mark.integration
class TestRealActionServer:
    def test_an_action_sets_slots_and_speaks(self, action_server: str) -> None:
        bot = real_bot(action_server)
        result = run_action("action_lookup_order", bot=bot, slots={"order_id": "A-1234"})
        assert result.error is None
        assert slot_values(result) == {"status": "shipped", "eta": "Friday"}
        assert [r["text"] for r in result.responses] == ["Order A-1234 is shipped."]

        result = run_action("action_lookup_order", bot=bot, slots={"order_id": "Z-0000"})
        assert slot_values(result) == {"status": None}
        assert [r["response"] for r in result.responses] == ["utter_no_order"]

    @pytest.mark.parametrize(
        ("candidate", "kept"), [("A-1234", "A-1234"), ("12345", None)], ids=["valid", "invalid"]
    )
    def test_a_form_validation_action_validates_the_candidate_slots(
        self, action_server: str, candidate: str, kept: str | None
    ) -> None:
        the_tracker = tracker(order_id=None)
        the_tracker.stack.append(FlowFrame("order_form"))
        the_tracker.add(event("user", text=candidate, parse_data={"intent": {"name": "inform"}}))
        result = run_action(
            "validate_order_form",
            bot=real_bot(action_server),
            the_tracker=the_tracker,
            extra_events=[event("slot", name="order_id", value=candidate)],
        )
        assert result.error is None
        assert slot_values(result) == {"order_id": kept}
        said = [r["text"] for r in result.responses]
        assert said == ([] if kept else ["12345 is not an order number (like A-1234)."])

    def test_a_followup_comes_back_for_the_engine_to_bound(self, action_server: str) -> None:
        result = run_action("action_loop", bot=real_bot(action_server))
        assert [(e["event"], e["name"]) for e in result.events] == [("followup", "action_loop")]

    @pytest.mark.parametrize(
        ("name", "said"),
        [
            ("action_crash", "answered 500 Internal Server Error: the order database is down"),
            ("action_reject", "rejected the action: no order to cancel"),
            ("action_missing", "does not know the action: No registered action found for name "
             "'action_missing'."),
        ],
    )  # fmt: skip
    def test_failures_of_the_server_are_errors(
        self, action_server: str, name: str, said: str
    ) -> None:
        result = run_action(name, bot=real_bot(action_server))
        assert result == ActionResult(
            error=f"action server {said} (action '{name}' at {action_server})",
            error_response="utter_server_down",
        )

"""The improve inbox through the real gateway with a tiny real NLU model: a customer's message
the bot did not understand appears (grouped with a similar one), is labelled into the model's
dataset as a feedback example, a retrain with the feedback is promoted to the bot's alias, and
the bot then understands the message. Also: dismissing, tenancy (404) and the 422s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.bot_gateway.conftest import Api, running_api
from tests.bot_gateway.test_api_bots import wait_ready
from tests.conftest import DB_KINDS

pytestmark = pytest.mark.slow  # trains the bot's NLU twice (about 20 s)

INTENTS = {
    "greet": ["hi", "hello", "hey there", "good morning", "hello bot", "hiya"],
    "track_order": [
        "where is my order",
        "track my parcel",
        "has my order shipped",
        "where is my package",
        "when will my parcel arrive",
    ],
    "payment": [
        "can I pay by card",
        "which payment methods do you accept",
        "do you take paypal",
        "how do I pay",
        "can I pay with apple pay",
    ],
}
BOT = {
    "name": "shop",
    "nlu": {"intents": INTENTS, "threshold": 0.5},
    "responses": {
        "utter_greet": [{"text": "Hello!"}],
        "utter_track": [{"text": "Let me look up your order."}],
        "utter_payment": [{"text": "We take cards and PayPal."}],
    },
    "flows": {
        "greet": {"intents": ["greet"], "steps": [{"reply": "utter_greet"}]},
        "track": {"intents": ["track_order"], "steps": [{"reply": "utter_track"}]},
        "payment": {"intents": ["payment"], "steps": [{"reply": "utter_payment"}]},
    },
    "fallback": {"handoff_after": 3},
}
MISSED = "is a gift voucher accepted at checkout"
SIMILAR = "can I use a gift voucher at the checkout"
UNRELATED = "zzz qqq xxx"


@pytest.fixture(scope="module", params=DB_KINDS[:1])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(request, tmp_path_factory.mktemp("improve")) as api:
        yield api


def say(api: Api, bot_id: str, sender: str, text: str) -> list[str]:
    r = api.client.post(
        f"/v1/bots/{bot_id}/webhooks/rest", json={"sender": sender, "message": text}, headers=api.a
    )
    assert r.status_code == 200, r.text
    return [m.get("text", "") for m in r.json()]


@pytest.fixture(scope="module")
def bot(api: Api) -> dict[str, Any]:
    r = api.client.post("/v1/bots", json=BOT, headers=api.a)
    assert r.status_code == 201, r.text
    return wait_ready(api, r.json()["id"])


def inbox(api: Api, bot_id: str, headers: dict[str, str] | None = None, **query: Any) -> Any:
    r = api.client.get(f"/v1/bots/{bot_id}/improve", params=query, headers=headers or api.a)
    assert r.status_code == 200, r.text
    return r.json()


def items_of(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["text"]: item for group in found["groups"] for item in group["items"]}


def test_a_missed_message_is_labelled_retrained_on_and_then_understood(
    api: Api, bot: dict[str, Any]
) -> None:
    first = say(api, bot["id"], "ann", MISSED)
    assert "rephrase" in first[0], first  # the bot did not understand
    say(api, bot["id"], "bob", SIMILAR)
    say(api, bot["id"], "cy", UNRELATED)
    say(api, bot["id"], "dee", "hello")  # understood: not an item

    found = inbox(api, bot["id"])
    assert found["intents"] == ["greet", "payment", "track_order"]
    assert found["model_id"] == bot["nlu_model_id"]
    items = items_of(found)
    assert set(items) >= {MISSED, SIMILAR} and "hello" not in items
    missed = items[MISSED]
    assert missed["reason"] == "fallback" and missed["status"] == "open"
    assert missed["channel"] == "rest" and missed["conversation_id"]
    [together] = [g for g in found["groups"] if MISSED in [i["text"] for i in g["items"]]]
    assert {i["text"] for i in together["items"]} == {MISSED, SIMILAR}  # grouped by meaning
    assert (
        together["size"] == 2
        and together["id"] == f"group-{min(items[MISSED]['id'], items[SIMILAR]['id'])}"
    )

    ids = [items[MISSED]["id"], items[SIMILAR]["id"]]
    r = api.client.post(
        f"/v1/bots/{bot['id']}/improve/label",
        json={"item_ids": ids, "intent": "payment"},
        headers=api.a,
    )
    assert r.status_code == 200, r.text
    labelled = r.json()
    assert labelled["added"] == 2 and labelled["labelled"] == 2
    dataset_id = labelled["dataset_id"]
    page = api.client.get(
        f"/v1/datasets/{dataset_id}/examples", params={"label": "payment"}, headers=api.a
    ).json()
    feedback = {e["text"] for e in page["examples"] if e["source"] == "feedback"}
    assert feedback == {MISSED, SIMILAR}
    assert MISSED not in items_of(inbox(api, bot["id"]))  # out of the open inbox
    done = items_of(inbox(api, bot["id"], status="labelled"))
    assert done[MISSED]["intent"] == "payment" and done[MISSED]["status"] == "labelled"

    r = api.client.post(f"/v1/bots/{bot['id']}/improve/retrain", headers=api.a)
    assert r.status_code == 202, r.text
    new = r.json()
    assert new["params"]["with_feedback"] is True and new["dataset_id"] == dataset_id
    assert api.wait_model(new["id"])["status"] == "succeeded"
    alias = f"bot-{bot['id']}"  # the bot named its model by id: it now follows an alias
    aliases = {
        a["name"]: a["model_id"] for a in api.client.get("/v1/aliases", headers=api.a).json()
    }
    assert aliases[alias] == new["id"]
    now = api.client.get(f"/v1/bots/{bot['id']}", headers=api.a).json()
    assert now["version"] == bot["version"] + 1

    assert say(api, bot["id"], "eve", MISSED) == ["We take cards and PayPal."]
    # the new model's inbox starts from the same conversations: the labelled stay labelled
    assert inbox(api, bot["id"])["model_id"] == new["id"]
    assert MISSED not in items_of(inbox(api, bot["id"]))


def test_a_dismissed_item_leaves_the_open_inbox(api: Api, bot: dict[str, Any]) -> None:
    say(api, bot["id"], "fay", "purple monkey dishwasher")
    item = items_of(inbox(api, bot["id"]))["purple monkey dishwasher"]
    r = api.client.post(
        f"/v1/bots/{bot['id']}/improve/dismiss", json={"item_ids": [item["id"]]}, headers=api.a
    )
    assert r.status_code == 200 and r.json() == {"dismissed": 1}
    assert "purple monkey dishwasher" not in items_of(inbox(api, bot["id"]))
    gone = items_of(inbox(api, bot["id"], status="dismissed"))
    assert gone["purple monkey dishwasher"]["status"] == "dismissed"


def test_out_of_scope_is_a_label(api: Api, bot: dict[str, Any]) -> None:
    say(api, bot["id"], "gus", "what is the capital of peru")
    item = items_of(inbox(api, bot["id"]))["what is the capital of peru"]
    r = api.client.post(
        f"/v1/bots/{bot['id']}/improve/label",
        json={"item_ids": [item["id"]], "out_of_scope": True},
        headers=api.a,
    )
    assert r.status_code == 200 and r.json()["added"] == 1, r.text
    done = items_of(inbox(api, bot["id"], status="labelled"))
    assert done["what is the capital of peru"]["intent"] == "out_of_scope"


def test_another_tenants_bot_and_unknown_items_are_not_found(api: Api, bot: dict[str, Any]) -> None:
    base = f"/v1/bots/{bot['id']}/improve"
    assert api.client.get(base, headers=api.b).status_code == 404
    for path, body in (
        ("/label", {"item_ids": [1], "intent": "greet"}),
        ("/dismiss", {"item_ids": [1]}),
        ("/retrain", None),
    ):
        r = api.client.post(base + path, json=body, headers=api.b)
        assert r.status_code == 404, (path, r.text)
    r = api.client.post(base + "/dismiss", json={"item_ids": [999_999]}, headers=api.a)
    assert r.status_code == 404 and "999999" in r.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"item_ids": [1]}, "intent"),  # neither an intent nor out of scope
        ({"item_ids": [1], "intent": "greet", "out_of_scope": True}, "intent"),
        ({"item_ids": [1], "intent": "refund"}, "intent"),  # not one of the model's
        ({"item_ids": [], "intent": "greet"}, "item_ids"),
        ({"item_ids": ["x"], "intent": "greet"}, "item_ids.0"),
    ],
)
def test_a_bad_label_is_422_naming_the_field(
    api: Api, bot: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    r = api.client.post(f"/v1/bots/{bot['id']}/improve/label", json=body, headers=api.a)
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["field"] == field


def test_a_bad_status_is_422(api: Api, bot: dict[str, Any]) -> None:
    r = api.client.get(f"/v1/bots/{bot['id']}/improve", params={"status": "new"}, headers=api.a)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "status"

"""The proof of issue 14 on loopback: two gateways and two Celery workers on Redis, PostgreSQL
and an S3-compatible store (moto in server mode stands in for MinIO here), each test against
the same running topology (``tests/cluster/conftest.py``):

1. a dataset uploaded through gateway A trains on a worker and predicts through gateway B; the
   artifact lives in the object store, not on any process's data dir;
2. live fan-out across gateways: a web chat socket on A gets the bot's reply to a REST message
   sent through B; an agents' console on A sees a handoff processed on B live, and the agent's
   reply sent through A reaches the customer's socket on B;
3. 20 messages of one conversation sent at once, alternating gateways, are all answered and
   stored in order, none lost or doubled;
4. ``kill -9`` of the worker running a job: the job finishes on the other worker (or fails
   saying so after max_attempts); ``kill -9`` of a gateway mid-conversation: the customer
   reconnects to the other gateway and nothing is lost;
5. Redis stopped: predictions keep working, what needs Redis answers 503 naming it, and it all
   works again once Redis is back, nothing restarted; the store stopped: a training job fails
   naming the store, and no half-written artifact is ever loaded.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.harness import check, upload_dataset
from bench.harness import train as train_model
from bench.topology import BUCKET, Cluster, Gateway, Tenant
from tests.support.bots import handoff_bot

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(300)]

PASSWORD = "correct horse battery"
TIMEOUT_S = 30.0  # any single wait: a frame, a reply, a status
TRAIN_TIMEOUT_S = 120.0
GREETING = "Hello from the bot!"
# ~30 examples, three intents: the smallest real model (embedding head on the encoder)
EXAMPLES = {
    "greet": ["hi", "hello", "hey there", "good morning", "hello bot", "hiya", "howdy", "yo"],
    "order": [
        "where is my order",
        "track my parcel",
        "has my package shipped",
        "when will my order arrive",
        "order status please",
        "my delivery is late",
        "where's my package",
        "track order",
        "did you ship it yet",
        "parcel tracking",
    ],
    "refund": [
        "i want a refund",
        "give me my money back",
        "refund my order",
        "how do i get a refund",
        "return this for a refund",
        "money back please",
        "refund request",
        "can i be refunded",
        "cancel and refund",
        "i need a refund now",
    ],
}


# --- shared state: a tenant, an agent, a trained bot and a trained model ----------------------


class Shop:
    """The tenant every test uses, with its handoff bot (web chat widget key) and agent."""

    def __init__(self, cluster: Cluster, tenant: Tenant, bot: dict[str, Any]) -> None:
        self.cluster = cluster
        self.tenant = tenant
        self.bot = bot

    @property
    def a(self) -> Gateway:
        return self.cluster.gateways[0]

    @property
    def b(self) -> Gateway:
        return self.cluster.gateways[1]

    def client(self, gateway: Gateway) -> httpx.Client:
        return httpx.Client(base_url=gateway.url, headers=self.tenant.headers, timeout=TIMEOUT_S)

    def chat_url(self, gateway: Gateway, session: str, token: str | None = None) -> str:
        url = f"{gateway.ws_url}/v1/bots/{self.bot['id']}/ws?key={self.bot['widget_key']}"
        url += f"&session={session}"
        return url + (f"&session_token={token}" if token else "")

    def rest(self, gateway: Gateway, sender: str, text: str, token: str) -> httpx.Response:
        """A REST channel message for the web chat session ``sender`` (widget key + token)."""
        return httpx.post(
            f"{gateway.url}/v1/bots/{self.bot['id']}/webhooks/rest?key={self.bot['widget_key']}",
            json={"sender": sender, "message": text},
            headers={"X-Parley-Session-Token": token},
            timeout=TIMEOUT_S,
        )

    def login(self, gateway: Gateway) -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/v1/agent/login",
            json={"tenant": self.tenant.name, "username": "ana", "password": PASSWORD},
            timeout=TIMEOUT_S,
        )


@pytest.fixture(scope="module")
def shop(cluster: Cluster) -> Shop:
    tenant = cluster.create_tenant("shop")
    cluster.create_agent(tenant, "ana", PASSWORD)
    with httpx.Client(
        base_url=cluster.gateways[0].url, headers=tenant.headers, timeout=TIMEOUT_S
    ) as client:
        bot = check(client.post("/v1/bots", json=handoff_bot()), 201)
        bot = wait_for(
            lambda: check(client.get(f"/v1/bots/{bot['id']}"), 200),
            lambda b: b["status"] != "training",
            f"the bot's NLU to train on a worker\n{cluster.logs()}",
            timeout_s=TRAIN_TIMEOUT_S,
        )
    assert bot["status"] == "ready", bot
    return Shop(cluster, tenant, bot)


@pytest.fixture(scope="module")
def examples_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "intents.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows((text, label) for label, texts in EXAMPLES.items() for text in texts)
    return path


@pytest.fixture(scope="module")
def dataset(shop: Shop, examples_csv: Path) -> dict[str, Any]:
    with shop.client(shop.a) as a:
        return upload_dataset(a, "intents", examples_csv)


@pytest.fixture(scope="module")
def model(shop: Shop, dataset: dict[str, Any]) -> dict[str, Any]:
    """A model trained on a worker from a dataset uploaded through gateway A."""
    with shop.client(shop.a) as a:
        trained, _seconds = train_model(a, dataset["id"], "intents", timeout_s=TRAIN_TIMEOUT_S)
    return trained


def wait_for(fetch: Any, done: Any, what: str, *, timeout_s: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    value = fetch()
    while not done(value):
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last: {value}"
        time.sleep(0.2)
        value = fetch()
    return value


# --- websocket helpers ------------------------------------------------------------------------


async def next_frame(ws: ClientConnection, kind: str, **match: Any) -> dict[str, Any]:
    """The next frame of type ``kind`` (and the given fields), skipping the others."""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame  # type: ignore[no-any-return]


async def say(ws: ClientConnection, text: str, client_id: str) -> None:
    await ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))


def texts_of(frame: dict[str, Any]) -> str:
    return str(frame.get("message", {}).get("text"))


# --- 1. train through A, predict through B; artifacts in the object store -------------------


def test_a_dataset_uploaded_through_a_trains_on_a_worker_and_predicts_through_b(
    cluster: Cluster, shop: Shop, model: dict[str, Any]
) -> None:
    assert model["status"] == "succeeded" and model["artifact_sha256"]
    (worker,) = cluster.sql("SELECT worker FROM models WHERE id = %s", model["id"])[0]
    assert worker and int(worker.split("/")[1]) not in {
        g.proc.pid for g in cluster.gateways if g.proc
    }
    with shop.client(shop.b) as b:
        r = b.post(f"/v1/models/{model['id']}/predict", json={"text": "where is my parcel"})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["label"] == "order"
        r = b.post(f"/v1/models/{model['id']}/predict", json={"text": "hello there"})
        assert r.json()["predictions"][0]["label"] == "greet"
    keys = cluster.s3.object_keys(BUCKET)
    mine = [k for k in keys if model["id"] in k]
    assert any(k.endswith(".parley-manifest.json") for k in mine), keys
    assert len(mine) >= 2, mine  # the weights and the manifest written last
    for proc in [*cluster.gateways, *cluster.workers]:  # no shared disk holds it
        data = proc.home / "data"
        stored = [p for p in data.rglob("*") if model["id"] in str(p)] if data.exists() else []
        assert stored == [], f"{proc.name} keeps the artifact in its data dir: {stored}"
    # gateway B read it from the store into its own cache, and only there
    assert any(model["id"] in str(p) for p in (shop.b.home / "cache").rglob("*"))


# --- 2. live fan-out across gateways ---------------------------------------------------------


def test_replies_handoffs_and_agent_messages_cross_gateways_live(shop: Shop) -> None:
    asyncio.run(_fan_out(shop))


async def _fan_out(shop: Shop) -> None:
    # a web chat socket on A; a REST message of the same session through B
    async with connect(shop.chat_url(shop.a, "fanout-visitor-1")) as on_a:
        welcome = await next_frame(on_a, "welcome")
        token = welcome["session_token"]
        r = await asyncio.to_thread(shop.rest, shop.b, welcome["session_id"], "hello", token)
        assert r.status_code == 200, r.text
        assert GREETING in [m.get("text") for m in r.json()]
        reply = await next_frame(on_a, "message", **{"from": "bot"})
        assert texts_of(reply) == GREETING

    # an agents' console on A; the customer's socket on B hands off
    login = await asyncio.to_thread(shop.login, shop.a)
    assert login.status_code == 200, login.text
    cookie = "; ".join(f"{k}={v}" for k, v in login.cookies.items())
    console = f"{shop.a.ws_url}/v1/agent/ws"
    async with (
        connect(console, additional_headers={"Cookie": cookie}) as agents,
        connect(shop.chat_url(shop.b, "fanout-visitor-2")) as on_b,
    ):
        welcome = await next_frame(on_b, "welcome")
        cid = welcome["conversation_id"]
        await say(on_b, "talk to a human", "h1")
        await next_frame(on_b, "ack", client_id="h1")
        await next_frame(on_b, "status", status="waiting_for_agent")
        await next_frame(agents, "inbox")  # the handoff on B, live on A's console
        csrf = {"X-CSRF-Token": login.json()["csrf_token"]}  # writes with the session cookie
        async with httpx.AsyncClient(
            cookies=login.cookies, headers=csrf, timeout=TIMEOUT_S
        ) as agent:
            inbox = (await agent.get(f"{shop.a.url}/v1/agent/inbox")).json()
            assert cid in [item["id"] for item in inbox["waiting"]], inbox
            at = f"{shop.a.url}/v1/agent/conversations/{cid}"
            claimed = await agent.post(f"{at}/claim")
            assert claimed.status_code == 200, claimed.text
            sent = await agent.post(f"{at}/messages", json={"text": "Hi, I'm Ana"})
            assert sent.status_code == 200, sent.text
        from_agent = await next_frame(on_b, "message", **{"from": "agent"})
        assert texts_of(from_agent) == "Hi, I'm Ana"  # sent through A, on the socket on B


# --- 3. one conversation, 20 messages at once over both gateways -----------------------------


def test_twenty_concurrent_messages_over_both_gateways_are_answered_in_order(
    shop: Shop,
) -> None:
    texts = [f"hello number {i}" for i in range(20)]
    replies = asyncio.run(_send_all(shop, "burst-customer", texts))
    assert [r.status_code for r in replies] == [200] * 20, [r.text for r in replies]
    assert all(r.json() for r in replies), "a message got no answer"

    with shop.client(shop.a) as a:
        page = check(a.get("/v1/conversations", params={"bot_id": shop.bot["id"]}), 200)
        (conv,) = [c for c in page["items"] if c["sender_id"] == "burst-customer"]
        events = check(a.get(f"/v1/conversations/{conv['id']}"), 200)["events"]
    said = [e for e in events if e["event"] in ("user", "bot")]
    users = [e["text"] for e in said if e["event"] == "user"]
    assert sorted(users) == sorted(texts), users  # none lost, none doubled
    kinds = [e["event"] for e in said]
    # each message answered before the next one is taken: user, bot(s), user, bot(s), ...
    for i, kind in enumerate(kinds):
        if kind == "user":
            assert i + 1 < len(kinds) and kinds[i + 1] == "bot", kinds
    stamps = [e.get("timestamp") for e in events]
    if all(s is not None for s in stamps):
        assert stamps == sorted(stamps), stamps


async def _send_all(shop: Shop, sender: str, texts: list[str]) -> list[httpx.Response]:
    gateways = [shop.a, shop.b]
    async with httpx.AsyncClient(headers=shop.tenant.headers, timeout=60.0) as client:

        async def send(i: int, text: str) -> httpx.Response:
            url = f"{gateways[i % 2].url}/v1/bots/{shop.bot['id']}/webhooks/rest"
            return await client.post(url, json={"sender": sender, "message": text})

        return await asyncio.gather(*(send(i, t) for i, t in enumerate(texts)))


# --- 4. kill -9 of a worker mid-job, and of a gateway mid-conversation ------------------------


def test_a_job_whose_worker_is_killed_finishes_on_the_other_worker(
    cluster: Cluster, shop: Shop, dataset: dict[str, Any]
) -> None:
    with shop.client(shop.a) as a:
        body = {"dataset_id": dataset["id"], "params": {"epochs": 500, "batch_size": 1}}
        queued = check(a.post("/v1/models", json=body), 202)
        victim = wait_for(
            lambda: cluster.worker_running(queued["id"]),
            lambda w: w is not None,
            "a worker to start the job",
            timeout_s=TRAIN_TIMEOUT_S,
        )
        victim.kill()  # kill -9 of its whole process tree
        final = wait_for(
            lambda: check(a.get(f"/v1/models/{queued['id']}"), 200),
            lambda m: m["status"] in ("succeeded", "failed", "cancelled"),
            "the job to end after its worker was killed",
            timeout_s=TRAIN_TIMEOUT_S,
        )
    if final["status"] == "failed":  # allowed only as a clear message after max_attempts
        assert "attempt" in (final["failure_message"] or ""), final
        return
    assert final["status"] == "succeeded", final
    (worker,) = cluster.sql("SELECT worker FROM models WHERE id = %s", queued["id"])[0]
    survivor = next(w for w in cluster.workers if w is not victim)
    assert int(worker.split("/")[1]) in survivor.pids(), (worker, survivor.pids())


def test_a_customer_whose_gateway_is_killed_goes_on_through_the_other(shop: Shop) -> None:
    asyncio.run(_gateway_dies(shop))


async def _gateway_dies(shop: Shop) -> None:
    async with connect(shop.chat_url(shop.a, "survivor-visitor")) as on_a:
        welcome = await next_frame(on_a, "welcome")
        session, token = welcome["session_id"], welcome["session_token"]
        await say(on_a, "hello", "s1")
        await next_frame(on_a, "ack", client_id="s1")
        assert texts_of(await next_frame(on_a, "message", **{"from": "bot"})) == GREETING
        # the second message is on its way when gateway A dies
        await say(on_a, "hiya", "s2")
        await asyncio.to_thread(shop.a.kill)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(TIMEOUT_S):
                while True:
                    await on_a.recv()

    async with connect(shop.chat_url(shop.b, session, token)) as on_b:
        welcome = await next_frame(on_b, "welcome")
        assert welcome["session_id"] == session and welcome["conversation_id"]
        said = [(h["from"], h["message"].get("text")) for h in welcome["history"]]
        assert said[:2] == [("user", "hello"), ("bot", GREETING)], said
        if ("user", "hiya") not in said:  # never acked: the widget sends it again
            await say(on_b, "hiya", "s2")
            await next_frame(on_b, "ack", client_id="s2")
            await next_frame(on_b, "message", **{"from": "bot"})
        await say(on_b, "good morning", "s3")
        await next_frame(on_b, "ack", client_id="s3")
        assert texts_of(await next_frame(on_b, "message", **{"from": "bot"})) == GREETING

    async with connect(shop.chat_url(shop.b, session, token)) as again:
        history = (await next_frame(again, "welcome"))["history"]
    users = [h["message"].get("text") for h in history if h["from"] == "user"]
    assert users == ["hello", "hiya", "good morning"], history  # nothing lost, nothing twice


# --- 5. Redis and the object store go away -----------------------------------------------------


def unavailable(r: httpx.Response, service: str) -> bool:
    if r.status_code != 503:
        return False
    body = r.json()
    return body.get("error") == "unavailable" and service.lower() in body["message"].lower()


def test_without_redis_predictions_work_and_the_rest_answers_503_until_it_is_back(
    cluster: Cluster, shop: Shop, model: dict[str, Any], dataset: dict[str, Any]
) -> None:
    asyncio.run(_open_and_greet(shop))
    waiting: list[str] = []  # jobs queued while Redis was away
    cluster.redis.stop()
    try:
        for gateway in (shop.a, shop.b):
            login = shop.login(gateway)
            assert unavailable(login, "redis"), (login.status_code, login.text)
            with shop.client(gateway) as client:
                r = client.post(f"/v1/models/{model['id']}/predict", json={"text": "refund me"})
                assert r.status_code == 200, r.text
                assert r.json()["predictions"][0]["label"] == "refund"
                rest = client.post(
                    f"/v1/bots/{shop.bot['id']}/webhooks/rest",
                    json={"sender": "while-redis-is-down", "message": "hello"},
                )
                assert unavailable(rest, "redis"), (rest.status_code, rest.text)
                # a job may be queued (the database is its record) or refused naming Redis
                queued = client.post("/v1/models", json={"dataset_id": dataset["id"]})
                assert queued.status_code == 202 or unavailable(queued, "redis"), queued.text
                if queued.status_code == 202:
                    waiting.append(queued.json()["id"])
    finally:
        cluster.redis.start()  # same port, empty: nothing restarted but Redis

    # back: logins, conversations, fan-out across gateways and training all work again
    assert wait_for(lambda: shop.login(shop.b), lambda r: r.status_code == 200, "a login")
    asyncio.run(_open_and_greet(shop))
    with shop.client(shop.b) as b:
        for model_id in waiting:  # sent to a worker once Redis is back
            done = wait_for(
                lambda: check(b.get(f"/v1/models/{model_id}"), 200),  # noqa: B023
                lambda m: m["status"] not in ("queued", "running"),
                "a job queued while Redis was away",
                timeout_s=TRAIN_TIMEOUT_S,
            )
            assert done["status"] == "succeeded", done
        trained, _ = train_model(b, dataset["id"], "after-redis", timeout_s=TRAIN_TIMEOUT_S)
        r = b.post(f"/v1/models/{trained['id']}/predict", json={"text": "hello"})
        assert r.json()["predictions"][0]["label"] == "greet"


async def _open_and_greet(shop: Shop) -> None:
    """A socket on A gets the reply to a REST message through B (needs Redis fan-out)."""
    async with connect(shop.chat_url(shop.a, f"redis-visitor-{time.monotonic_ns()}")) as on_a:
        welcome = await next_frame(on_a, "welcome")
        r = await asyncio.to_thread(
            shop.rest, shop.b, welcome["session_id"], "hello", welcome["session_token"]
        )
        assert r.status_code == 200, r.text
        assert texts_of(await next_frame(on_a, "message", **{"from": "bot"})) == GREETING


def test_without_the_store_training_fails_naming_it_and_nothing_half_written_loads(
    cluster: Cluster, shop: Shop, dataset: dict[str, Any]
) -> None:
    with shop.client(shop.a) as a:
        cluster.s3.stop()
        try:
            queued = check(a.post("/v1/models", json={"dataset_id": dataset["id"]}), 202)
            final = wait_for(
                lambda: check(a.get(f"/v1/models/{queued['id']}"), 200),
                lambda m: m["status"] in ("succeeded", "failed", "cancelled"),
                "the job to end without the store",
                timeout_s=TRAIN_TIMEOUT_S,
            )
        finally:
            cluster.s3.start()  # same port, empty bucket
        assert final["status"] == "failed", final
        message = final["failure_message"] or ""
        assert "object store" in message and cluster.s3.endpoint_url in message, message
        assert not final["artifact_sha256"], final
        with shop.client(shop.b) as b:  # nothing of it is ever loaded, on either gateway
            r = b.post(f"/v1/models/{queued['id']}/predict", json={"text": "hello"})
            assert 400 <= r.status_code < 500 and r.status_code != 404, (r.status_code, r.text)
        assert [k for k in cluster.s3.object_keys(BUCKET) if queued["id"] in k] == []

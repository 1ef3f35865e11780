"""Conversations across gateways on Redis (issue 14): two gateways (two apps in one process,
one SQLite file, one real redis-server) share each conversation's lock and the live frames of
web chat sockets and the agents' console; the lock's lease, renewal and fence; and what
happens while Redis is down (503 naming Redis, the socket stays open, predictions go on)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from fastapi import WebSocketDisconnect
from fastapi.testclient import TestClient
from sqlalchemy import select

from bot_gateway.app import create_app
from bot_gateway.conversations.cluster import LOCK_PREFIX, RedisFanout, RedisLocks, _fail_fast
from bot_gateway.conversations.events import event
from bot_gateway.conversations.runtime import ConversationRuntime, Hub, conversation_key
from bot_gateway.conversations.sharing import InProcess
from bot_gateway.conversations.store import ConversationRecord
from bot_gateway.services.accounts import create_agent, csrf_token
from core.db import get_engine, session_scope
from core.errors import Conflict
from core.redis import async_client
from core.settings import RedisSettings
from core.tables import ConversationEvent
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import make_db_url, make_settings
from tests.support.bots import handoff_bot
from tests.support.redis_server import RedisServer, redis_server_path

pytestmark = pytest.mark.timeout(120)  # a frame that never comes fails, rather than hangs

PASSWORD = "correct horse battery"


# --- the lock, alone ---------------------------------------------------------------------------


def _locks(url: str, **settings: float) -> tuple[Any, RedisLocks]:
    client = _fail_fast(async_client(RedisSettings(url=url, **settings)))
    return client, RedisLocks(client, RedisSettings(url=url, **settings))


def test_a_dead_gateways_lock_is_taken_after_its_lease(redis_url: str) -> None:
    set_at = time.monotonic()  # the lease runs from here (the loop's setup counts in it)
    redis.Redis.from_url(redis_url).set(LOCK_PREFIX + "conv-1", b"dead-gateway", px=1000)

    async def run() -> float:
        client, locks = _locks(redis_url, lock_lease_s=5.0, lock_wait_s=20.0)
        async with locks.hold("conv-1") as fence:
            waited = time.monotonic() - set_at
            await fence.check()
        assert await client.get(LOCK_PREFIX + "conv-1") is None  # released
        await client.aclose()
        return waited

    waited = asyncio.run(run())
    assert 0.95 < waited < 10.0, waited  # not before the dead lease ends; not a 20 s wait


def test_renewal_keeps_a_long_turns_lock_and_others_wait_then_hear_busy(redis_url: str) -> None:
    async def run() -> None:
        # renewed every 0.5 s: a renewal may come 1 s late on a loaded machine and still hold
        client, locks = _locks(redis_url, lock_lease_s=1.5, lock_wait_s=0.3)
        async with locks.hold("conv-2") as fence:
            for _ in range(5):  # 5 s: more than three leases
                await asyncio.sleep(1.0)
                with pytest.raises(Conflict, match="the conversation is busy"):
                    await locks.acquire(LOCK_PREFIX + "conv-2")
                assert await client.pttl(LOCK_PREFIX + "conv-2") > 0
            await fence.check()  # still ours after 5 s
        async with locks.hold("conv-2"):  # free again at once
            pass
        await client.aclose()

    asyncio.run(run())


def test_a_lost_lease_saves_nothing_and_leaves_the_new_holders_lock(redis_url: str) -> None:
    async def run() -> None:
        client, locks = _locks(redis_url, lock_lease_s=5.0, lock_wait_s=1.0)
        async with locks.hold("conv-3") as fence:
            await client.set(LOCK_PREFIX + "conv-3", b"another-gateway", px=5000)
            with pytest.raises(Conflict, match="nothing was saved"):
                await fence.check()
        assert await client.get(LOCK_PREFIX + "conv-3") == b"another-gateway"
        await client.aclose()

    asyncio.run(run())


def test_taking_a_lock_again_with_its_own_token_succeeds(redis_url: str) -> None:
    """A retried take whose first reply was lost finds the key holding its own token: it has
    the lock (and a fresh lease), instead of waiting up to a lease for itself."""

    async def run() -> None:
        client, locks = _locks(redis_url, lock_lease_s=5.0)
        name = LOCK_PREFIX + "conv-4"
        assert await locks.take_script(keys=[name], args=[b"mine", 5000]) == 1
        await client.pexpire(name, 100)
        assert await locks.take_script(keys=[name], args=[b"mine", 5000]) == 1  # the retry
        assert await client.pttl(name) > 1000  # the lease starts again
        assert await locks.take_script(keys=[name], args=[b"theirs", 5000]) == 0
        assert await client.get(name) == b"mine"
        await client.aclose()

    asyncio.run(run())


def test_a_turn_cancelled_while_taking_the_lock_lets_go_of_it(redis_url: str) -> None:
    """Cancelled while the take's reply is on its way (the key set in Redis, the reply not yet
    read): the lock is deleted, so the conversation's next message does not wait a lease."""

    async def run() -> None:
        client, locks = _locks(redis_url, lock_lease_s=30.0, lock_wait_s=0.3)
        taken, take = asyncio.Event(), locks.take_script

        async def reply_in_flight(**kwargs: Any) -> Any:
            await take(**kwargs)  # Redis ran it ...
            taken.set()
            await asyncio.sleep(60)  # ... and its reply has not arrived

        locks.take_script = reply_in_flight
        turn = asyncio.create_task(locks.acquire(LOCK_PREFIX + "conv-5"))
        await asyncio.wait_for(taken.wait(), 10)
        turn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await turn
        assert await client.get(LOCK_PREFIX + "conv-5") is None
        locks.take_script = take
        async with locks.hold("conv-5"):  # the next message takes it at once
            pass
        await client.aclose()

    asyncio.run(run())


@asynccontextmanager
async def two_hubs(redis_url: str) -> AsyncIterator[tuple[Hub, Hub]]:
    """Two gateways' hubs fanned out through one Redis, started and stopped."""
    settings = RedisSettings(url=redis_url)
    clients = [_fail_fast(async_client(settings)) for _ in range(2)]
    fanouts = [RedisFanout(c, settings) for c in clients]
    for fanout in fanouts:
        fanout.start()
    try:
        yield Hub(fanouts[0]), Hub(fanouts[1])
    finally:
        for fanout, client in zip(fanouts, clients, strict=True):
            await fanout.stop()
            await client.aclose()


def test_a_gateway_subscribes_on_one_connection_from_the_start(redis_url: str) -> None:
    """A listener that arrives while the subscriber is still connecting is subscribed on the
    subscriber's own connection (not a second one nobody reads), and hears frames."""

    async def run() -> None:
        async with two_hubs(redis_url) as (a, b):
            on_a = a.subscribe("early")  # before the subscriber has connected
            await a.ready("early")
            await asyncio.sleep(0.2)
            subs = [int(c["sub"]) for c in redis.Redis.from_url(redis_url).client_list()]
            # one connection each: a's holds its control channel and the topic, b's its own
            assert sorted(n for n in subs if n) == [1, 2], subs
            await b.ready("early")
            b.publish("early", {"type": "message", "n": 1})
            assert await asyncio.wait_for(on_a.get(), 5) == {"type": "message", "n": 1}

    asyncio.run(run())


class _StallingLocks(RedisLocks):
    """Takes the lock, then stalls past its lease while another gateway takes it."""

    async def acquire(self, name: str) -> Any:
        lease = await super().acquire(name)
        await self.client.set(name, b"another-gateway", px=5000)
        return lease


class _NoStore:
    def __init__(self) -> None:
        self.appended: list[Any] = []

    async def append(self, conversation_id: str, events: list[Any]) -> None:
        self.appended.append((conversation_id, events))


def test_an_agents_event_under_a_lost_lock_is_not_saved(redis_url: str) -> None:
    """A message, note or claim recorded by an agent is fenced like a turn: when the lock is
    no longer ours nothing is written, and the other gateway's lock stays."""

    async def run() -> None:
        client = _fail_fast(async_client(RedisSettings(url=redis_url)))
        store = _NoStore()
        sharing = InProcess()
        sharing.locks = _StallingLocks(client, RedisSettings(url=redis_url, lock_lease_s=5.0))
        runtime = ConversationRuntime(
            store=store,  # type: ignore[arg-type]
            actions=None,  # type: ignore[arg-type]
            parse=None,  # type: ignore[arg-type]
            see=None,  # type: ignore[arg-type]
            read_upload=None,  # type: ignore[arg-type]
            sharing=sharing,
        )
        now = datetime.now(UTC)
        record = ConversationRecord("c-6", "t", "b", "webchat", "s", "with_agent", {}, now, now)
        with pytest.raises(Conflict, match="nothing was saved"):
            await runtime.record(record, event("note", text="call back at 5"))
        assert store.appended == []
        name = LOCK_PREFIX + conversation_key("b", "webchat", "s")
        assert await client.get(name) == b"another-gateway"
        await client.aclose()

    asyncio.run(run())


def test_frames_reach_the_other_gateway_once(redis_url: str) -> None:
    async def run() -> None:
        async with two_hubs(redis_url) as (a, b):
            on_a, on_b = a.subscribe("conv"), b.subscribe("conv")
            mine = b.subscribe("conv")  # the publisher's own socket, skipped
            for hub in (a, b):
                await hub.ready("conv")
            b.publish("conv", {"type": "message", "n": 1}, skip=mine)
            assert await asyncio.wait_for(on_a.get(), 5) == {"type": "message", "n": 1}
            assert await asyncio.wait_for(on_b.get(), 5) == {"type": "message", "n": 1}
            b.publish("conv", {"type": "message", "n": 2})
            assert (await asyncio.wait_for(on_a.get(), 5))["n"] == 2
            await asyncio.sleep(0.2)  # nothing of its own comes back to b through Redis
            assert on_b.qsize() == 1 and mine.qsize() == 1 and on_a.qsize() == 0

    asyncio.run(run())


# --- two gateways ------------------------------------------------------------------------------


@dataclass
class Gateways:
    a: TestClient
    b: TestClient
    redis: RedisServer
    key: dict[str, str]
    bot: dict[str, Any]
    db_url: str

    def socket_url(self, session: str) -> str:
        return f"/v1/bots/{self.bot['id']}/ws?key={self.bot['widget_key']}&session={session}"

    def rest(self, client: TestClient, sender: str, token: str, text: str) -> Any:
        return client.post(
            f"/v1/bots/{self.bot['id']}/webhooks/rest?key={self.bot['widget_key']}",
            json={"sender": sender, "message": text},
            headers={"X-Parley-Session-Token": token},
        )

    def login(self, client: TestClient, username: str) -> Any:
        r = client.post(
            "/v1/agent/login",
            json={"tenant": "shop", "username": username, "password": PASSWORD},
        )
        assert r.status_code == 200, r.text
        client.cookies.clear()
        return r.cookies


def csrf(cookies: Any) -> dict[str, str]:
    """The CSRF header of an agent's session (every write with the cookie sends it)."""
    return {"X-CSRF-Token": csrf_token(cookies["parley_agent"])}


@pytest.fixture(scope="module")
def gateways(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateways]:
    if redis_server_path() is None:
        pytest.skip("redis-server not installed (scripts/install-system-deps redis-server)")
    tmp = tmp_path_factory.mktemp("cluster")
    url = make_db_url("sqlite", tmp, request)

    def gateway(redis_url: str, workers: int) -> Any:
        settings = make_settings(tmp, url, redis={"url": redis_url}, queue={"workers": workers})
        return create_app(settings, warm_encoder=False)

    with (
        RedisServer() as server,  # its own: a test stops it
        TestClient(gateway(server.url, 1)) as a,
        TestClient(gateway(server.url, 0)) as b,
    ):
        tenant = a.post("/v1/tenants", json={"name": "shop"}, headers=OPERATOR).json()
        key = {"Authorization": f"Bearer {tenant['api_key']}"}
        bot = a.post("/v1/bots", json=handoff_bot(), headers=key).json()
        deadline = time.monotonic() + 120
        while b.get(f"/v1/bots/{bot['id']}", headers=key).json()["status"] != "ready":
            assert time.monotonic() < deadline, "the bot's NLU did not train"
            time.sleep(0.2)
        with session_scope(get_engine(url)) as session:
            create_agent(session, tenant_id=tenant["tenant_id"], username="ana", password=PASSWORD)
        yield Gateways(a, b, server, key, bot, url)


def frames_until(ws: Any, kind: str, limit: int = 50) -> dict[str, Any]:
    for _ in range(limit):
        frame = ws.receive_json()
        if frame["type"] == kind:
            return frame
    raise AssertionError(f"no {kind} frame")


@pytest.mark.slow
def test_a_socket_on_a_hears_the_reply_to_a_rest_message_sent_through_b(
    gateways: Gateways,
) -> None:
    with gateways.a.websocket_connect(gateways.socket_url("visitor-0001")) as ws:
        welcome = ws.receive_json()
        token = welcome["session_token"]
        r = gateways.rest(gateways.b, "visitor-0001", token, "hello")
        assert r.status_code == 200, r.text
        assert [m["text"] for m in r.json()] == ["Hello from the bot!"]
        frame = frames_until(ws, "message")
        assert frame["from"] == "bot" and frame["message"]["text"] == "Hello from the bot!"


@pytest.mark.slow
def test_a_handoff_on_b_shows_live_on_a_and_the_agents_reply_reaches_b(
    gateways: Gateways,
) -> None:
    a, b = gateways.a, gateways.b
    ana = gateways.login(a, "ana")
    a.cookies.clear()
    with (
        a.websocket_connect("/v1/agent/ws", cookies=ana) as console,
        b.websocket_connect(gateways.socket_url("visitor-0002")) as customer,
    ):
        console.send_text('{"type": "ping"}')
        assert console.receive_json() == {"type": "pong"}  # subscribed (hub.ready) by now
        welcome = customer.receive_json()
        customer.send_json({"type": "message", "text": "talk to a human", "client_id": "c1"})
        assert frames_until(customer, "status")["status"] == "waiting_for_agent"
        assert frames_until(console, "inbox")  # processed on B, live on A
        cid = welcome["conversation_id"]
        at = f"/v1/agent/conversations/{cid}"
        a.cookies.clear()
        assert a.post(f"{at}/claim", cookies=ana, headers=csrf(ana)).status_code == 200
        a.cookies.clear()
        r = a.post(f"{at}/messages", json={"text": "Hi, I'm Ana"}, cookies=ana, headers=csrf(ana))
        assert r.status_code == 200, r.text
        frame = frames_until(customer, "message")
        assert frame["from"] == "agent" and frame["message"]["text"] == "Hi, I'm Ana"
    a.cookies.clear()


@pytest.mark.slow
def test_twenty_concurrent_messages_alternating_gateways_keep_their_order(
    gateways: Gateways,
) -> None:
    with gateways.a.websocket_connect(gateways.socket_url("visitor-0003")) as ws:
        welcome = ws.receive_json()
    token, cid = welcome["session_token"], welcome["conversation_id"]
    texts = [f"hello {i}" for i in range(20)]

    def send(i: int) -> Any:
        client = gateways.a if i % 2 == 0 else gateways.b
        return gateways.rest(client, "visitor-0003", token, texts[i])

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(send, range(20)))
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers]
    replies = [[m["text"] for m in r.json()] for r in answers]
    assert replies == [["Hello from the bot!"]] * 20, replies
    with session_scope(get_engine(gateways.db_url)) as session:
        rows = session.execute(
            select(ConversationEvent.kind, ConversationEvent.data)
            .where(ConversationEvent.conversation_id == cid)
            .order_by(ConversationEvent.id)
        ).all()
    kinds = [kind for kind, _ in rows]
    assert kinds.count("session_started") == 1, kinds  # the first turns did not overlap
    users = [data["text"] for kind, data in rows if kind == "user"]
    assert sorted(users) == sorted(texts)  # each once: none lost, none twice
    turns: list[list[str]] = []
    for kind, _ in rows:
        if kind == "user":
            turns.append([])
        elif turns:
            turns[-1].append(kind)
    # every user event is followed by its own bot reply before the next user event
    assert len(turns) == 20 and all(t.count("bot") == 1 for t in turns), turns


@pytest.mark.slow
def test_while_redis_is_down_turns_answer_503_and_resume_after(gateways: Gateways) -> None:
    a, b = gateways.a, gateways.b
    model_id = b.get(f"/v1/bots/{gateways.bot['id']}", headers=gateways.key).json()["nlu_model_id"]
    ana = gateways.login(a, "ana")
    with b.websocket_connect(gateways.socket_url("visitor-0004")) as ws:
        welcome = ws.receive_json()
        token, cid = welcome["session_token"], welcome["conversation_id"]
        assert gateways.rest(a, "visitor-0004", token, "hello").status_code == 200
        frames_until(ws, "message")  # the bot's reply, through A
        gateways.redis.stop()
        try:
            r = gateways.rest(a, "visitor-0004", token, "hello")  # the widget's call: a visitor
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["error"] == "unavailable" and "again" in body["message"]
            assert "redis" not in r.text.lower() and int(r.headers["Retry-After"]) > 0
            server = a.post(  # Rasa's REST channel with an API key: a server, told everything
                f"/v1/bots/{gateways.bot['id']}/webhooks/rest",
                json={"sender": "server-0004", "message": "hello"},
                headers=gateways.key,
            )
            assert server.status_code == 503, server.text
            assert server.json()["error"] == "unavailable" and "Redis" in server.json()["message"]
            ws.send_json({"type": "message", "text": "talk to a human", "client_id": "down-1"})
            error = frames_until(ws, "error")  # and the socket stays open
            assert error["error"] == "unavailable" and error["client_id"] == "down-1"
            # the visitor is told to send it again, not where the servers are
            assert "again" in error["message"] and "redis" not in error["message"].lower()
            assert error["retry_after"] > 0
            predicted = b.post(
                f"/v1/models/{model_id}/predict", json={"text": "hello"}, headers=gateways.key
            )
            assert predicted.status_code == 200, predicted.text
        finally:
            gateways.redis.start()
        # the same socket, no restart of anything: the next message is answered
        ws.send_json({"type": "message", "text": "talk to a human", "client_id": "up-1"})
        assert frames_until(ws, "ack")["client_id"] == "up-1"
        assert frames_until(ws, "status")["status"] == "waiting_for_agent"
        at = f"/v1/agent/conversations/{cid}"
        a.cookies.clear()
        assert a.post(f"{at}/claim", cookies=ana, headers=csrf(ana)).status_code == 200
        gateways.redis.stop()
        try:
            a.cookies.clear()
            r = a.post(
                f"{at}/messages", json={"text": "Still there?"}, cookies=ana, headers=csrf(ana)
            )
            assert r.status_code == 503 and r.json()["error"] == "unavailable", r.text
            assert "Redis" in r.json()["message"]  # the /v1 API names it
        finally:
            gateways.redis.start()
        # B's subscriber reconnects and subscribes the socket's topic again by itself
        client = redis.Redis.from_url(gateways.redis.url)
        deadline = time.monotonic() + 10
        while client.pubsub_numsub(f"parley:hub:{cid}")[0][1] < 1:
            assert time.monotonic() < deadline, "gateway B did not subscribe again"
            time.sleep(0.05)
        a.cookies.clear()
        r = a.post(f"{at}/messages", json={"text": "Hi, I'm Ana"}, cookies=ana, headers=csrf(ana))
        assert r.status_code == 200, r.text
        frame = frames_until(ws, "message")  # through A, Redis, B
        assert frame["from"] == "agent" and frame["message"]["text"] == "Hi, I'm Ana"
    a.cookies.clear()


@pytest.mark.slow
def test_sockets_gone_before_they_are_ready_leave_no_listener(
    gateways: Gateways, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A web chat socket or an agents' console closed while the gateway subscribes it to the
    other gateways' frames is unsubscribed (no listener left behind)."""
    a = gateways.a
    hub = a.app.state.gateway.conversations.hub  # type: ignore[attr-defined]
    before = hub.listeners()

    called = threading.Event()

    async def gone(topic: str) -> None:
        called.set()
        raise WebSocketDisconnect(1001)  # the visitor closed the tab meanwhile

    monkeypatch.setattr(hub, "ready", gone)
    ana = gateways.login(a, "ana")
    for url, cookies in ((gateways.socket_url("visitor-0005"), None), ("/v1/agent/ws", ana)):
        called.clear()
        a.cookies.clear()
        with suppress(WebSocketDisconnect), a.websocket_connect(url, cookies=cookies):
            assert called.wait(30), url
    a.cookies.clear()
    assert hub.listeners() == before

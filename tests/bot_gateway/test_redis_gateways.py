"""Two gateways (two ``create_app`` TestClients) on one SQLite file and one real redis-server
of this module's own: rate limits, the agents' login lockout and quotas are counted once for
both, a key revoked on one is refused on the other at once (no polling: ``lookup_ttl`` 60 s),
a provider's redelivery to the other gateway runs no second turn; with Redis stopped
predictions still answer, what needs Redis answers 503 naming it, and everything works again
once it is back, without restarting a gateway."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bot_gateway import ratelimit
from bot_gateway.app import create_app
from bot_gateway.services.accounts import create_agent
from connectors.registry import connectors
from core.counters import FallbackCounterStore
from core.db import get_engine, session_scope
from core.metrics import counters
from tests.bot_gateway.conftest import OPERATOR
from tests.conftest import make_db_url, make_settings
from tests.connectors.telegram_kit import KIT
from tests.support.bots import handoff_bot
from tests.support.images import encode, shape_image
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
IMAGE = encode(shape_image("circle", 5))


@dataclass
class Pair:
    a: TestClient
    b: TestClient
    redis: RedisServer
    url: str  # the database's
    calls: list[httpx.Request]  # what both gateways sent to Telegram's fake

    def tenant(self, name: str) -> tuple[str, dict[str, str]]:
        r = self.a.post("/v1/tenants", json={"name": name}, headers=OPERATOR)
        assert r.status_code == 201, r.text
        return r.json()["tenant_id"], {"Authorization": f"Bearer {r.json()['api_key']}"}

    def agent(self, tenant_id: str, username: str) -> None:
        with session_scope(get_engine(self.url)) as session:
            create_agent(session, tenant_id=tenant_id, username=username, password=PASSWORD)


@pytest.fixture(scope="module")
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("redis-gateways")
    url = make_db_url("sqlite", tmp, request)
    calls: list[httpx.Request] = []
    with RedisServer() as redis:

        def gateway(name: str, workers: int) -> TestClient:
            settings = make_settings(
                tmp / name,
                url,
                redis={"url": redis.url},
                serving={"lookup_ttl": 60},
                queue={"workers": workers, "threads": 1, "poll_interval": 0.1},
            )
            app = create_app(
                settings, warm_encoder=False, http_transport=KIT.provider(IMAGE, calls)
            )
            return TestClient(app)

        with gateway("a", 1) as a, gateway("b", 0) as b:
            yield Pair(a, b, redis, url, calls)


def statuses(pair: Pair, send: Callable[[TestClient], Any], times: int) -> list[int]:
    """``send`` through A and B in turn, ``times`` in all: the status codes."""
    return [send(pair.a if i % 2 == 0 else pair.b).status_code for i in range(times)]


def login(client: TestClient, tenant: str, username: str, password: str = PASSWORD) -> Any:
    body = {"tenant": tenant, "username": username, "password": password}
    return client.post("/v1/agent/login", json=body)


def predict(client: TestClient, key: dict[str, str]) -> Any:
    body = {"text": "Send it to Paris on Monday"}
    return client.post("/v1/models/prebuilt-entities/predict", json=body, headers=key)


def test_rate_limits_are_counted_once_for_both_gateways(pair: Pair) -> None:
    tenant_id, key = pair.tenant("limited")
    rates = {"api_key": {"per_second": 0.01, "burst": 6}}
    r = pair.a.patch(f"/v1/tenants/{tenant_id}", json={"rate_limits": rates}, headers=OPERATOR)
    assert r.status_code == 200, r.text
    codes = statuses(pair, lambda c: c.get("/v1/models", headers=key), 10)
    assert codes == [200] * 6 + [429] * 4  # 6 in all, not 6 per gateway
    refused = pair.b.get("/v1/models", headers=key)
    assert refused.json()["error"] == "rate_limited" and "Retry-After" in refused.headers


def test_the_login_lockout_is_counted_once_for_both_gateways(pair: Pair) -> None:
    tenant_id, _ = pair.tenant("desk")
    pair.agent(tenant_id, "ana")
    wrong = statuses(pair, lambda c: login(c, "desk", "ana", "not-the-password"), 5)
    assert wrong == [401] * 5
    for client in (pair.a, pair.b):  # locked on both, even with the right password
        locked = login(client, "desk", "ana")
        assert locked.status_code == 429, locked.text
        assert "too many failed logins" in locked.json()["message"]


def test_parallel_guesses_on_both_gateways_get_no_more_than_the_lockout_allows(
    pair: Pair,
) -> None:
    tenant_id, _ = pair.tenant("rushed")
    pair.agent(tenant_id, "di")
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda i: login(pair.a if i % 2 else pair.b, "rushed", "di", f"guess-{i}"),
                range(8),
            )
        )
    codes = sorted(r.status_code for r in answers)
    assert codes == [401] * 5 + [429] * 3, [r.text for r in answers]  # 5 guesses checked in all
    for locked in (r for r in answers if r.status_code == 429):
        assert "too many failed logins" in locked.json()["message"]


def test_the_predictions_quota_is_counted_once_for_both_gateways(pair: Pair) -> None:
    tenant_id, key = pair.tenant("metered")
    quotas = {"predictions_per_month": 3}
    r = pair.a.patch(f"/v1/tenants/{tenant_id}", json={"quotas": quotas}, headers=OPERATOR)
    assert r.status_code == 200, r.text
    codes = statuses(pair, lambda c: predict(c, key), 5)
    assert codes == [200, 200, 200, 429, 429]  # 3 in all, not 3 per gateway
    refused = predict(pair.b, key).json()
    assert refused["quota"] == "predictions_per_month" and refused["used"] == 3


def test_predictions_made_while_redis_refused_them_count_once_it_is_back(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "PREDICTIONS_TTL", 1.0)  # 60 s in production
    tenant_id, key = pair.tenant("metered-outage")
    quotas = {"predictions_per_month": 4}
    r = pair.a.patch(f"/v1/tenants/{tenant_id}", json={"quotas": quotas}, headers=OPERATOR)
    assert r.status_code == 200, r.text
    assert predict(pair.a, key).status_code == 200  # the shared total: 1
    with pair.redis.refusing_writes("readonly"):  # Redis keeps its data, takes no counts
        assert predict(pair.a, key).status_code == 200  # counted in process (and the usage)
        assert predict(pair.b, key).status_code == 200
    time.sleep(FallbackCounterStore.RETRY_S + 0.5)  # both gateways on Redis again
    codes = [predict(client, key).status_code for client in (pair.a, pair.b, pair.a)]
    assert codes == [200, 429, 429]  # 3 + 1: the outage's two were not lost
    refused = predict(pair.b, key).json()
    assert refused["quota"] == "predictions_per_month" and refused["used"] == 4


def test_a_key_revoked_on_one_gateway_is_refused_on_the_other_at_once(pair: Pair) -> None:
    _, admin = pair.tenant("revoking")
    body = {"name": "ci", "scopes": ["predict", "train"]}
    r = pair.a.post("/v1/keys", json=body, headers=admin)
    assert r.status_code == 201, r.text
    created = r.json()
    key = {"Authorization": f"Bearer {created['api_key']}"}
    assert pair.b.get("/v1/models", headers=key).status_code == 200  # now cached on B
    assert pair.b.get("/v1/models", headers=key).status_code == 200
    assert pair.a.delete(f"/v1/keys/{created['id']}", headers=admin).status_code == 200
    revoked_at = time.monotonic()  # from the answer: the 2 s are the news', not the DELETE's
    while (r := pair.b.get("/v1/models", headers=key)).status_code == 200:
        assert time.monotonic() - revoked_at < 2, "B still takes a key revoked on A"
        time.sleep(0.02)
    assert r.status_code == 401 and "revoked" in r.json()["message"]


@pytest.fixture(scope="module")
def channel(pair: Pair) -> dict[str, Any]:
    """A trained bot of a new tenant, connected to Telegram (the kit's fake)."""
    _, key = pair.tenant("telegraphed")
    bot = pair.a.post("/v1/bots", json=handoff_bot(), headers=key).json()
    deadline = time.monotonic() + 180
    while pair.a.get(f"/v1/bots/{bot['id']}", headers=key).json()["status"] == "training":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    body = {"type": "telegram", "config": KIT.config()}
    r = pair.a.post(f"/v1/bots/{bot['id']}/channels", json=body, headers=key)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def deliver(client: TestClient, channel: dict[str, Any], text: str, message_id: str) -> Any:
    cls = connectors.get("telegram")
    connector = cls(
        cls.Config.model_validate(KIT.config()),
        httpx.AsyncClient(),
        webhook_url=channel["webhook_url"],
    )
    request = KIT.text_webhook(connector, text, sender="cust-9", message_id=message_id)
    return client.post(f"/webhooks/{channel['id']}", content=request.body, headers=request.headers)


def sent(pair: Pair) -> list[str]:
    return [m["text"] for m in KIT.sent(pair.calls)]


def test_a_redelivery_to_the_other_gateway_runs_no_second_turn(
    pair: Pair, channel: dict[str, Any]
) -> None:
    before, duplicates = len(sent(pair)), counters.get("webhook.duplicate", channel="telegram")
    assert deliver(pair.a, channel, "hello", "msg-41").status_code == 200
    assert deliver(pair.b, channel, "hello", "msg-41").status_code == 200  # the provider's retry
    deadline = time.monotonic() + 30
    while len(sent(pair)) < before + 1:
        assert time.monotonic() < deadline, sent(pair)
        time.sleep(0.05)
    time.sleep(1.0)
    assert sent(pair)[before:] == ["Hello from the bot!"]  # one turn, one answer
    assert counters.get("webhook.duplicate", channel="telegram") == duplicates + 1


def test_with_redis_stopped_predictions_answer_and_the_rest_says_redis(
    pair: Pair, channel: dict[str, Any]
) -> None:
    tenant_id, key = pair.tenant("outage")
    pair.agent(tenant_id, "bo")
    pair.redis.stop()
    try:
        for client in (pair.a, pair.b):
            assert predict(client, key).status_code == 200  # rate limits count in process
            refused = login(client, "outage", "bo")
            assert refused.status_code == 503, refused.text
            body = refused.json()
            assert body["error"] == "unavailable"
            assert f"Redis at redis://127.0.0.1:{pair.redis.port}/0" in body["message"]
            assert "login lockout" in body["message"] and "Retry-After" in refused.headers
        webhook = deliver(pair.b, channel, "hello", "msg-77")
        assert webhook.status_code == 503, webhook.text  # the provider delivers it again later
        assert "Redis" in webhook.json()["message"]
    finally:
        pair.redis.start()
    deadline = time.monotonic() + 10
    while login(pair.b, "outage", "bo").status_code != 200:  # no restart needed
        assert time.monotonic() < deadline, "login still refused after Redis came back"
        time.sleep(0.2)
    assert login(pair.a, "outage", "bo").status_code == 200
    before = len(sent(pair))
    assert deliver(pair.b, channel, "hello", "msg-77").status_code == 200  # redelivered: runs
    deadline = time.monotonic() + 30
    while len(sent(pair)) < before + 1:
        assert time.monotonic() < deadline, sent(pair)
        time.sleep(0.05)


def test_a_redis_refusing_writes_answers_503_where_needed_and_predictions_go_on(
    pair: Pair, channel: dict[str, Any]
) -> None:
    tenant_id, key = pair.tenant("refused")
    pair.agent(tenant_id, "eve")
    where = f"Redis at redis://127.0.0.1:{pair.redis.port}/0 refuses commands"
    with pair.redis.refusing_writes("oom"):  # maxmemory reached, noeviction
        for client in (pair.a, pair.b):
            assert predict(client, key).status_code == 200  # rate limits count in process
        webhook = deliver(pair.b, channel, "hello", "msg-91")
        assert webhook.status_code == 503, webhook.text  # not 500: the provider retries
        assert where in webhook.json()["message"] and "OutOfMemoryError" in webhook.text
    with pair.redis.refusing_writes("readonly"):  # a replica: reads only
        for client in (pair.a, pair.b):
            assert predict(client, key).status_code == 200
            refused = login(client, "refused", "eve")
            assert refused.status_code == 503, refused.text
            body = refused.json()
            assert body["error"] == "unavailable" and where in body["message"]
            assert "login lockout" in body["message"] and "Retry-After" in refused.headers
    deadline = time.monotonic() + 10
    while login(pair.a, "refused", "eve").status_code != 200:  # no restart needed
        assert time.monotonic() < deadline, "login still refused after Redis took writes again"
        time.sleep(0.2)
    assert deliver(pair.a, channel, "hello", "msg-91").status_code == 200


def test_a_hung_redis_does_not_stall_the_gateways_other_requests(pair: Pair) -> None:
    _, key = pair.tenant("hung")
    gateway = pair.a.app.state.gateway
    deadline = time.monotonic() + 2 * FallbackCounterStore.RETRY_S + 5
    while True:  # on Redis's buckets (not still on the fallback after an earlier test's fault)
        assert pair.a.get("/v1/models", headers=key).status_code == 200
        if not gateway.counter_store.degraded:
            break
        assert time.monotonic() < deadline, "the counters never went back to Redis"
        time.sleep(0.2)
    timeout = gateway.settings.redis.socket_timeout_s
    with pair.redis.paused(), ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        keyed = pool.submit(pair.a.get, "/v1/models", headers=key)  # waits on Redis, falls back
        time.sleep(0.3)
        asked = time.monotonic()
        assert pair.a.get("/v1/health").status_code == 200
        health_s = time.monotonic() - asked
        assert keyed.result(timeout=60).status_code == 200
        keyed_s = time.monotonic() - started
    assert keyed_s >= timeout * 0.9, "the keyed request never waited on the hung Redis"
    assert health_s < timeout / 2, f"health waited {health_s:.1f} s behind a Redis call"

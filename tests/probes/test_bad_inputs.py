"""The bad-input corpus: hostile and careless requests against a real ``parley serve``.

One case per entry (its id says what it sends where): the findings of issue 12 (YAML alias
bombs, deep nesting in JSON and YAML bodies, integers of 2^63 and more, huge bodies with and
without ``Content-Length``) and the classic bombs (a zip that expands past the archive limits,
a PNG that declares ten billion pixels, a YAML of 10k anchors, a 100 MB text field), invalid
UTF-8 and NUL bytes. Each case asserts what a user of the server would notice:

* the answer is the expected 4xx (never a 5xx, never a hang: every request has a timeout),
  with a JSON error body ``{"error", "message"}``; a huge body is refused before it has all
  been sent (the server stops reading; it does not buffer 64 MB to refuse it afterwards);
* the server is alive afterwards (``GET /v1/health``);
* nothing of the refused request was stored (row counts of every tenant-data table);
* after each heavy case, another tenant's (C's) prediction latency stays within
  max(5x its baseline p50, baseline + 200 ms), and the server's resident memory, sampled
  while the request ran, grew by at most ``MAX_PEAK_GROWTH_MB`` (memory the allocator kept
  from an earlier case is reused without growing again, so a later bomb of the same shape
  can pass this check; each case's own time is in its failure message).

Tenant M (mallory) sends the corpus; tenant C is the bystander.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.probes.conftest import LiveGateway, ProbeTenant, wait_for
from tests.support.bombs import (
    alias_bomb_bot_yaml,
    deep_json,
    deep_yaml,
    many_anchors_yaml,
    png_bomb,
    repeated_member_zip,
)
from tests.support.data import RASA_NLU, intent_csv
from tests.support.images import encode, shape_image, zip_bytes

pytestmark = pytest.mark.slow

TIMEOUT_S = 60.0  # per request: longer is a hang
HUGE = 64 * 1024 * 1024  # a huge body (the JSON and webhook caps are 1 MB)
GIANT = 100 * 1024 * 1024  # a giant one (uploads are capped at 50 MB)
IN_FLIGHT = 16 * 1024 * 1024  # more than loopback socket buffers hold
DEEP = 50_000  # nesting levels (Python's recursion limit is 1,000)
BIG = str(2**63)
MAX_PEAK_GROWTH_MB = 1024
ROW_TABLES = (
    "tenants",
    "api_keys",
    "datasets",
    "examples",
    "models",
    "aliases",
    "bots",
    "bot_versions",
    "conversations",
    "conversation_events",
    "uploads",
    "channels",
    "agents",
)

# --- sending ---------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int  # 0: no answer at all
    body: bytes
    sent: int  # body bytes the server took before it answered
    seconds: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")[:300]


def via_httpx(ctx: Ctx, method: str, path: str, **kwargs: Any) -> Answer:
    """One request with httpx (bodies of a few MB at most)."""
    t0 = time.perf_counter()
    with ctx.gateway.client(timeout=TIMEOUT_S) as c:
        r = c.request(method, path, **kwargs)
    size = int(r.request.headers.get("content-length") or 0)
    return Answer(r.status_code, r.content, size, time.perf_counter() - t0)


def streamed(
    ctx: Ctx,
    path: str,
    pieces: Iterable[bytes],
    *,
    total: int,
    chunked: bool,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> Answer:
    """POST a large body over a raw socket, piece by piece, stopping as soon as the server
    answers (an HTTP client would insist on sending everything first). ``chunked``: no
    ``Content-Length`` (``Transfer-Encoding: chunked``), else the true length is declared."""
    url = urlsplit(ctx.gateway.url)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {url.netloc}",
        "Connection: close",
        f"Content-Type: {content_type}",
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    t0 = time.perf_counter()
    deadline = t0 + TIMEOUT_S
    sock = socket.create_connection((url.hostname, url.port), timeout=TIMEOUT_S)
    sent, received = 0, b""
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.setblocking(False)

        def frames() -> Iterator[bytes]:
            for piece in pieces:
                yield (b"%x\r\n%s\r\n" % (len(piece), piece)) if chunked else piece
            if chunked:
                yield b"0\r\n\r\n"

        answered = False
        for frame in frames():
            view = memoryview(frame)
            while view:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return Answer(0, b"(timed out while sending)", sent, TIMEOUT_S)
                readable, writable, _ = select.select([sock], [sock], [], left)
                if readable:
                    answered = True
                    break
                try:
                    n = sock.send(view)
                except (BrokenPipeError, ConnectionResetError):
                    answered = True
                    break
                view = view[n:]
                sent += n
            if answered:
                break
        while time.perf_counter() < deadline:
            readable, _, _ = select.select([sock], [], [], deadline - time.perf_counter())
            if not readable:
                break
            try:
                data = sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
    finally:
        sock.close()
    elapsed = time.perf_counter() - t0
    head, _, body = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return Answer(0, received or b"(no answer)", sent, elapsed)
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return Answer(status, body, sent, elapsed)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def filler(prefix: bytes, total: int, suffix: bytes = b'"}') -> Iterator[bytes]:
    """``prefix`` + "aaaa..." + ``suffix``, ``total`` bytes, in 256 KB pieces."""
    yield prefix
    left = total - len(prefix) - len(suffix)
    piece = b"a" * (256 * 1024)
    while left > 0:
        yield piece[: min(left, len(piece))]
        left -= len(piece)
    yield suffix


# --- the world: the attacker M and the bystander C ------------------------------------------


@dataclass
class Ctx:
    gateway: LiveGateway
    m: ProbeTenant
    ids: dict[str, str]  # M's bot, text dataset, model, conversation
    c: ProbeTenant
    c_model: str
    baseline_ms: float
    pid: int

    @property
    def mh(self) -> dict[str, str]:
        return self.m.headers


def _train(client: httpx.Client, tenant: ProbeTenant, name: str) -> tuple[str, str]:
    h = tenant.headers
    ds = client.post(
        "/v1/datasets",
        files={"file": ("intents.csv", intent_csv())},
        data={"name": name, "type": "text-intent"},
        headers=h,
    )
    assert ds.status_code == 201, ds.text
    model = client.post("/v1/models", json={"dataset_id": ds.json()["id"]}, headers=h)
    assert model.status_code == 202, model.text
    model_id = model.json()["id"]
    status = wait_for(
        lambda: (
            (s := client.get(f"/v1/models/{model_id}", headers=h).json()["status"])
            in ("succeeded", "failed")
            and s
        ),
        f"{tenant.name}'s model",
    )
    assert status == "succeeded"
    return ds.json()["id"], model_id


def victim_p50_ms(ctx: Ctx, n: int = 9) -> float:
    times = []
    with ctx.gateway.client(timeout=TIMEOUT_S) as c:
        for i in range(n):
            t0 = time.perf_counter()
            r = c.post(
                f"/v1/models/{ctx.c_model}/predict",
                json={"text": f"where is my order {i}"},
                headers=ctx.c.headers,
            )
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
    return statistics.median(times)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class MemoryWatch:
    """The server's resident memory, sampled every 20 ms while a request runs: the growth
    of its peak over what it held before."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError, AssertionError):
                self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def grown_mb(self) -> float:
        return self.peak - self.before


def row_counts(gateway: LiveGateway) -> dict[str, int]:
    path = gateway.data_dir / "parley.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ROW_TABLES}


@pytest.fixture(scope="module")
def ctx(live_gateway: LiveGateway) -> Ctx:
    m = live_gateway.new_tenant("mallory")
    c = live_gateway.tenants["c"]
    with live_gateway.client(timeout=TIMEOUT_S) as client:
        m_ds, m_model = _train(client, m, "m-intents")
        _, c_model = _train(client, c, "c-intents")
        bot = client.post(
            "/v1/bots",
            json={
                "name": "m-bot",
                "nlu": {"model": m_model},
                "responses": {"utter_greet": [{"text": "hi"}]},
                "flows": {"greet": {"intents": ["greet"], "steps": [{"reply": "utter_greet"}]}},
            },
            headers=m.headers,
        )
        assert bot.status_code == 201, bot.text
        bot_id = bot.json()["id"]
        said = client.post(
            f"/v1/bots/{bot_id}/webhooks/rest",
            json={"sender": "m-customer", "message": "hello"},
            headers=m.headers,
        )
        assert said.status_code == 200, said.text
        page = client.get("/v1/conversations", params={"bot_id": bot_id}, headers=m.headers)
        conversation = page.json()["items"][0]["id"]
        shapes = {f"circle/c{i}.png": encode(shape_image("circle", i), "PNG") for i in range(2)}
        images = client.post(
            "/v1/datasets",
            files={"file": ("shapes.zip", zip_bytes(shapes))},
            data={"name": "m-shapes", "type": "image"},
            headers=m.headers,
        )
        assert images.status_code == 201, images.text
        channel = client.post(
            f"/v1/bots/{bot_id}/channels",
            json={
                "type": "twilio",
                "config": {
                    "account_sid": "AC" + "0" * 32,
                    "auth_token": "m-twilio-token",
                    "from_number": "+15550002222",
                },
            },
            headers=m.headers,
        )
        assert channel.status_code == 201, channel.text
    ids = {
        "channel": channel.json()["id"],
        "bot": bot_id,
        "dataset": m_ds,
        "image_dataset": images.json()["id"],
        "model": m_model,
        "conversation": conversation,
    }
    out = Ctx(live_gateway, m, ids, c, c_model, 0.0, live_gateway.pid)
    socket_url = live_gateway.url.replace("http://", "ws://") + f"/v1/bots/{bot_id}/ws"
    with connect(f"{socket_url}?token={m.key}&session={SOCKET_SESSION}", open_timeout=20) as ws:
        assert json.loads(ws.recv(timeout=20))["type"] == "welcome"  # the socket cases' one
    victim_p50_ms(out, 5)  # warm
    out.baseline_ms = victim_p50_ms(out, 15)
    return out


# --- the corpus ------------------------------------------------------------------------------

YAML = "application/yaml"


@dataclass(frozen=True)
class Probe:
    id: str
    send: Callable[[Ctx], Answer]
    expect: frozenset[int] | None = None  # None: any 4xx
    heavy: bool = False
    streamed: int = 0  # a streamed body's size: the server must answer before it is all sent


def probe(
    id: str, expect: Iterable[int] | None = None, *, heavy: bool = False, streams: int = 0
) -> Callable[[Callable[[Ctx], Answer]], Callable[[Ctx], Answer]]:
    def register(fn: Callable[[Ctx], Answer]) -> Callable[[Ctx], Answer]:
        CORPUS.append(Probe(id, fn, frozenset(expect) if expect else None, heavy, streams))
        return fn

    return register


CORPUS: list[Probe] = []

# finding 1: YAML alias bombs, in every YAML parser


@probe("alias bomb: POST /v1/bots (application/yaml)", heavy=True)
def _(ctx: Ctx) -> Answer:
    return via_httpx(
        ctx,
        "POST",
        "/v1/bots",
        content=alias_bomb_bot_yaml(),
        headers={**ctx.mh, "Content-Type": YAML},
    )


@probe("alias bomb: POST /v1/bots (multipart bot.yml)", heavy=True)
def _(ctx: Ctx) -> Answer:
    files = {"file": ("bot.yml", alias_bomb_bot_yaml().encode())}
    return via_httpx(ctx, "POST", "/v1/bots", files=files, headers=ctx.mh)


@probe("alias bomb: PUT /v1/bots/{id} (application/yaml)", heavy=True)
def _(ctx: Ctx) -> Answer:
    return via_httpx(
        ctx,
        "PUT",
        f"/v1/bots/{ctx.ids['bot']}",
        content=alias_bomb_bot_yaml(),
        headers={**ctx.mh, "Content-Type": YAML},
    )


NLU_BOMB = (
    'version: "3.1"\n'
    "x: &l0 [a, a, a, a, a, a, a, a, a, a]\n"
    + "".join(f"x{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 10))
    + "nlu:\n- intent: greet\n  examples: |\n    - hi\n  metadata: *l9\n"
)


@probe("alias bomb: POST /v1/datasets (nlu.yml)", heavy=True)
def _(ctx: Ctx) -> Answer:
    files = {"file": ("nlu.yml", NLU_BOMB.encode())}
    data = {"name": "bomb", "type": "text-intent"}
    return via_httpx(ctx, "POST", "/v1/datasets", files=files, data=data, headers=ctx.mh)


@probe("alias bomb: POST /v1/bots/import/rasa (domain.yml)", heavy=True)
def _(ctx: Ctx) -> Answer:
    domain = NLU_BOMB.replace(
        "nlu:\n- intent: greet\n  examples: |\n    - hi\n  metadata: *l9\n", ""
    )
    domain += "intents: [greet]\nresponses:\n  utter_greet:\n  - text: hi\n    custom: *l9\n"
    files = {"domain": ("domain.yml", domain.encode()), "nlu": ("nlu.yml", RASA_NLU.encode())}
    return via_httpx(
        ctx, "POST", "/v1/bots/import/rasa", files=files, data={"name": "bomb"}, headers=ctx.mh
    )


@probe("alias bomb: POST /v1/bots/{id}/test (stories.yml)", heavy=True)
def _(ctx: Ctx) -> Answer:
    stories = NLU_BOMB.replace(
        "nlu:\n- intent: greet\n  examples: |\n    - hi\n  metadata: *l9\n", ""
    )
    stories += "stories:\n- story: s\n  steps:\n  - user: hi\n    metadata: *l9\n"
    files = {"stories": ("stories.yml", stories.encode())}
    return via_httpx(ctx, "POST", f"/v1/bots/{ctx.ids['bot']}/test", files=files, headers=ctx.mh)


@probe("10k anchors: POST /v1/bots (application/yaml)", heavy=True)
def _(ctx: Ctx) -> Answer:
    return via_httpx(
        ctx,
        "POST",
        "/v1/bots",
        content=many_anchors_yaml(),
        headers={**ctx.mh, "Content-Type": YAML},
    )


# finding 3: deep nesting (RecursionError) -> 422


def _deep_bot_json() -> bytes:
    return (
        '{"name": "deep", "responses": {"utter_greet": [{"text": "hi", "custom": {"p": '
        + deep_json(DEEP)
        + "}}]}}"
    ).encode()


@probe("deep JSON: POST /v1/datasets/{id}/examples", {422})
def _(ctx: Ctx) -> Answer:
    body = '[{"text": "hi", "label": "greet", "meta": ' + deep_json(DEEP) + "}]"
    return via_httpx(
        ctx,
        "POST",
        f"/v1/datasets/{ctx.ids['dataset']}/examples",
        content=body,
        headers={**ctx.mh, "Content-Type": "application/json"},
    )


@probe("deep JSON: POST /v1/bots (application/json)", {422})
def _(ctx: Ctx) -> Answer:
    return via_httpx(
        ctx,
        "POST",
        "/v1/bots",
        content=_deep_bot_json(),
        headers={**ctx.mh, "Content-Type": "application/json"},
    )


@probe("deep YAML: POST /v1/bots (application/yaml)", {422})
def _(ctx: Ctx) -> Answer:
    return via_httpx(
        ctx, "POST", "/v1/bots", content=deep_yaml(DEEP), headers={**ctx.mh, "Content-Type": YAML}
    )


@probe("deep YAML: POST /v1/bots (multipart bot.yml)", {422})
def _(ctx: Ctx) -> Answer:
    files = {"file": ("bot.yml", deep_yaml(DEEP).encode())}
    return via_httpx(ctx, "POST", "/v1/bots", files=files, headers=ctx.mh)


@probe("deep JSON: PUT /v1/bots/{id} (application/json)", {422})
def _(ctx: Ctx) -> Answer:
    return via_httpx(
        ctx,
        "PUT",
        f"/v1/bots/{ctx.ids['bot']}",
        content=_deep_bot_json(),
        headers={**ctx.mh, "Content-Type": "application/json"},
    )


@probe("deep YAML: PUT /v1/bots/{id} (application/yaml)", {422})
def _(ctx: Ctx) -> Answer:
    return via_httpx(
        ctx,
        "PUT",
        f"/v1/bots/{ctx.ids['bot']}",
        content=deep_yaml(DEEP),
        headers={**ctx.mh, "Content-Type": YAML},
    )


@probe("deep JSON: POST /v1/datasets (data.json)", {422})
def _(ctx: Ctx) -> Answer:
    body = '[{"text": "hi", "label": ' + deep_json(DEEP, '"greet"') + "}]"
    files = {"file": ("data.json", body.encode())}
    data = {"name": "deep", "type": "text-intent"}
    return via_httpx(ctx, "POST", "/v1/datasets", files=files, data=data, headers=ctx.mh)


@probe("deep YAML: POST /v1/datasets (nlu.yml)", {422})
def _(ctx: Ctx) -> Answer:
    body = (
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n'
        f"  metadata: {deep_json(DEEP)}\n"
    )
    files = {"file": ("nlu.yml", body.encode())}
    data = {"name": "deep", "type": "text-intent"}
    return via_httpx(ctx, "POST", "/v1/datasets", files=files, data=data, headers=ctx.mh)


@probe("deep YAML: POST /v1/bots/import/rasa (domain.yml)", {422})
def _(ctx: Ctx) -> Answer:
    domain = (
        "intents: [greet]\nresponses:\n  utter_greet:\n  - text: hi\n"
        f"    custom: {deep_json(DEEP)}\n"
    )
    files = {"domain": ("domain.yml", domain.encode()), "nlu": ("nlu.yml", RASA_NLU.encode())}
    return via_httpx(
        ctx, "POST", "/v1/bots/import/rasa", files=files, data={"name": "deep"}, headers=ctx.mh
    )


@probe("deep YAML: POST /v1/bots/{id}/test (stories.yml)", {422})
def _(ctx: Ctx) -> Answer:
    stories = f"stories:\n- story: s\n  steps:\n  - user: {deep_json(DEEP)}\n"
    files = {"stories": ("stories.yml", stories.encode())}
    return via_httpx(ctx, "POST", f"/v1/bots/{ctx.ids['bot']}/test", files=files, headers=ctx.mh)


@probe("deep JSON: POST /v1/models/{id}/predict", {422})
def _(ctx: Ctx) -> Answer:
    body = '{"text": "hi", "texts": ' + deep_json(DEEP, '"x"') + "}"
    return via_httpx(
        ctx,
        "POST",
        f"/v1/models/{ctx.ids['model']}/predict",
        content=body,
        headers={**ctx.mh, "Content-Type": "application/json"},
    )


@probe("deep JSON: POST /v1/bots/{id}/webhooks/rest", {422})
def _(ctx: Ctx) -> Answer:
    body = '{"sender": "s", "message": "hi", "metadata": ' + deep_json(DEEP) + "}"
    return via_httpx(
        ctx,
        "POST",
        f"/v1/bots/{ctx.ids['bot']}/webhooks/rest",
        content=body,
        headers={**ctx.mh, "Content-Type": "application/json"},
    )


# finding 3: integers of 2^63 and more -> 422


@probe("2^63 offset: GET /v1/conversations?offset=", {422})
def _(ctx: Ctx) -> Answer:
    return via_httpx(ctx, "GET", "/v1/conversations", params={"offset": BIG}, headers=ctx.mh)


@probe("2^63 limit: GET /v1/conversations?limit=", {422})
def _(ctx: Ctx) -> Answer:
    return via_httpx(ctx, "GET", "/v1/conversations", params={"limit": BIG}, headers=ctx.mh)


@probe("2^63 offset: GET /v1/datasets/{id}/examples?offset=", {422})
def _(ctx: Ctx) -> Answer:
    path = f"/v1/datasets/{ctx.ids['dataset']}/examples"
    return via_httpx(ctx, "GET", path, params={"offset": BIG}, headers=ctx.mh)


@probe("-2^63 offset: GET /v1/datasets/{id}/examples?offset=", {422})
def _(ctx: Ctx) -> Answer:
    path = f"/v1/datasets/{ctx.ids['dataset']}/examples"
    return via_httpx(ctx, "GET", path, params={"offset": "-" + BIG}, headers=ctx.mh)


@probe("2^63 after: GET /v1/conversations/{id}?after=", {422})
def _(ctx: Ctx) -> Answer:
    path = f"/v1/conversations/{ctx.ids['conversation']}"
    return via_httpx(ctx, "GET", path, params={"after": BIG}, headers=ctx.mh)


@probe("10^20 example id: GET /v1/datasets/{id}/examples/99999999999999999999/image", {404, 422})
def _(ctx: Ctx) -> Answer:
    path = f"/v1/datasets/{ctx.ids['dataset']}/examples/99999999999999999999/image"
    return via_httpx(ctx, "GET", path, headers=ctx.mh)


@probe("2^63 num_results: POST /v1/models/{id}/predict", {422})
def _(ctx: Ctx) -> Answer:
    body = '{"text": "hi", "num_results": ' + BIG + "}"
    return via_httpx(
        ctx,
        "POST",
        f"/v1/models/{ctx.ids['model']}/predict",
        content=body,
        headers={**ctx.mh, "Content-Type": "application/json"},
    )


# finding 2: huge bodies, with and without Content-Length -> 413 before it is all read


def _huge_case(route: str, path: Callable[[Ctx], str], prefix: bytes, auth: bool) -> None:
    for chunked in (False, True):
        framing = "chunked, no Content-Length" if chunked else "Content-Length"

        def send(ctx: Ctx, chunked: bool = chunked) -> Answer:
            return streamed(
                ctx,
                path(ctx),
                filler(prefix, HUGE),
                total=HUGE,
                chunked=chunked,
                headers=ctx.mh if auth else None,
            )

        CORPUS.append(
            Probe(f"64 MB body ({framing}): POST {route}", send, frozenset({413}), True, HUGE)
        )


_huge_case(
    "/v1/agent/login", lambda ctx: "/v1/agent/login", b'{"tenant": "x", "username": "', False
)
_huge_case(
    "/v1/bots/{id}/webhooks/rest",
    lambda ctx: f"/v1/bots/{ctx.ids['bot']}/webhooks/rest",
    b'{"sender": "s", "message": "',
    True,
)
_huge_case("/v1/keys", lambda ctx: "/v1/keys", b'{"scopes": ["predict"], "name": "', True)
_huge_case("/v1/tenants (no operator token)", lambda ctx: "/v1/tenants", b'{"name": "', False)
_huge_case(
    "/v1/models/{id}/predict",
    lambda ctx: f"/v1/models/{ctx.ids['model']}/predict",
    b'{"text": "',
    True,
)
_huge_case("/v1/ocr", lambda ctx: "/v1/ocr", b'{"image": "', True)


@probe(
    "100 MB text field (chunked): POST /v1/models/{id}/predict", {413}, heavy=True, streams=GIANT
)
def _(ctx: Ctx) -> Answer:
    path = f"/v1/models/{ctx.ids['model']}/predict"
    return streamed(
        ctx, path, filler(b'{"text": "', GIANT), total=GIANT, chunked=True, headers=ctx.mh
    )


BOUNDARY = "probe-boundary-7f3a"
UPLOAD_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="type"\r\n\r\ntext-intent\r\n'
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
    "Content-Type: text/csv\r\n\r\ntext,label\r\n"
).encode()


def _upload_case(chunked: bool) -> None:
    framing = "chunked, no Content-Length" if chunked else "Content-Length"

    def send(ctx: Ctx) -> Answer:
        return streamed(
            ctx,
            "/v1/datasets",
            filler(UPLOAD_HEAD, GIANT, f"\r\n--{BOUNDARY}--\r\n".encode()),
            total=GIANT,
            chunked=chunked,
            headers=ctx.mh,
            content_type=f"multipart/form-data; boundary={BOUNDARY}",
        )

    CORPUS.append(
        Probe(f"100 MB upload ({framing}): POST /v1/datasets", send, frozenset({413}), True, GIANT)
    )


_upload_case(chunked=False)
_upload_case(chunked=True)


@probe("64 MB webhook body (chunked): POST /webhooks/{channel_id}", {413}, heavy=True, streams=HUGE)
def _(ctx: Ctx) -> Answer:
    return streamed(
        ctx,
        f"/webhooks/{ctx.ids['channel']}",
        filler(b"From=%2B15550001111&Body=", HUGE, b""),
        total=HUGE,
        chunked=True,
        content_type="application/x-www-form-urlencoded",
    )


# bombs: zip, PNG


@probe(
    "zip bomb, 2,200 members of 1 MB zeros (2.2 GB from 320 KB): POST /v1/datasets image",
    heavy=True,
)
def _(ctx: Ctx) -> Answer:
    bomb = repeated_member_zip(bytes(1_000_000), 2200, name="shapes/{i}.png")
    files = {"file": ("bomb.zip", bomb)}
    data = {"name": "zip-bomb", "type": "image"}
    return via_httpx(ctx, "POST", "/v1/datasets", files=files, data=data, headers=ctx.mh)


@probe("zip bomb, one 90 MB member of zeros: POST /v1/datasets image", heavy=True)
def _(ctx: Ctx) -> Answer:
    bomb = repeated_member_zip(bytes(90_000_000), 1, name="shapes/big.png", bzip2=False)
    files = {"file": ("bomb.zip", bomb)}
    data = {"name": "zip-bomb", "type": "image"}
    return via_httpx(ctx, "POST", "/v1/datasets", files=files, data=data, headers=ctx.mh)


@probe("zip bomb in an image dataset's examples: POST /v1/datasets/{id}/examples", heavy=True)
def _(ctx: Ctx) -> Answer:
    bomb = repeated_member_zip(bytes(1_000_000), 2200, name="circle/{i}.png")
    path = f"/v1/datasets/{ctx.ids['image_dataset']}/examples"
    return via_httpx(ctx, "POST", path, files={"file": ("more.zip", bomb)}, headers=ctx.mh)


PNG_BOMB = png_bomb()


@probe(
    "PNG bomb (10^10 pixels declared): POST /v1/models/prebuilt-image/predict multipart", heavy=True
)
def _(ctx: Ctx) -> Answer:
    files = {"file": ("bomb.png", PNG_BOMB)}
    return via_httpx(ctx, "POST", "/v1/models/prebuilt-image/predict", files=files, headers=ctx.mh)


@probe(
    "PNG bomb (10^10 pixels declared): POST /v1/models/prebuilt-image/predict base64", heavy=True
)
def _(ctx: Ctx) -> Answer:
    import base64

    body = {"image": base64.b64encode(PNG_BOMB).decode()}
    return via_httpx(ctx, "POST", "/v1/models/prebuilt-image/predict", json=body, headers=ctx.mh)


@probe("PNG bomb (10^10 pixels declared): POST /v1/ocr multipart", heavy=True)
def _(ctx: Ctx) -> Answer:
    files = {"file": ("bomb.png", PNG_BOMB)}
    return via_httpx(ctx, "POST", "/v1/ocr", files=files, headers=ctx.mh)


@probe("PNG bomb (10^10 pixels declared): POST /v1/bots/{id}/uploads (web chat)", heavy=True)
def _(ctx: Ctx) -> Answer:
    files = {"file": ("bomb.png", PNG_BOMB)}
    return via_httpx(ctx, "POST", f"/v1/bots/{ctx.ids['bot']}/uploads", files=files, headers=ctx.mh)


@probe("PNG bomb inside an image dataset zip: POST /v1/datasets image", heavy=True)
def _(ctx: Ctx) -> Answer:
    bomb = zip_bytes(
        {"circle/bomb.png": PNG_BOMB, "square/ok.png": encode(shape_image("square", 1), "PNG")}
    )
    data = {"name": "png-bomb", "type": "image"}
    files = {"file": ("shapes.zip", bomb)}
    return via_httpx(ctx, "POST", "/v1/datasets", files=files, data=data, headers=ctx.mh)


# the web chat socket: a bad frame gets an error frame, and the socket still answers a ping


SOCKET_SESSION = "m-probe-socket-session"  # one conversation for every socket case


def via_socket(ctx: Ctx, frame: str | bytes) -> Answer:
    """Send ``frame`` on M's web chat socket: an error frame counts as a 422 whose body is the
    frame's ``{error, message}``, provided the socket then still answers a ping; a socket
    that closes or goes silent is no answer (status 0)."""
    url = ctx.gateway.url.replace("http://", "ws://") + f"/v1/bots/{ctx.ids['bot']}/ws"
    t0 = time.perf_counter()
    error: dict[str, Any] | None = None
    try:
        with connect(
            f"{url}?token={ctx.m.key}&session={SOCKET_SESSION}",
            open_timeout=20,
            max_size=None,
            close_timeout=5,
        ) as ws:
            assert json.loads(ws.recv(timeout=20))["type"] == "welcome"
            ws.send(frame)
            while error is None:
                got = json.loads(ws.recv(timeout=TIMEOUT_S))
                if got.get("type") == "error":
                    error = {"error": got.get("error"), "message": got.get("message")}
            ws.send(json.dumps({"type": "ping"}))
            while json.loads(ws.recv(timeout=20)).get("type") != "pong":
                pass
    except (ConnectionClosed, TimeoutError) as e:
        return Answer(0, f"(socket closed or silent: {e!r}; {error})".encode(), 0, 0.0)
    body = json.dumps(error).encode()
    return Answer(422, body, len(frame), time.perf_counter() - t0)


@probe("web chat socket: a 1 MB text frame")
def _(ctx: Ctx) -> Answer:
    return via_socket(ctx, json.dumps({"type": "message", "text": "a" * 1024 * 1024}))


@probe("web chat socket: a frame nested 50,000 deep")
def _(ctx: Ctx) -> Answer:
    return via_socket(ctx, '{"type": "message", "text": "hi", "payload": ' + deep_json(DEEP) + "}")


@probe("web chat socket: a binary frame of invalid UTF-8")
def _(ctx: Ctx) -> Answer:
    return via_socket(ctx, b'{"type": "message", "text": "caf\xe9 \xff"}')


@probe("web chat socket: a 2^63 client_id and NUL in the text")
def _(ctx: Ctx) -> Answer:
    frame = '{"type": "message", "text": "hi\\u0000", "client_id": ' + BIG + ', "attachments": 7}'
    return via_socket(ctx, frame)


# invalid UTF-8, NUL bytes


@probe("invalid UTF-8: POST /v1/bots (application/yaml)")
def _(ctx: Ctx) -> Answer:
    body = b"name: caf\xe9 \xff\xfe bot\nresponses: {}\n"
    return via_httpx(
        ctx, "POST", "/v1/bots", content=body, headers={**ctx.mh, "Content-Type": YAML}
    )


@probe("invalid UTF-8: POST /v1/bots (application/json)")
def _(ctx: Ctx) -> Answer:
    body = b'{"name": "caf\xe9 \xff bot"}'
    return via_httpx(
        ctx,
        "POST",
        "/v1/bots",
        content=body,
        headers={**ctx.mh, "Content-Type": "application/json"},
    )


@probe("invalid UTF-8: POST /v1/datasets (data.csv)")
def _(ctx: Ctx) -> Answer:
    body = b"text,label\nhello \xff\xfe there,greet\nbye \xc3\x28,goodbye\n"
    files = {"file": ("data.csv", body)}
    data = {"name": "bad-utf8", "type": "text-intent"}
    return via_httpx(ctx, "POST", "/v1/datasets", files=files, data=data, headers=ctx.mh)


@probe("invalid UTF-8: POST /v1/bots/{id}/webhooks/rest")
def _(ctx: Ctx) -> Answer:
    body = b'{"sender": "s\xff", "message": "hi \xc3\x28"}'
    return via_httpx(
        ctx,
        "POST",
        f"/v1/bots/{ctx.ids['bot']}/webhooks/rest",
        content=body,
        headers={**ctx.mh, "Content-Type": "application/json"},
    )


@probe("invalid UTF-8: POST /v1/agent/login")
def _(ctx: Ctx) -> Answer:
    body = b'{"tenant": "\xff", "username": "a\xfe", "password": "x"}'
    return via_httpx(
        ctx, "POST", "/v1/agent/login", content=body, headers={"Content-Type": "application/json"}
    )


@probe("NUL in an id: GET /v1/bots/bot_%00x", {404, 422})
def _(ctx: Ctx) -> Answer:
    return via_httpx(ctx, "GET", "/v1/bots/bot_%00x", headers=ctx.mh)


@probe("NUL in an id: GET /v1/datasets/{id}%00/examples", {404, 422})
def _(ctx: Ctx) -> Answer:
    return via_httpx(ctx, "GET", f"/v1/datasets/{ctx.ids['dataset']}%00/examples", headers=ctx.mh)


@probe("NUL in an id: GET /v1/conversations/cv_%00", {404, 422})
def _(ctx: Ctx) -> Answer:
    return via_httpx(ctx, "GET", "/v1/conversations/cv_%00", headers=ctx.mh)


@probe("NUL in an alias name: PUT /v1/aliases/prod%00uction", {404, 422})
def _(ctx: Ctx) -> Answer:
    body = {"model_id": ctx.ids["model"]}
    return via_httpx(ctx, "PUT", "/v1/aliases/prod%00uction", json=body, headers=ctx.mh)


@probe("NUL in a model id of a body: POST /v1/models", {404, 422})
def _(ctx: Ctx) -> Answer:
    body = {"dataset_id": ctx.ids["dataset"] + "\u0000"}
    return via_httpx(ctx, "POST", "/v1/models", json=body, headers=ctx.mh)


@probe("NUL in a bot's name: POST /v1/bots (application/json)", {422})
def _(ctx: Ctx) -> Answer:
    body = {"name": "nul\u0000bot", "nlu": {"model": ctx.ids["model"]}}
    return via_httpx(ctx, "POST", "/v1/bots", json=body, headers=ctx.mh)


@probe("NUL in an upload id: POST /v1/bots/{id}/webhooks/rest attachments", {404, 422})
def _(ctx: Ctx) -> Answer:
    body = {"sender": "s", "message": "hi", "attachments": ["up_\u0000"]}
    return via_httpx(
        ctx, "POST", f"/v1/bots/{ctx.ids['bot']}/webhooks/rest", json=body, headers=ctx.mh
    )


# --- the test --------------------------------------------------------------------------------


def test_the_corpus_has_no_duplicate_ids() -> None:
    ids = [p.id for p in CORPUS]
    assert len(ids) == len(set(ids)), ids


@pytest.mark.parametrize("case", CORPUS, ids=[p.id for p in CORPUS])
def test_a_bad_input_is_refused_and_hurts_no_one(ctx: Ctx, case: Probe) -> None:
    gateway = ctx.gateway
    rows = row_counts(gateway)
    with MemoryWatch(ctx.pid) as memory:
        answer = case.send(ctx)
    where = f"{case.id}: {answer.status} after {answer.seconds:.1f} s"
    assert answer.status != 0, (
        f"{where}: no answer ({answer.text}); server log:\n{gateway.log_tail(12)}"
    )
    assert answer.status < 500, f"{where}: {answer.text}; server log:\n{gateway.log_tail(12)}"
    if case.expect is not None:
        assert answer.status in case.expect, (
            f"{where}, expected {sorted(case.expect)}: {answer.text}"
        )
    else:
        assert 400 <= answer.status < 500, f"{where}, expected a 4xx: {answer.text}"
    try:
        error = json.loads(answer.body)
    except ValueError:
        error = None
    assert isinstance(error, dict) and {"error", "message"} <= set(error), (
        f"{where}: the answer is not a JSON error {{error, message}}: {answer.text}"
    )
    if case.streamed:
        assert answer.sent <= case.streamed - IN_FLIGHT, (
            f"{where}: the server read {answer.sent / 2**20:.0f} MB before refusing; it must "
            "stop reading at the limit"
        )
    assert gateway.alive(), f"{where}: the server is down after it:\n{gateway.log_tail()}"
    after = wait_for(lambda: row_counts(gateway), "the database", timeout=30)
    stored = {t: (rows[t], after[t]) for t in ROW_TABLES if after[t] != rows[t]}
    assert not stored, f"{where}: rows were stored by a refused request: {stored}"
    if case.heavy:
        assert memory.grown_mb <= MAX_PEAK_GROWTH_MB, (
            f"{where}: the server's memory grew by {memory.grown_mb:.0f} MB while it handled "
            f"this request (limit of this probe: {MAX_PEAK_GROWTH_MB} MB)"
        )
        latency = victim_p50_ms(ctx)
        bound = max(5 * ctx.baseline_ms, ctx.baseline_ms + 200)
        assert latency <= bound, (
            f"{where}: tenant C's predict p50 is {latency:.0f} ms after it "
            f"(baseline {ctx.baseline_ms:.0f} ms, bound {bound:.0f} ms)"
        )


def test_everyone_is_served_after_the_corpus(ctx: Ctx) -> None:
    """After the corpus, the server still serves everyone: C predicts, M lists its bots."""
    assert ctx.gateway.alive()
    assert victim_p50_ms(ctx) <= max(5 * ctx.baseline_ms, ctx.baseline_ms + 200)
    r = httpx.get(f"{ctx.gateway.url}/v1/bots/{ctx.ids['bot']}", headers=ctx.mh, timeout=TIMEOUT_S)
    assert r.status_code == 200 and r.json()["name"] == "m-bot", r.text

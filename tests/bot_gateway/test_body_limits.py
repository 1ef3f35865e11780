"""Request bodies capped by route class while they stream in (issue 12, finding 2).

A fast part drives ``BodyLimits`` around a small app through a TestClient; a slow part sends
huge bodies, with and without ``Content-Length``, over a raw socket to a real ``parley serve``
(a TestClient cannot send a true chunked body, nor show how much the server read) and checks
that the server stops reading at the limit, answers ``413`` naming it, and keeps answering.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.types import Message

from bot_gateway.body_limits import BodyLimits, body_class
from bot_gateway.errors import install_error_handlers
from core.settings import LimitSettings

LIMITS = LimitSettings(max_json_bytes=100, max_upload_bytes=1_000, max_webhook_bytes=50)


# --- the route table ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "setting"),
    [
        ("/v1/agent/login", "application/json", "max_json_bytes"),
        ("/v1/keys", "", "max_json_bytes"),
        ("/v1/bots", "application/yaml", "max_json_bytes"),
        ("/v1/bots", "multipart/form-data; boundary=x", "max_upload_bytes"),
        ("/v1/models/m1/predict", "application/json", "max_json_bytes"),
        ("/v1/models/m1/predict", "multipart/form-data; boundary=x", "max_upload_bytes"),
        ("/v1/ocr", "multipart/form-data; boundary=x", "max_upload_bytes"),
        ("/v1/datasets", "application/json", "max_upload_bytes"),
        ("/v1/datasets/d1/examples", "application/json", "max_upload_bytes"),
        ("/v1/bots/b1/webhooks/rest", "application/json", "max_webhook_bytes"),
        ("/webhooks/ch1", "application/x-www-form-urlencoded", "max_webhook_bytes"),
    ],
)
def test_route_classes(path: str, content_type: str, setting: str) -> None:
    assert body_class(path, content_type).setting == setting


# --- the middleware around a small app ------------------------------------------------------


class Item(BaseModel):
    text: str


def small_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodyLimits, limits=LIMITS)

    @app.post("/items")
    async def items(item: Item) -> dict[str, int]:
        return {"chars": len(item.text)}

    @app.post("/careless")
    async def careless(request: Request) -> dict[str, str]:
        try:  # a route that turns any failed read into its own answer
            await request.body()
        except Exception:  # noqa: BLE001
            return {"read": "failed"}
        return {"read": "ok"}

    @app.post("/webhooks/{channel}")
    async def webhook(channel: str, request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(small_app()) as c:
        yield c


def chunks(total: int, pulled: list[int], size: int = 10) -> Iterator[bytes]:
    """``total`` bytes of a JSON string in ``size``-byte pieces, counting what is pulled."""
    body = b'{"text": "' + b"a" * (total - 12) + b'"}'
    for i in range(0, len(body), size):
        pulled.append(size)
        yield body[i : i + size]


def test_bodies_within_the_limit_pass(client: TestClient) -> None:
    r = client.post("/items", json={"text": "a" * 50})
    assert r.status_code == 200, r.text
    assert r.json() == {"chars": 50}
    r = client.post("/webhooks/c", content=b"x" * 50)
    assert r.json() == {"bytes": 50}


def test_a_declared_length_over_the_limit_is_refused_unread(client: TestClient) -> None:
    pulled: list[int] = []
    r = client.post(
        "/items",
        content=b"".join(chunks(10_000, pulled)),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["error"] == "payload_too_large"
    assert body["limit"] == "max_json_bytes" and body["max_bytes"] == 100
    assert "limit of 100 bytes (PARLEY_LIMITS__MAX_JSON_BYTES)" in body["message"]


@pytest.mark.parametrize("path", ["/items", "/careless"])
def test_a_body_without_length_is_cut_at_the_limit(client: TestClient, path: str) -> None:
    pulled: list[int] = []
    r = client.post(
        path, content=chunks(100_000, pulled), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text  # /careless would have answered 200 {"read": "failed"}
    assert r.json()["limit"] == "max_json_bytes"


@pytest.mark.parametrize("path", ["/items", "/careless"])
def test_the_app_stops_receiving_at_the_limit(path: str) -> None:
    """Driven at the ASGI level (a TestClient reads the whole body first): once the cap is
    passed no more of the body is pulled from the server, and one 413 goes out."""
    pulled: list[int] = []
    pieces = chunks(1_000_000, pulled)
    sent: list[Message] = []

    async def receive() -> Message:
        piece = next(pieces, None)
        return {"type": "http.request", "body": piece or b"", "more_body": piece is not None}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(small_app()(scope, receive, send))
    assert sum(pulled) <= 110, f"{sum(pulled)} bytes were pulled for a limit of 100"
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [413]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["error"] == "payload_too_large"


def test_webhooks_have_their_own_limit(client: TestClient) -> None:
    r = client.post("/webhooks/c", content=b"x" * 51)
    assert r.status_code == 413
    assert r.json()["limit"] == "max_webhook_bytes"
    assert "PARLEY_LIMITS__MAX_WEBHOOK_BYTES" in r.json()["message"]


# --- a real server ------------------------------------------------------------------------------

HUGE = 32 * 1024 * 1024
UPLOAD_LIMIT = 2 * 1024 * 1024
OPERATOR_TOKEN = "limits-operator-" + secrets.token_hex(6)


@dataclass(frozen=True)
class Server:
    url: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from bench.harness import parley_server
    from tests.conftest import CACHE_DIR

    tmp = tmp_path_factory.mktemp("body-limits")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        "PARLEY_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "PARLEY_SECRET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "PARLEY_CACHE_DIR": str(CACHE_DIR),
        "PARLEY_QUEUE__THREADS": "0",
        "PARLEY_SERVING__TORCH_THREADS": "1",
        "PARLEY_LIMITS__MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "PARLEY_RATE_LIMITS__AUTH_FAILURES_PER_ADDRESS__PER_SECOND": "1000",
        "PARLEY_RATE_LIMITS__AUTH_FAILURES_PER_ADDRESS__BURST": "1000000",
        "OMP_NUM_THREADS": "1",
    }
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PARLEY_")}
    try:
        with parley_server(tmp / "data", port, tmp / "server.log", env) as (url, _, _):
            r = httpx.post(
                f"{url}/v1/tenants",
                json={"name": "limits"},
                headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
                timeout=30,
            )
            assert r.status_code == 201, r.text
            yield Server(url, r.json()["api_key"])
    finally:
        os.environ.update(saved)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    sent: int


def stream(
    server: Server,
    path: str,
    pieces: Iterator[bytes],
    *,
    chunked: bool,
    content_type: str,
    headers: dict[str, str],
) -> Answer:
    """POST ``HUGE`` bytes over a raw socket, stopping as soon as the server answers."""
    host, port = server.url.removeprefix("http://").split(":")
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Connection: close",
        f"Content-Type: {content_type}",
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    deadline = time.monotonic() + 60
    sent, received = 0, b""
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sock.setblocking(False)
        answered = False
        for piece in pieces:
            frame = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
            view = memoryview(frame)
            while view and not answered:
                assert time.monotonic() < deadline, "the server neither read nor answered"
                readable, _, _ = select.select([sock], [sock], [], 1)
                if readable:
                    answered = True
                    break
                try:
                    n = sock.send(view)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    answered = True
                    break
                view, sent = view[n:], sent + n
            if answered:
                break
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], deadline - time.monotonic())
            try:
                data = sock.recv(1 << 16) if readable else b""
            except ConnectionResetError:
                data = b""
            if not data:
                break
            received += data
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 "), f"no HTTP answer: {received[:200]!r}"
    headers_raw, _, payload = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in headers_raw.lower():
        size, _, payload = payload.partition(b"\r\n")
        payload = payload[: int(size, 16)]
    return Answer(int(status_line.split()[1]), json.loads(payload), sent)


def filler(prefix: bytes, total: int = HUGE) -> Iterator[bytes]:
    yield prefix
    piece, left = b"a" * (256 * 1024), total - len(prefix)
    while left > 0:
        yield piece[: min(left, len(piece))]
        left -= len(piece)


def multipart(boundary: str) -> Iterator[bytes]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return filler(head)


JSON = "application/json"
CASES = [
    # (what, path, prefix of the JSON body or None for multipart, authenticated, setting)
    ("agents' login", "/v1/agent/login", b'{"tenant": "x", "username": "', False, "max_json_bytes"),
    ("REST channel", "/v1/bots/b_x/webhooks/rest", b'{"sender": "s", "message": "', True,
     "max_webhook_bytes"),
    ("keys", "/v1/keys", b'{"scopes": ["predict"], "name": "', True, "max_json_bytes"),
    ("tenants, before the 401", "/v1/tenants", b'{"name": "', False, "max_json_bytes"),
    ("predict", "/v1/models/m_x/predict", b'{"text": "', True, "max_json_bytes"),
    ("OCR", "/v1/ocr", b'{"image": "', True, "max_json_bytes"),
    ("predict, an image file", "/v1/models/m_x/predict", None, True, "max_upload_bytes"),
    ("OCR, an image file", "/v1/ocr", None, True, "max_upload_bytes"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("path", "prefix", "authenticated", "setting"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_huge_body_is_refused_at_the_limit(
    server: Server,
    path: str,
    prefix: bytes | None,
    authenticated: bool,
    setting: str,
    chunked: bool,
) -> None:
    boundary = "limits" + secrets.token_hex(4)
    pieces = filler(prefix) if prefix is not None else multipart(boundary)
    content_type = JSON if prefix is not None else f"multipart/form-data; boundary={boundary}"
    answer = stream(
        server,
        path,
        pieces,
        chunked=chunked,
        content_type=content_type,
        headers=server.auth if authenticated else {},
    )
    assert answer.status == 413, answer.body
    assert answer.body["error"] == "payload_too_large"
    assert answer.body["limit"] == setting
    assert f"PARLEY_LIMITS__{setting.upper()}" in answer.body["message"]
    # what the client got into the socket includes the kernel's loopback buffers (several MB
    # when the machine is busy and the answer is late), so the bound is half the body
    assert answer.sent < HUGE // 2, f"the server read {answer.sent >> 20} MB before refusing"
    # and it still answers, other requests as before
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v1/health").status_code == 200
        r = client.post("/v1/keys", json={"scopes": ["predict"], "name": "k"}, headers=server.auth)
        assert r.status_code == 201, r.text
        r = client.post(
            "/v1/agent/login",
            json={"tenant": "limits", "username": secrets.token_hex(4), "password": "p"},
        )
        assert r.status_code == 401, r.text


@pytest.mark.slow
def test_an_upload_within_its_limit_passes_the_json_limit(server: Server) -> None:
    """A 1.5 MB file (over the JSON limit of 1 MB, within the upload limit) reaches the route."""
    rows = "".join(f"hello number {i},greet\nbye number {i},bye\n" for i in range(30_000))
    data = ("text,label\n" + rows).encode()
    assert 1024 * 1024 < len(data) < UPLOAD_LIMIT
    r = httpx.post(
        f"{server.url}/v1/datasets",
        files={"file": ("data.csv", data)},
        data={"name": "big", "type": "text-intent"},
        headers=server.auth,
        timeout=60,
    )
    assert r.status_code in (201, 202), r.text
    with contextlib.suppress(Exception):
        httpx.delete(f"{server.url}/v1/datasets/{r.json()['id']}", headers=server.auth)

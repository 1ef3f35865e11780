"""Image inputs: base64, and the rules for fetching by URL (off by default, allow-listed hosts,
public addresses only through core.outbound, no redirects, size capped while streaming) against a
real local server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from bot_gateway.serving.image_inputs import decode_base64, fetch_url
from core.errors import Forbidden, InvalidInput, OutboundRefused, PayloadTooLarge
from core.outbound import OutboundGuard, host_matches
from core.settings import ImageFetchSettings
from tests.support.http_server import loopback_server
from tests.support.images import encode, shape_image

JPEG = encode(shape_image("circle", 3))


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.hosts.append(self.headers.get("Host"))  # type: ignore[attr-defined]
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.end_headers()
            return
        body = JPEG * (50 if self.path == "/big.jpg" else 1)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[int, list[str]]]:
    with loopback_server(_Handler) as running:
        yield running


# images.example.com lives at the local server (a fake resolver), which the operator allowed
AT_LOCAL = OutboundGuard(("127.0.0.0/8",), resolver=lambda host, port: ["127.0.0.1"])
STRICT = OutboundGuard(resolver=lambda host, port: ["127.0.0.1"])


ON = ImageFetchSettings(enabled=True, allow_hosts=["images.example.com", ".cdn.example.net"])


def test_fetching_is_off_unless_enabled_and_only_from_allowed_hosts() -> None:
    with pytest.raises(Forbidden, match="off on this server"):
        fetch_url(
            "https://images.example.com/a.jpg", "url", ImageFetchSettings(), 10**6, guard=STRICT
        )
    with pytest.raises(Forbidden, match="not in the allow-list"):
        fetch_url("https://evil.example.org/a.jpg", "url", ON, 10**6, guard=STRICT)
    with pytest.raises(InvalidInput, match="not an http"):
        fetch_url("file:///etc/passwd", "url", ON, 10**6, guard=STRICT)
    with pytest.raises(InvalidInput, match="credentials"):
        fetch_url("https://u:p@images.example.com/a.jpg", "url", ON, 10**6, guard=STRICT)
    assert host_matches("a.cdn.example.net", ON.allow_hosts)
    assert not host_matches("cdn.example.net.evil.org", ON.allow_hosts)


def test_an_allowed_host_on_a_private_address_is_refused_naming_the_url() -> None:
    local = ImageFetchSettings(enabled=True, allow_hosts=["localhost", "127.0.0.1"])
    for url in ("http://localhost:9/a.jpg", "http://127.0.0.1:9/a.jpg"):
        with pytest.raises(OutboundRefused, match="loopback address") as refused:
            fetch_url(url, "urls[1]", local, 10**6, guard=STRICT)
        assert refused.value.message.startswith(f"urls[1]: {url} refused")


def test_a_fetch_keeps_the_host_header_and_caps_size_and_redirects(
    server: tuple[int, list[str]],
) -> None:
    port, hosts = server
    data = fetch_url(f"http://images.example.com:{port}/a.jpg", "url", ON, 10**6, guard=AT_LOCAL)
    assert data == JPEG and hosts == [f"images.example.com:{port}"]
    with pytest.raises(PayloadTooLarge):
        big = f"http://images.example.com:{port}/big.jpg"
        fetch_url(big, "url", ON, len(JPEG) * 10, guard=AT_LOCAL)
    with pytest.raises(InvalidInput, match="HTTP 302"):
        fetch_url(f"http://images.example.com:{port}/redirect", "url", ON, 10**6, guard=AT_LOCAL)


def test_base64_inputs() -> None:
    raw = base64.b64encode(JPEG).decode()
    assert decode_base64(raw, "image", 10**6) == JPEG
    assert decode_base64(f"data:image/jpeg;base64,{raw}", "image", 10**6) == JPEG
    with pytest.raises(InvalidInput, match="images\\[3\\] is not valid base64"):
        decode_base64("%%%", "images[3]", 10**6)
    with pytest.raises(PayloadTooLarge):
        decode_base64(raw, "image", 100)

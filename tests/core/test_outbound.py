"""The outbound guard: which addresses a call for a tenant may reach, the operator's
allow-list (hosts and networks), the demo's orders API, redirects checked hop by hop, and
plain-HTTP calls sent to the address that was checked (a real loopback server)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from core.errors import OutboundRefused
from core.metrics import counters
from core.outbound import (
    DEMO_ORDERS_API,
    OutboundGuard,
    OutboundTransport,
    SyncOutboundTransport,
    address_kind,
    literal_address,
)
from tests.conftest import make_settings
from tests.support.http_server import loopback_server

PUBLIC = "93.184.216.34"


def resolving(*addresses: str) -> OutboundGuard:
    return OutboundGuard(resolver=lambda host, port: list(addresses))


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd00::1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("240.0.0.1", "a private address"),  # reserved (Python files 240/4 as private too)
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "a private address"),
        ("2002:7f00:1::1", "a loopback address"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "a private address"),  # NAT64 of 10.0.0.1
        (PUBLIC, None),
        ("2606:4700::1111", None),
    ],
)
def test_every_kind_of_non_public_address_is_named(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


def test_ip_literals_in_every_form_are_recognised_without_dns() -> None:
    for host in ("127.1", "2130706433", "0x7f.0.0.1", "[::1]", "127.0.0.1"):
        ip = literal_address(host)
        assert ip is not None and ip.is_loopback, host
    assert literal_address("shop.example") is None


def test_save_time_check_judges_ip_literals_only() -> None:
    guard = OutboundGuard(resolver=lambda host, port: pytest.fail("no DNS at save time"))
    refused = guard.literal_refusal("http://2130706433:8080/orders")
    assert refused is not None and "a loopback address" in refused
    assert "PARLEY_OUTBOUND__ALLOW_HOSTS" in refused
    assert "a private address" in (guard.literal_refusal("https://[::ffff:10.0.0.5]/x") or "")
    assert guard.literal_refusal("https://orders.example/x") is None  # a name: checked on call
    assert guard.literal_refusal("{base}/orders/{id}") is None  # built from a slot
    assert guard.literal_refusal(f"http://{PUBLIC}/x") is None


def test_the_allow_list_names_hosts_or_networks() -> None:
    guard = OutboundGuard(("orders.internal", ".corp.example", "10.0.0.0/8", "fd00::/8", "::1"))
    ip = ipaddress.ip_address
    assert guard.refusal("http://orders.internal/", "orders.internal", ip("192.168.1.1")) is None
    assert guard.refusal("http://a.corp.example/", "a.corp.example", ip("192.168.1.1")) is None
    assert guard.refusal("http://x/", "x", ip("10.9.8.7")) is None
    assert guard.refusal("http://x/", "x", ip("::ffff:10.9.8.7")) is None  # mapped, same network
    assert guard.refusal("http://x/", "x", ip("fd12::1")) is None
    assert guard.refusal("http://x/", "x", ip("::1")) is None
    assert guard.refusal("http://x/", "x", ip("127.0.0.1")) is not None
    assert guard.refusal("http://x/", "x", ip("11.0.0.1")) is None  # public anyway
    assert guard.refusal("http://corp.example.evil/", "corp.example.evil", ip("192.168.1.1"))


def test_settings_build_the_guard_and_the_demo_allows_only_its_orders_api(tmp_path: Path) -> None:
    from parley.demo import ORDERS_API

    def guard(**overrides: object) -> OutboundGuard:
        return OutboundGuard.from_settings(
            make_settings(tmp_path, f"sqlite:///{tmp_path / 'p.db'}", **overrides)
        )

    assert DEMO_ORDERS_API == ORDERS_API
    plain, demo = guard(demo=False), guard(demo=True)
    loop = ipaddress.ip_address("127.0.0.1")
    orders = "http://127.0.0.1:8000/demo/orders-api/orders/PX-1"
    assert plain.refusal(orders, "127.0.0.1", loop) is not None
    assert demo.refusal(orders, "127.0.0.1", loop) is None
    everywhere = ipaddress.ip_address("0.0.0.0")  # parley serve --host 0.0.0.0
    assert demo.refusal(orders.replace("127.0.0.1", "0.0.0.0"), "0.0.0.0", everywhere) is None
    for other in (
        "http://127.0.0.1:8000/v1/tenants",
        "http://127.0.0.1:6379/",
        "http://127.0.0.1:8000/demo/orders-api/../../v1/keys",
        "http://127.0.0.1:8000/demo/orders-api/%2e%2e/v1/keys",
    ):
        assert demo.refusal(other, "127.0.0.1", loop) is not None, other
    private = ipaddress.ip_address("10.0.0.1")
    assert demo.refusal("http://10.0.0.1/demo/orders-api/x", "10.0.0.1", private) is not None
    allowed = guard(outbound={"allow_hosts": ["10.0.0.0/8"]})
    assert allowed.refusal("http://10.0.0.1/", "10.0.0.1", private) is None


# --- the transports -----------------------------------------------------------------------


def run(guard: OutboundGuard, handler: object, url: str, **kwargs: object) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = OutboundTransport(guard, httpx.MockTransport(handler))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, trust_env=False, **kwargs) as client:  # type: ignore[arg-type]
            return await client.get(url)

    return asyncio.run(go())


def test_a_name_that_resolves_to_a_private_address_is_refused_before_any_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[httpx.Request] = []
    before = counters.get("outbound.refused")
    with caplog.at_level(logging.WARNING, logger="parley"), pytest.raises(OutboundRefused) as e:
        run(resolving("169.254.169.254"), seen.append, "http://metadata.evil.example/latest?k=s")
    assert seen == []
    assert e.value.message.startswith("http://metadata.evil.example/latest refused: ")
    assert "metadata.evil.example resolves to 169.254.169.254, a link-local address" in str(e.value)
    assert "k=s" not in str(e.value)
    assert counters.get("outbound.refused") == before + 1
    assert "outbound.refused" in caplog.text


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(OutboundRefused, match="10.0.0.7, a private address"):
        run(resolving(PUBLIC, "10.0.0.7"), pytest.fail, "http://split.example/")


def test_plain_http_goes_to_the_checked_address_with_its_host_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    assert run(resolving(PUBLIC), handler, "http://shop.example:8080/a?b=1").status_code == 200
    assert str(seen[0].url) == f"http://{PUBLIC}:8080/a?b=1"
    assert seen[0].headers["host"] == "shop.example:8080"
    # https connects by name: TLS checks the certificate of the name that was checked
    assert run(resolving(PUBLIC), handler, "https://shop.example/a").status_code == 200
    assert seen[1].url.host == "shop.example"


def test_a_redirect_is_checked_again() -> None:
    seen: list[httpx.Request] = []
    answers = {"shop.example": PUBLIC, "internal.example": "10.1.1.1"}
    guard = OutboundGuard(resolver=lambda host, port: [answers[host]])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "http://internal.example/admin"})

    with pytest.raises(OutboundRefused, match="internal.example resolves to 10.1.1.1"):
        run(guard, handler, "http://shop.example/", follow_redirects=True)
    assert [r.headers["host"] for r in seen] == ["shop.example"]


def test_other_schemes_and_unresolvable_hosts() -> None:
    with pytest.raises(OutboundRefused, match="only http"):
        asyncio.run(resolving(PUBLIC).aprepare(httpx.Request("GET", "ftp://x.example/")))

    def no_such_host(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(httpx.ConnectError, match="cannot resolve 'nowhere.example'"):
        run(OutboundGuard(resolver=no_such_host), pytest.fail, "http://nowhere.example/")


# --- against a real server on loopback -------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.hosts.append(self.headers.get("Host"))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[int, list[str]]]:
    with loopback_server(_Handler) as running:
        yield running


def test_loopback_is_refused_by_default_and_reached_once_allowed(
    server: tuple[int, list[str]],
) -> None:
    port, hosts = server
    url = f"http://127.0.0.1:{port}/x"
    with (
        httpx.Client(transport=SyncOutboundTransport(OutboundGuard()), trust_env=False) as client,
        pytest.raises(OutboundRefused, match="127.0.0.1 is a loopback address"),
    ):
        client.get(url)
    assert hosts == []  # nothing reached the server
    allowed = SyncOutboundTransport(OutboundGuard(("127.0.0.1",)))
    with httpx.Client(transport=allowed, trust_env=False) as client:
        assert client.get(url).text == "ok"
    assert hosts == [f"127.0.0.1:{port}"]


def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(
    server: tuple[int, list[str]],
) -> None:
    """``rebind.test`` has no DNS entry: the only answer is the checked one, so the request
    can only reach the server if the connection used it."""
    port, hosts = server
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])  # a second look-up would be refused
    guard = OutboundGuard(("127.0.0.0/8",), resolver=lambda host, port: next(answers))

    async def go() -> str:
        async with httpx.AsyncClient(transport=OutboundTransport(guard), trust_env=False) as c:
            return (await c.get(f"http://rebind.test:{port}/x")).text

    assert asyncio.run(go()) == "ok"
    assert hosts == [f"rebind.test:{port}"]

"""The one guard of the calls Parley makes for tenants: HTTP actions, rasa-sdk action servers
and image URLs.

A call may reach public addresses only. Loopback, private, link-local, multicast, reserved and
unspecified addresses (IPv4 and IPv6, and IPv4 inside IPv6: mapped ``::ffff:a.b.c.d``, 6to4,
Teredo, NAT64 ``64:ff9b::/96``) are refused unless ``settings.outbound.allow_hosts``
(``PARLEY_OUTBOUND__ALLOW_HOSTS``) names the host (``orders.internal``, ``.corp.example`` for
its subdomains) or a network holding the address (``10.0.0.5``, ``10.0.0.0/8``, ``fd00::/8``).
With the demo on (``settings.demo``), the demo's orders API, which the gateway itself serves,
may be called on a loopback address (or ``0.0.0.0``, as ``parley serve --host 0.0.0.0`` names
it), and nothing else there; a demo served on another address needs that address allowed.

Use::

    guard = OutboundGuard.from_settings(settings)
    client = httpx.AsyncClient(transport=OutboundTransport(guard), trust_env=False)
    guard.literal_refusal(url)   # at save time: a URL whose host is a refused IP literal

Every request through ``OutboundTransport`` (and ``SyncOutboundTransport``) is checked: its
host is resolved once, every address it resolves to must pass, and a plain-HTTP request is
sent to the checked address (the URL's host is replaced by it, the ``Host`` header keeps the
name), so a DNS answer that changes between the check and the connection (rebinding) is never
used. A redirect that a client follows is a new request through the transport, so it is
checked again (Parley's clients do not follow redirects).

Residual risk, by design: an ``https`` request connects by name after the check (so that TLS
verifies the certificate of that name and connections are pooled per name). A DNS answer that
changes in between can make the connection reach another address, but the TLS handshake fails
there unless that server holds a valid certificate for the name, so no request is sent. A
client with ``trust_env`` (proxy variables) would bypass the transport: Parley's clients set it
off. A refused request raises ``OutboundRefused`` (422), is logged (``outbound.refused``) and
counted (``outbound.refused``); a host that does not resolve is an ``httpx.ConnectError``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

from core.errors import OutboundRefused
from core.logging import log_event
from core.metrics import counters
from core.settings import Settings

__all__ = [
    "DEMO_ORDERS_API",
    "OutboundGuard",
    "OutboundRefused",
    "OutboundTransport",
    "SyncOutboundTransport",
    "host_matches",
]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]
"""(host, port) -> the addresses the host resolves to."""

DEMO_ORDERS_API = "/demo/orders-api"  # where the gateway serves the demo's orders API (parley.demo)
SETTING = "PARLEY_OUTBOUND__ALLOW_HOSTS"
NAT64 = ipaddress.ip_network("64:ff9b::/96")
THIS_HOST = ("a loopback address", "the unspecified address")  # 0.0.0.0 connects here too


def host_matches(host: str, entries: Sequence[str]) -> bool:
    """Whether an allow-list names ``host``: exactly, or ``.example.com`` for it and its
    subdomains (case and a trailing dot do not matter)."""
    host = host.lower().rstrip(".")
    for entry in entries:
        entry = entry.lower().rstrip(".")
        if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
            return True
        if host == entry:
            return True
    return False


def literal_address(host: str) -> IP | None:
    """``host`` as an IP address when it is one, in any form a resolver would accept without
    asking DNS (``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``[::1]``); else None."""
    host = host.strip("[]").split("%")[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _embedded_ipv4(ip: IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_kind(ip: IP) -> str | None:
    """Why ``ip`` is not public (``"a loopback address"``), or None for a public address."""
    inner = _embedded_ipv4(ip)
    if inner is not None and (kind := address_kind(inner)) is not None:
        return kind
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class OutboundGuard:
    """The policy (see the module docstring). ``resolver`` replaces DNS in tests."""

    allow_hosts: tuple[str, ...] = ()
    loopback_paths: tuple[str, ...] = ()  # URL paths that may be called on loopback (the demo)
    resolver: Resolver = _system_resolver

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundGuard:
        paths = (DEMO_ORDERS_API + "/",) if settings.demo else ()
        return cls(tuple(settings.outbound.allow_hosts), loopback_paths=paths)

    @property
    def networks(self) -> tuple[Network, ...]:
        out = []
        for entry in self.allow_hosts:
            try:
                out.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                continue  # a host name
        return tuple(out)

    def allowed_address(self, ip: IP) -> bool:
        inner = _embedded_ipv4(ip)
        return any(ip in net or (inner is not None and inner in net) for net in self.networks)

    def refusal(self, url: str, host: str, ip: IP) -> str | None:
        """Why a call to ``url`` must not reach ``ip`` (one of ``host``'s addresses), or None."""
        kind = address_kind(ip)
        if kind is None or self.allowed_address(ip) or host_matches(host, self.allow_hosts):
            return None
        if kind in THIS_HOST and self._demo_path(url):
            return None
        named = f"{host} is" if str(ip) == host.strip("[]") else f"{host} resolves to {ip},"
        return (
            f"{named} {kind}; Parley calls only public addresses unless the operator allows "
            f"this host or network in {SETTING}"
        )

    def _demo_path(self, url: str) -> bool:
        path = unquote(urlsplit(url).path)
        return ".." not in path.split("/") and any(path.startswith(p) for p in self.loopback_paths)

    def literal_refusal(self, url: str) -> str | None:
        """Why ``url`` would be refused, judging by its host alone when the host is an IP
        address (no DNS is asked; a URL built from a slot, ``{base}/...``, passes)."""
        try:
            host = urlsplit(url).hostname
        except ValueError:
            return None
        ip = literal_address(host) if host else None
        return self.refusal(url, host or "", ip) if ip is not None else None

    def check(self, url: str, addresses: Sequence[str]) -> str:
        """The address to connect to for ``url``; ``OutboundRefused`` when any of the host's
        addresses is refused."""
        host = httpx.URL(url).host
        if not addresses:
            raise httpx.ConnectError(f"cannot resolve {host!r}")
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            problem = self.refusal(url, host, ip)
            if problem is not None:
                log_event("outbound.refused", level=logging.WARNING, host=host, address=address,
                          reason=problem)  # fmt: skip
                counters.incr("outbound.refused")
                raise OutboundRefused(
                    f"{_public(url)} refused: {problem}", url=_public(url), reason=problem
                )
        return addresses[0]

    def _resolve(self, request: httpx.Request) -> list[str]:
        host = request.url.host
        literal = literal_address(host)
        if literal is not None:
            return [str(literal)]
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        try:
            return list(self.resolver(host, port))
        except OSError as e:
            raise httpx.ConnectError(f"cannot resolve {host!r} ({e})", request=request) from e

    def pinned(self, request: httpx.Request, addresses: Sequence[str]) -> httpx.Request:
        """``request`` checked, and for plain HTTP sent to the checked address."""
        address = self.check(str(request.url), addresses)
        if request.url.scheme != "http":
            return request  # https: by name, see the module docstring
        return httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,  # the Host header keeps the name
            stream=request.stream,
            extensions=request.extensions,
        )

    def prepare(self, request: httpx.Request) -> httpx.Request:
        if request.url.scheme not in ("http", "https"):
            raise OutboundRefused(f"{_public(str(request.url))}: only http(s) URLs are called")
        return self.pinned(request, self._resolve(request))

    async def aprepare(self, request: httpx.Request) -> httpx.Request:
        if request.url.scheme not in ("http", "https"):
            raise OutboundRefused(f"{_public(str(request.url))}: only http(s) URLs are called")
        if literal_address(request.url.host) is not None:
            return self.pinned(request, self._resolve(request))
        loop = asyncio.get_running_loop()
        addresses = await loop.run_in_executor(None, self._resolve, request)
        return self.pinned(request, addresses)


class OutboundTransport(httpx.AsyncBaseTransport):
    """An async transport that lets only what ``guard`` allows through to ``inner`` (the
    network by default)."""

    def __init__(self, guard: OutboundGuard, inner: httpx.AsyncBaseTransport | None = None):
        self.guard = guard
        self._inner = inner or httpx.AsyncHTTPTransport(retries=0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(await self.guard.aprepare(request))

    async def aclose(self) -> None:
        await self._inner.aclose()


class SyncOutboundTransport(httpx.BaseTransport):
    """``OutboundTransport`` for blocking clients."""

    def __init__(self, guard: OutboundGuard, inner: httpx.BaseTransport | None = None):
        self.guard = guard
        self._inner = inner or httpx.HTTPTransport(retries=0)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._inner.handle_request(self.guard.prepare(request))

    def close(self) -> None:
        self._inner.close()


def _public(url: str) -> str:
    """``url`` without what may hold secrets: user info, query and fragment."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}{parts.path}"

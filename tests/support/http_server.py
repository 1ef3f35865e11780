"""A real HTTP server on loopback for tests of outbound calls: it records the ``Host`` header
of every request it answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["loopback_server"]


@contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[tuple[int, list[str]]]:
    """``(port, hosts)``: the server's port and the ``Host`` headers it has seen (the
    handler appends them to ``self.server.hosts``)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.hosts = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], httpd.hosts  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()

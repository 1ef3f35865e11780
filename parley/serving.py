"""``parley serve``'s gateway: the app it serves, and ``--processes N`` gateway processes on one
port.

With one process (the default) the app is served in the ``parley serve`` process itself. With
N > 1 that process becomes a small supervisor: it starts N gateway processes (a fresh
interpreter each: ``spawn``), each listening on the same address with ``SO_REUSEPORT`` so that
the kernel spreads connections over them, each with its own model cache and inference threads;
gateway 0 runs the local train workers (``PARLEY_QUEUE__WORKERS``), the others none, so the
workers start once. A gateway that dies is started again (gateway 0 with the workers); SIGTERM
or SIGINT stops them all. Rate limits, quotas and usage counts that must hold across processes
need a shared counter store (``PARLEY_REDIS__URL``): the supervisor refuses N > 1 with the
in-memory one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from core.logging import log_event

if TYPE_CHECKING:
    from fastapi import FastAPI

    from core.settings import Settings

__all__ = ["check_processes", "gateway_app", "serve", "serve_processes"]

RESTART_PAUSE_S = 1.0  # between a gateway's death and its restart (no busy restart loop)
STOP_GRACE_S = 15.0


def gateway_app(settings: Settings) -> FastAPI:
    """The gateway app ``parley serve`` runs (with the demo's orders API when the demo is on)."""
    from bot_gateway.app import create_app

    mounts: dict[str, Any] = {}
    if settings.demo:  # the sample orders API the demo bot calls, served beside the gateway
        from parley.demo import ORDERS_API
        from parley.demo_orders import create_orders_app

        mounts[ORDERS_API] = create_orders_app()
    return create_app(settings, mounts=mounts)


def _uvicorn_config(app: Any, host: str, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Serve the gateway on ``host:port`` in this process, or in ``settings.serving.processes``
    gateway processes (``serve_processes``)."""
    if settings.serving.processes > 1:
        serve_processes(settings, host=host, port=port)
        return
    import uvicorn

    app = gateway_app(settings)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that other gateway processes may bind too
    (SO_REUSEPORT); ``OSError`` when another program holds the address."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, one of the gateway processes' (``_bind``)."""
    sock = _bind(host, port)
    sock.listen(2048)
    return sock


def _gateway_process(index: int, host: str, port: int) -> None:
    """One gateway process (the target of a spawned child)."""
    import uvicorn

    from core.settings import get_settings

    if index > 0:
        os.environ["PARLEY_QUEUE__WORKERS"] = "0"  # gateway 0 runs the train workers
    get_settings.cache_clear()
    settings = get_settings()
    sock = _listen(host, port)
    server = uvicorn.Server(_uvicorn_config(gateway_app(settings), host, port))
    server.run(sockets=[sock])


def check_processes(settings: Settings) -> None:
    """Refuse several gateway processes that would not share their counters."""
    count = settings.serving.processes
    if count > 1 and settings.counter_backend == "memory":
        from core.errors import ConfigurationError

        raise ConfigurationError(
            f"{count} gateway processes would each keep their own rate-limit, quota and "
            "failed-login counters (the in-memory counter store), letting a tenant through up "
            f"to {count} times its limits; set PARLEY_REDIS__URL so that they share one, or "
            "serve with --processes 1"
        )


def serve_processes(settings: Settings, *, host: str, port: int) -> None:
    """Run ``settings.serving.processes`` gateway processes on ``host:port`` until SIGTERM or
    SIGINT, starting again any that dies."""
    check_processes(settings)
    count = settings.serving.processes
    probe = _bind(host, port)  # the address is free before any child starts
    context = multiprocessing.get_context("spawn")
    children: dict[int, BaseProcess] = {}
    stopping = False

    def start(index: int) -> None:
        child = context.Process(
            target=_gateway_process, args=(index, host, port), name=f"parley-gateway-{index}"
        )
        child.start()
        children[index] = child
        log_event("serve.gateway_started", index=index, pid=child.pid)

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for index in range(count):
            start(index)
        probe.close()  # the children listen now; the kernel spreads connections over them
        while not stopping:
            time.sleep(0.2)
            for index, child in list(children.items()):
                if child.is_alive() or stopping:
                    continue
                log_event("serve.gateway_died", index=index, exit_code=child.exitcode)
                time.sleep(RESTART_PAUSE_S)
                start(index)
    finally:
        probe.close()
        for child in children.values():
            if child.is_alive() and child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)  # uvicorn stops gracefully on SIGTERM
        deadline = time.monotonic() + STOP_GRACE_S
        for child in children.values():
            child.join(timeout=max(0.1, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join(timeout=5)

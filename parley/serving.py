"""``parley serve``'s gateway: the app it serves, and ``--processes N`` gateway processes on one
port.

With one process (the default) the app is served in the ``parley serve`` process itself. With
N > 1 that process becomes a small supervisor: it starts N gateway processes (a fresh
interpreter each: ``spawn``), each listening on the same address with ``SO_REUSEPORT`` so that
the kernel spreads connections over them, each with its own model cache and inference threads;
gateway 0 runs the local train workers (``PARLEY_QUEUE__WORKERS``), the others none, so the
workers start once. A gateway that dies after it has served is started again (gateway 0 with
the workers); one that dies before it ever served (a configuration error, Redis unreachable at
start) stops them all and ``parley serve`` exits with an error, as one process would. SIGTERM or
SIGINT stops them all; a gateway whose supervisor is gone (killed) stops itself. The port is
checked free (without ``SO_REUSEPORT``, so another ``parley serve --processes`` on it counts as
taken) before any gateway starts. Rate limits, quotas and usage counts that must hold across
processes need a shared counter store (``PARLEY_REDIS__URL``): the supervisor refuses N > 1 with
the in-memory one.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any

from core.errors import ConfigurationError
from core.logging import log_event

if TYPE_CHECKING:
    from fastapi import FastAPI

    from core.settings import Settings

__all__ = ["check_processes", "gateway_app", "serve", "serve_processes"]

RESTART_PAUSE_S = 1.0  # between a gateway's death and its restart (no busy restart loop)
STOP_GRACE_S = 15.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


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

    uvicorn.Server(_uvicorn_config(gateway_app(settings), host, port)).run()


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


def _check_free(host: str, port: int) -> None:
    """Refuse ``host:port`` when anything listens on it, another ``parley serve --processes``
    included: a plain socket (no ``SO_REUSEPORT``) cannot bind beside its listeners."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
            probe.listen(1)
        except OSError as e:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} ({e.strerror}): another server (perhaps "
                "another parley serve) holds it; stop it or choose another --port"
            ) from e


def _stop_with_parent(parent: int) -> None:
    """SIGTERM this process when the process ``parent`` is gone (Linux ``PR_SET_PDEATHSIG``),
    so that a killed supervisor leaves no gateway serving; exit now if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no orphan guard
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # died before the guard was set
        raise SystemExit(0)


def _gateway_process(index: int, host: str, port: int, parent: int, ready: Event) -> None:
    """One gateway process (the target of a spawned child); sets ``ready`` once it serves and
    exits with 3 (as ``uvicorn.run`` does) when its start-up failed."""
    import uvicorn

    from core.settings import get_settings

    _stop_with_parent(parent)
    if index > 0:
        os.environ["PARLEY_QUEUE__WORKERS"] = "0"  # gateway 0 runs the train workers
        os.environ["PARLEY_QUEUE__WORKERS_ELSEWHERE"] = "true"
    get_settings.cache_clear()
    settings = get_settings()
    sock = _listen(host, port)

    class Gateway(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                ready.set()

    server = Gateway(_uvicorn_config(gateway_app(settings), host, port))
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(3)


def check_processes(settings: Settings) -> None:
    """Refuse several gateway processes that would not share their counters."""
    count = settings.serving.processes
    if count > 1 and settings.counter_backend == "memory":
        raise ConfigurationError(
            f"{count} gateway processes would each keep their own rate-limit, quota and "
            "failed-login counters (the in-memory counter store), letting a tenant through up "
            f"to {count} times its limits; set PARLEY_REDIS__URL so that they share one, or "
            "serve with --processes 1"
        )


def serve_processes(settings: Settings, *, host: str, port: int) -> None:
    """Run ``settings.serving.processes`` gateway processes on ``host:port`` until SIGTERM or
    SIGINT, starting again any that dies after it has served. ``ConfigurationError`` when the
    address is taken, or when a gateway dies before it ever served (all are stopped then)."""
    check_processes(settings)
    count = settings.serving.processes
    _check_free(host, port)  # before any child binds it with SO_REUSEPORT
    context = multiprocessing.get_context("spawn")
    children: dict[int, tuple[BaseProcess, Event]] = {}
    stopping = False

    def start(index: int) -> None:
        ready = context.Event()
        child = context.Process(
            target=_gateway_process,
            args=(index, host, port, os.getpid(), ready),
            name=f"parley-gateway-{index}",
        )
        child.start()
        children[index] = (child, ready)
        log_event("serve.gateway_started", index=index, pid=child.pid)

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for index in range(count):
            start(index)
        while not stopping:
            time.sleep(0.2)
            for index, (child, ready) in list(children.items()):
                if child.is_alive() or stopping:
                    continue
                log_event("serve.gateway_died", index=index, exit_code=child.exitcode)
                if not ready.is_set():  # it would fail again: a restart loop helps nobody
                    raise ConfigurationError(
                        f"gateway process {index} stopped before it served (exit code "
                        f"{child.exitcode}; its error is in the log above); fix that and start "
                        "parley serve again"
                    )
                time.sleep(RESTART_PAUSE_S)
                start(index)
    finally:
        for child, _ in children.values():
            if child.is_alive() and child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)  # uvicorn stops gracefully on SIGTERM
        deadline = time.monotonic() + STOP_GRACE_S
        for child, _ in children.values():
            child.join(timeout=max(0.1, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join(timeout=5)

"""A real, throwaway redis-server for tests (Debian's ``redis-server``; ``scripts/test``
installs it), listening only on 127.0.0.1 on a free port, no persistence::

    with RedisServer() as redis:
        url = redis.url            # redis://127.0.0.1:PORT/0
        redis.stop(); redis.start()  # a fault: Redis goes away and comes back, same port
        with redis.refusing_writes("oom"): ...  # up, answering reads, refusing writes
        with redis.paused(): ...   # SIGSTOP: connections open, nothing answered (a hang)

No pytest import here: fixtures wrap this class in a conftest.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

__all__ = ["RedisServer", "redis_server_path"]


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        binary = redis_server_path()
        if binary is None:
            raise RuntimeError("redis-server is not installed; run scripts/install-system-deps")
        self.binary = binary
        self.port = port or _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="parley-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    @contextmanager
    def refusing_writes(self, how: Literal["oom", "readonly"]) -> Iterator[None]:
        """Up and answering reads, but refusing writes: ``oom`` (``maxmemory`` 1 byte under
        ``noeviction``: ``OOM``) or ``readonly`` (a replica of a master that is not there:
        ``READONLY``); as before afterwards."""
        import redis

        admin = redis.Redis.from_url(self.url)
        if how == "oom":
            admin.config_set("maxmemory", 1)
        else:
            admin.execute_command("REPLICAOF", "127.0.0.1", str(_free_port()))
        try:
            yield
        finally:
            if how == "oom":
                admin.config_set("maxmemory", 0)
            else:
                admin.execute_command("REPLICAOF", "NO", "ONE")
            admin.close()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The server stopped with SIGSTOP (connections stay open, nothing is answered: a hung
        Redis) until the block ends."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def flush(self) -> None:
        """Forget every key (between tests sharing one server)."""
        import redis

        redis.Redis.from_url(self.url).flushall()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

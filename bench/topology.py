"""A whole Parley cluster on loopback, started from Debian packages and the project's own
commands: a real ``redis-server``, a throwaway PostgreSQL (migrated with ``parley db upgrade``,
as an operator would), an S3-compatible server (moto in server mode: it stands in for MinIO in
tests and benches only), gateways (``parley serve --workers 0``, each on its own port) and
Celery workers (``parley worker --queues cpu,gpu``).

Every Parley process gets its own data dir and its own cache dir (the encoder's ONNX graph is
linked in from a shared cache so it is not rebuilt), so nothing is shared through the disk:
artifacts travel through the object store, live messages through Redis, the rest through the
database. Used by ``tests/cluster`` (the proof of issue 14) and ``bench/cluster.py``::

    with Cluster(workdir, gateways=2, workers=2) as cluster:
        a, b = cluster.gateways
        api_key = cluster.create_tenant("shop").api_key
        cluster.kill_worker(0); cluster.start_worker(0)      # faults: kill -9, then back
        cluster.redis.stop(); cluster.redis.start()

Processes run in their own process groups; ``kill`` sends SIGKILL to the whole group (a
worker's pool children die with it), ``close`` stops everything. Logs are files under the
work dir; ``logs()`` returns their tails for failure messages.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness import BenchError, check, free_port, parley_server, tail
from tests.support.postgres import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server

__all__ = ["BUCKET", "Cluster", "Gateway", "Tenant", "Worker"]

BUCKET = "parley"
OPERATOR_TOKEN = "cluster-operator-token"
WORKER_READY_TIMEOUT_S = 120.0
WORKER_READY = re.compile(r"\bworker\.ready\b")  # logged at INFO once it takes jobs
STOP_GRACE_S = 10.0


def parley_bin() -> Path:
    path = Path(sys.executable).parent / "parley"
    if not path.exists():
        raise BenchError(f"{path} not found; install the project (pip install -e .)")
    return path


def private_cache(folder: Path, shared: Path | None) -> Path:
    """A cache dir of one process: the shared cache's files (the encoder's ONNX graphs)
    linked in, nothing else shared (each process downloads its own artifacts)."""
    folder.mkdir(parents=True, exist_ok=True)
    if shared is not None and shared.is_dir():
        for path in shared.iterdir():
            target = folder / path.name
            if path.is_file() and not target.exists():
                target.symlink_to(path)
    return folder


def warm_cache(folder: Path) -> Path:
    """The shared cache with the encoder's ONNX graph in it, built here once (when missing)
    rather than by every process of the cluster at the same time."""
    from nlu.encoder import SentenceEncoder

    folder.mkdir(parents=True, exist_ok=True)
    SentenceEncoder(cache_dir=folder, device="cpu")
    return folder


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group of ``proc`` (started with ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


@dataclass(frozen=True)
class Tenant:
    name: str
    tenant_id: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class Gateway:
    """One ``parley serve --workers 0`` on its own port, data dir and cache dir."""

    name: str
    port: int
    home: Path
    env: dict[str, str]
    train_workers: int = 0
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / f"{self.name}.{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        # `serve --workers 0` (PARLEY_QUEUE__WORKERS=0): a gateway that trains nothing
        env = {**self.env, "PARLEY_QUEUE__WORKERS": str(self.train_workers)}
        server = parley_server(self.home / "data", self.port, self.log_path, env)
        _url, self.proc, _startup = self._stack.enter_context(server)

    def kill(self) -> None:
        """``kill -9`` of the gateway (its whole process group)."""
        if self.proc is not None:
            kill_group(self.proc)
            self.proc.wait(timeout=10)
        self._stack.close()
        self.proc = None

    def stop(self) -> None:
        self._stack.close()
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Worker:
    """One ``parley worker --queues cpu,gpu --concurrency 1`` in its own process group."""

    name: str
    home: Path
    env: dict[str, str]
    queues: str = "cpu,gpu"
    concurrency: int = 1
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.home / f"{self.name}.{self.starts}.log"

    def start(self, *, wait: bool = True) -> None:
        self.starts += 1
        cmd = [
            str(parley_bin()),
            "worker",
            "--queues",
            self.queues,
            "--concurrency",
            str(self.concurrency),
        ]
        env = {**os.environ, "PARLEY_DATA_DIR": str(self.home / "data"), **self.env}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = WORKER_READY_TIMEOUT_S) -> None:
        """Until the worker says it is ready to take jobs (its log's ``ready`` line)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"worker {self.name} exited with code {self.proc.returncode}; log tail:\n"
                    f"{tail(self.log_path)}"
                )
            if WORKER_READY.search(self.log_path.read_text(errors="replace")):
                return
            time.sleep(0.2)
        raise BenchError(
            f"worker {self.name} not ready after {timeout_s:.0f} s; log tail:\n"
            f"{tail(self.log_path)}"
        )

    def pids(self) -> set[int]:
        """The pids of the worker's process group (the main process and its pool)."""
        if self.proc is None:
            return set()
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ProcessLookupError):
                if os.getpgid(int(entry.name)) == self.proc.pid:
                    found.add(int(entry.name))
        return found

    def kill(self) -> None:
        """``kill -9`` of the worker's whole process tree (main process and pool children)."""
        if self.proc is not None:
            kill_group(self.proc)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL of the group after a grace."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            kill_group(self.proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_GRACE_S)
        kill_group(self.proc)  # pool children left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """Redis, PostgreSQL, an S3 server, ``gateways`` gateways and ``workers`` Celery workers
    (``queue="local"``: no Celery; gateways keep their own local worker processes, for the
    bench's comparison). A context manager; everything stops on exit."""

    def __init__(
        self,
        workdir: Path,
        *,
        gateways: int = 2,
        workers: int = 2,
        queue: str = "celery",
        shared_cache: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.n_gateways = gateways
        self.n_workers = workers
        self.queue = queue
        self.shared_cache = shared_cache
        self.extra_env = dict(env or {})
        self.redis = RedisServer()
        self.postgres = PostgresServer(self.workdir / "postgres")
        self.s3 = S3Server()
        self.gateways: list[Gateway] = []
        self.workers: list[Worker] = []
        self.db_url = ""
        self._stack = contextlib.ExitStack()

    # -- environment -------------------------------------------------------------------------

    @property
    def storage_url(self) -> str:
        return f"s3://{BUCKET}/artifacts"

    def base_env(self) -> dict[str, str]:
        """What every Parley process of the cluster sees (data and cache dirs come per process)."""
        env = {
            "PARLEY_QUEUE__BACKEND": self.queue,
            "PARLEY_REDIS__URL": self.redis.url,
            "PARLEY_DB__URL": self.db_url,
            "PARLEY_STORAGE__URL": self.storage_url,
            "PARLEY_STORAGE__ENDPOINT_URL": self.s3.endpoint_url,
            "PARLEY_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "PARLEY_SECRET_KEY": "cluster-secret-key-" + "x" * 24,
            "PARLEY_QUEUE__STALE_AFTER": "3",
            "PARLEY_QUEUE__HEARTBEAT_INTERVAL": "0.5",
            "PARLEY_QUEUE__THREADS": "1",
            "PARLEY_SERVING__DEVICE": "cpu",
            "PARLEY_LOG_LEVEL": "WARNING",
            **self.s3.env,
            **self.extra_env,
        }
        if self.queue == "local":
            env.pop("PARLEY_QUEUE__BACKEND")
        return env

    def process_env(self, home: Path) -> dict[str, str]:
        cache = private_cache(home / "cache", self.shared_cache)
        return {**self.base_env(), "PARLEY_CACHE_DIR": str(cache)}

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.shared_cache is not None:
            warm_cache(self.shared_cache)
        self.redis.start()
        self._stack.callback(self.redis.stop)
        self.postgres.start()
        self._stack.callback(self.postgres.stop)
        self.s3.start()
        self._stack.callback(self.s3.stop)
        self.s3.create_bucket(BUCKET)
        self.db_url = self.postgres.create_database("parley_cluster")
        self.parley("db", "upgrade")
        for i in range(self.n_gateways):
            name = f"gateway-{'ab'[i] if i < 2 else i}"
            home = self.workdir / name
            home.mkdir(parents=True, exist_ok=True)
            # the local queue trains in the gateway's own worker process; celery on workers
            train = 1 if self.queue == "local" else 0
            gateway = Gateway(name, free_port(), home, self.process_env(home), train_workers=train)
            self.gateways.append(gateway)
            self._stack.callback(gateway.stop)
        for i in range(self.n_workers):
            name = f"worker-{i + 1}"
            home = self.workdir / name
            home.mkdir(parents=True, exist_ok=True)
            # INFO: the worker's `worker.ready` line says when it takes jobs
            worker = Worker(name, home, {**self.process_env(home), "PARLEY_LOG_LEVEL": "INFO"})
            self.workers.append(worker)
            self._stack.callback(worker.stop)
        for worker in self.workers:  # workers boot while the gateways do
            worker.start(wait=False)
        for gateway in self.gateways:
            gateway.start()
        for worker in self.workers:
            worker.wait_ready()

    def close(self) -> None:
        self._stack.close()

    def heal(self) -> None:
        """Start again whatever was killed or stopped: Redis and the store (same ports; empty),
        gateways and workers (same ports, data and cache dirs)."""
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.redis.start()
        if self.s3.proc is None or self.s3.proc.poll() is not None:
            self.s3.start()
        for gateway in self.gateways:
            if not gateway.alive:
                gateway.stop()
                gateway.start()
        restarted = [w for w in self.workers if not w.alive]
        for worker in restarted:
            worker.stop()
            worker.start(wait=False)
        for worker in restarted:
            worker.wait_ready()

    def parley(self, *args: str, stdin: str | None = None) -> str:
        """Run a ``parley`` operator command against the cluster's database; its stdout."""
        home = self.workdir / "operator"
        env = {**os.environ, **self.process_env(home), "PARLEY_DATA_DIR": str(home / "data")}
        proc = subprocess.run(
            [str(parley_bin()), *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise BenchError(
                f"parley {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    # -- operator actions --------------------------------------------------------------------

    def create_tenant(self, name: str | None = None) -> Tenant:
        name = name or f"t-{secrets.token_hex(4)}"
        with httpx.Client(base_url=self.gateways[0].url, timeout=30.0) as client:
            body = check(
                client.post(
                    "/v1/tenants",
                    json={"name": name},
                    headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
                ),
                201,
            )
        return Tenant(name, str(body["tenant_id"]), str(body["api_key"]))

    def create_agent(self, tenant: Tenant, username: str, password: str) -> None:
        self.parley(
            "agents", "create", username, "--tenant", tenant.name, "--password-stdin",
            stdin=password + "\n",
        )  # fmt: skip

    def worker_running(self, model_id: str) -> Worker | None:
        """The worker whose process tree runs ``model_id`` now (from the model row's
        ``worker`` column, ``host/pid/index``), or None."""
        import psycopg

        with psycopg.connect(self.postgres.conninfo("parley_cluster")) as conn:
            row = conn.execute(
                "SELECT worker, status FROM models WHERE id = %s", (model_id,)
            ).fetchone()
        if row is None or row[0] is None or row[1] != "running":
            return None
        pid = int(str(row[0]).split("/")[1])
        for worker in self.workers:
            if pid in worker.pids():
                return worker
        return None

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the cluster's database (for checks)."""
        import psycopg

        with psycopg.connect(self.postgres.conninfo("parley_cluster")) as conn:
            return list(conn.execute(query, params).fetchall())

    def logs(self, lines: int = 30) -> str:
        """The tails of every process's logs, for a failure message."""
        parts = []
        for proc in [*self.gateways, *self.workers]:
            for path in sorted(proc.home.glob(f"{proc.name}.*.log")):
                parts.append(f"--- {path} ---\n{tail(path, lines)}")
        return "\n".join(parts)

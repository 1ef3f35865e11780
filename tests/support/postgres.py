"""A real, throwaway PostgreSQL server for tests.

Starts a private cluster from the Debian binaries (``/usr/lib/postgresql/<v>/bin``;
install them with ``scripts/install-system-deps``), listening only on 127.0.0.1
on a free port, with trust auth for the superuser ``parley`` and a ``parley``
database::

    with PostgresServer(tmp_path / "pg") as pg:
        engine = sqlalchemy.create_engine(pg.url)
        other_url = pg.create_database("tenant_a")

Durability is switched off (``--no-sync``, ``fsync=off``...) because the data is
thrown away. initdb/postgres refuse to run as root, so when the tests run as
root the binaries run as the ``postgres`` system user via ``runuser``.

No pytest import here: fixtures wrap this class in a conftest.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ["PostgresServer", "find_postgres_bin", "free_port"]

USER = "parley"
DEFAULT_DB = "parley"
HOST = "127.0.0.1"
RUN_AS_WHEN_ROOT = "postgres"
# Settings for a disposable, fast, loopback-only cluster.
_CONF_FILE = "parley_test.conf"
_SOCKET_NAME_MAX = 100  # sun_path is 108 bytes; keep a margin for ".s.PGSQL.NNNNN"


def find_postgres_bin() -> pathlib.Path | None:
    """Return ``/usr/lib/postgresql/<highest version>/bin`` holding initdb and pg_ctl.

    ``PARLEY_PG_BIN`` (a directory) overrides the search. None when not found.
    """
    override = os.environ.get("PARLEY_PG_BIN")
    candidates: list[pathlib.Path] = []
    if override:
        candidates.append(pathlib.Path(override))
    root = pathlib.Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = []
        for child in root.iterdir():
            m = re.fullmatch(r"(\d+)(?:\.(\d+))?", child.name)
            if m:
                versions.append(((int(m.group(1)), int(m.group(2) or 0)), child / "bin"))
        candidates.extend(path for _, path in sorted(versions, reverse=True))
    for bin_dir in candidates:
        if all(os.access(bin_dir / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return bin_dir
    return None


def free_port(host: str = HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago (bound with port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: pathlib.Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class PostgresServer:
    """A throwaway PostgreSQL cluster under ``base_dir``; a context manager.

    Layout: ``base_dir/data`` (PGDATA), ``base_dir/sock`` (unix socket),
    ``base_dir/postgres.log``. When running as root and the ``postgres`` user
    cannot reach ``base_dir`` (e.g. pytest's 0700 ``/tmp/pytest-of-root``), the
    cluster lives in a fresh ``tempfile.mkdtemp()`` instead, removed on stop().
    """

    def __init__(self, base_dir: pathlib.Path, port: int | None = None):
        self.base_dir = pathlib.Path(base_dir).resolve()
        self.port: int | None = port
        self._auto_port = port is None
        self.bin_dir: pathlib.Path | None = None
        self.root_dir: pathlib.Path = self.base_dir  # where data/sock/log live
        self._owned_dirs: list[pathlib.Path] = []  # mkdtemp fallbacks, removed on stop
        self._run_as: str | None = None
        self._run_as_ids: tuple[int, int] | None = None
        self._socket_dir: pathlib.Path | None = None
        self._started = False
        self.start_seconds: float | None = None

    # -- paths and URLs -------------------------------------------------------

    @property
    def data_dir(self) -> pathlib.Path:
        return self.root_dir / "data"

    @property
    def log_file(self) -> pathlib.Path:
        return self.root_dir / "postgres.log"

    @property
    def socket_dir(self) -> pathlib.Path:
        return self._socket_dir or self.root_dir / "sock"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``parley`` database."""
        return self.url_for(DEFAULT_DB)

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy (psycopg 3) URL of database ``dbname`` on this server."""
        return f"postgresql+psycopg://{USER}@{HOST}:{self._require_port()}/{dbname}"

    def conninfo(self, dbname: str = DEFAULT_DB) -> str:
        """libpq URL for ``psycopg.connect`` / ``psql``."""
        return f"postgresql://{USER}@{HOST}:{self._require_port()}/{dbname}"

    def _require_port(self) -> int:
        if self.port is None:
            raise RuntimeError("PostgresServer has no port yet: call start() first")
        return self.port

    @property
    def running(self) -> bool:
        pid = self._postmaster_pid()
        return pid is not None and _pid_alive(pid)

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> PostgresServer:
        if self._started:
            return self
        t0 = time.monotonic()
        self.bin_dir = find_postgres_bin()
        if self.bin_dir is None:
            raise RuntimeError(
                "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin "
                "(run scripts/install-system-deps, or set PARLEY_PG_BIN)"
            )
        try:
            self._prepare_dirs()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            attempts = 3 if self._auto_port else 1
            for attempt in range(attempts):
                if self.port is None or (self._auto_port and attempt > 0):
                    self.port = free_port()
                self._write_conf()
                try:
                    self._pg_ctl_start()
                    break
                except RuntimeError as e:
                    if attempt + 1 < attempts and "already in use" in str(e):
                        continue
                    raise
            self._started = True
            atexit.register(self.stop)
            self._ensure_database(DEFAULT_DB)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop the server (``pg_ctl -m immediate``); never raises."""
        try:
            atexit.unregister(self.stop)
            if self.bin_dir is not None and (self.data_dir / "postmaster.pid").exists():
                pid = self._postmaster_pid()
                with contextlib.suppress(Exception):
                    self._run(
                        [
                            self.bin_dir / "pg_ctl",
                            "-D",
                            self.data_dir,
                            "-m",
                            "immediate",
                            "-w",
                            "-t",
                            "30",
                            "stop",
                        ],
                        as_server=True,
                        timeout=60,
                    )
                if pid is not None:
                    deadline = time.monotonic() + 10
                    while _pid_alive(pid) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    if _pid_alive(pid):  # last resort: kill the postmaster
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
        except Exception:
            pass
        finally:
            self._started = False
            for d in self._owned_dirs:
                shutil.rmtree(d, ignore_errors=True)
            if self._owned_dirs:
                # data went with the temp dir: a later start() begins afresh
                self._owned_dirs = []
                self._socket_dir = None
                self.root_dir = self.base_dir

    # -- databases ------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create a fresh, empty database ``name`` (dropping one of that name
        first, if any) and return its SQLAlchemy URL."""
        if not self._started:
            raise RuntimeError("PostgresServer is not started")
        if not name or len(name.encode()) > 63 or "\x00" in name:
            raise ValueError(f"invalid database name: {name!r}")
        try:
            import psycopg
            from psycopg import sql
        except ImportError:
            psycopg = None
        if psycopg is not None:
            ident = sql.Identifier(name)
            with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident))
        else:
            common = ["-h", HOST, "-p", str(self.port), "-U", USER]
            self._run([self.bin_dir / "dropdb", *common, "--if-exists", "--force", name])
            self._run([self.bin_dir / "createdb", *common, "-T", "template0", name])
        return self.url_for(name)

    def _ensure_database(self, name: str) -> None:
        common = ["-h", HOST, "-p", str(self.port), "-U", USER]
        res = self._run(
            [
                self.bin_dir / "psql",
                *common,
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{name}'",
            ],
        )
        if res.stdout.strip() != "1":
            self._run([self.bin_dir / "createdb", *common, name])

    # -- internals ------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(RUN_AS_WHEN_ROOT)
            except KeyError:
                raise RuntimeError(
                    "running as root, but there is no 'postgres' system user to run "
                    "PostgreSQL as (install the postgresql package)"
                ) from None
            self._run_as = RUN_AS_WHEN_ROOT
            self._run_as_ids = (pw.pw_uid, pw.pw_gid)
            os.chown(self.base_dir, pw.pw_uid, pw.pw_gid)
            if not self._server_can_reach(self.base_dir):
                self.root_dir = self._owned_tempdir("parley-pg-")
        self.data_dir.mkdir(exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        sock = self.root_dir / "sock"
        if len(str(sock)) + len("/.s.PGSQL.65535") > _SOCKET_NAME_MAX:
            self._socket_dir = self._owned_tempdir("pgsock-")
        else:
            sock.mkdir(exist_ok=True)
        for path in (self.root_dir, self.data_dir, self.socket_dir):
            self._chown(path)

    def _owned_tempdir(self, prefix: str) -> pathlib.Path:
        d = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
        self._owned_dirs.append(d)
        os.chmod(d, 0o755)
        self._chown(d)
        if self._run_as and not self._server_can_reach(d):
            raise RuntimeError(
                f"user {self._run_as!r} cannot reach {d}; set TMPDIR to a directory it can traverse"
            )
        return d

    def _chown(self, path: pathlib.Path) -> None:
        if self._run_as_ids is not None:
            os.chown(path, *self._run_as_ids)

    def _server_can_reach(self, path: pathlib.Path) -> bool:
        """Can the server user enter ``path`` (every parent traversable)?"""
        res = subprocess.run(
            ["runuser", "-u", self._run_as, "--", "test", "-x", str(path), "-a", "-w", str(path)],
            cwd="/",
            capture_output=True,
        )
        return res.returncode == 0

    def _initdb(self) -> None:
        self._run(
            [
                self.bin_dir / "initdb",
                "-D",
                self.data_dir,
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            as_server=True,
            timeout=120,
            what="initdb",
        )
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as f:
            f.write(f"\ninclude_if_exists = '{_CONF_FILE}'\n")

    def _write_conf(self) -> None:
        sock = str(self.socket_dir).replace("'", "''")
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{sock}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        path = self.data_dir / _CONF_FILE
        path.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        self._chown(path)

    def _pg_ctl_start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.log_file.unlink()
        self._run(
            [
                self.bin_dir / "pg_ctl",
                "-D",
                self.data_dir,
                "-l",
                self.log_file,
                "-w",
                "-t",
                "60",
                "start",
            ],
            as_server=True,
            timeout=90,
            what="pg_ctl start",
        )

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first.strip())
        except (OSError, ValueError):
            return None

    def _run(
        self,
        argv: list,
        *,
        as_server: bool = False,
        timeout: float = 60,
        what: str | None = None,
    ) -> subprocess.CompletedProcess:
        argv = [str(a) for a in argv]
        if as_server and self._run_as:
            argv = ["runuser", "-u", self._run_as, "--", *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.setdefault("LC_ALL", "C")
        try:
            res = subprocess.run(
                argv,
                cwd=self.root_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(
                f"{what or argv[0]} failed: {e}\n--- server log tail ---\n{_tail(self.log_file)}"
            ) from e
        if res.returncode != 0:
            raise RuntimeError(
                f"{what or os.path.basename(argv[0])} failed "
                f"(exit {res.returncode}): {' '.join(argv)}\n"
                f"--- output ---\n{(res.stdout + res.stderr).strip()}\n"
                f"--- server log tail ---\n{_tail(self.log_file)}"
            )
        return res

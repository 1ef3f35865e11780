"""``parley serve --processes N``: N gateway processes answer on one port, the train workers
start once, a gateway that dies is started again while the others keep answering, and N > 1
is refused where the processes could not share their rate-limit and quota counters, where
the port is taken (another ``parley serve --processes`` included), and where a gateway cannot
start (no restart loop). A killed supervisor leaves no gateway serving."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from core.errors import ConfigurationError
from core.settings import Settings
from parley import cli
from parley.serving import serve_processes
from tests.conftest import CACHE_DIR

PARLEY = str(Path(sys.executable).parent / "parley")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):  # gone: no children
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(x) for x in (task / "children").read_text().split()]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _gateways(pid: int) -> list[int]:
    return [c for c in _children(pid) if "multiprocessing.spawn" in _cmdline(c)]


def _workers(pid: int) -> list[int]:
    return [w for g in _gateways(pid) for w in _children(g) if "training.worker" in _cmdline(w)]


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def _answers(url: str, times: int) -> bool:
    """``times`` health checks in a row answered, each on a new connection."""
    for _ in range(times):
        try:
            if httpx.get(f"{url}/v1/health", timeout=5).status_code != 200:
                return False
        except httpx.HTTPError:
            return False
    return True


def _env(data_dir: Path, redis_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")},
        "PARLEY_DATA_DIR": str(data_dir),
        "PARLEY_CACHE_DIR": str(CACHE_DIR),
        "PARLEY_REDIS__URL": redis_url,
        "PARLEY_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def server(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = _env(tmp_path, redis_url)
    cmd = [PARLEY, "serve", "--no-demo", "--port", str(port), "--processes", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: len(_gateways(proc.pid)) == 2 and _answers(url, 1), 120, "serving")
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_two_gateway_processes_answer_and_one_that_dies_is_started_again(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, proc = server
    first, second = _gateways(proc.pid)
    _wait(lambda: len(_workers(proc.pid)) == 1, 60, "one train worker for both gateways")
    for listener in (first, second):  # both listen on the port (the kernel spreads connections)
        _wait(lambda p=listener: _listening(p, url), 60, f"gateway {listener} listening")
    for dead, alive in ((second, first), (first, second)):
        os.kill(dead, signal.SIGKILL)
        _wait(lambda: _answers(url, 10), 20, f"gateway {alive} alone answering")
        _wait(
            lambda d=dead: len(_gateways(proc.pid)) == 2 and d not in _gateways(proc.pid),
            60,
            "the dead gateway started again",
        )
    # the first gateway (with the train worker) died too: still one worker, under its successor
    _wait(lambda: len(_workers(proc.pid)) == 1, 60, "one train worker again")
    _wait(lambda: _answers(url, 10), 60, "both answering")
    last = _gateways(proc.pid) + _workers(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    _wait(lambda: not any(Path(f"/proc/{p}").exists() for p in last), 10, "all stopped")


def _listening(pid: int, url: str) -> bool:
    """Whether ``pid`` holds a listening socket on the URL's port."""
    port = int(url.rsplit(":", 1)[1])
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port and inode in inodes:
            return True
    return False


def test_several_processes_need_a_shared_counter_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli.app, ["serve", "--no-demo", "--processes", "2"])
    assert result.exit_code == 1
    assert "PARLEY_REDIS__URL" in result.output and "--processes 1" in result.output


@pytest.mark.slow
def test_gateways_stop_when_their_supervisor_is_killed(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, proc = server
    _wait(lambda: len(_workers(proc.pid)) == 1, 60, "the train worker started")
    orphans = _gateways(proc.pid) + _workers(proc.pid)
    proc.kill()  # SIGKILL: the supervisor stops nothing itself
    proc.wait(timeout=10)
    _wait(lambda: not any(_alive(p) for p in orphans), 30, "gateways and worker gone with it")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/v1/health", timeout=2)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_a_gateway_that_cannot_start_stops_the_server(tmp_path: Path, redis_url: str) -> None:
    env = {**_env(tmp_path, redis_url), "PARLEY_SECRET_KEY": "short"}
    cmd = [PARLEY, "serve", "--no-demo", "--port", str(_free_port()), "--processes", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert "stopped before it served" in done.stderr
    assert done.stderr.count("Traceback") <= 2  # each gateway failed once: no restart loop


def test_a_port_another_server_listens_on_is_refused(redis_url: str) -> None:
    with socket.socket() as other:  # the way another ``parley serve --processes`` listens
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = int(other.getsockname()[1])
        settings = Settings(serving={"processes": 2}, redis={"url": redis_url})
        with pytest.raises(ConfigurationError, match="another server"):
            serve_processes(settings, host="127.0.0.1", port=port)

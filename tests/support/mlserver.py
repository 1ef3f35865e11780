"""A real MLServer (an Open Inference Protocol / KServe V2 server, from PyPI) for tests, run
from ``.venv-mlserver`` (``scripts/install-mlserver``), listening on 127.0.0.1 only: HTTP on a
free port, gRPC on another (MLServer always starts it), metrics off, inference in the server's
own process (``parallel_workers: 0``)::

    with MLServer(folder) as server:  # folder: one sub-folder per model (model-settings.json)
        server.url                    # http://127.0.0.1:PORT
        server.stop(); server.start() # a fault: the server goes away and comes back

``run_python(code, cwd=...)`` runs Python in the server's venv, so a test trains its model
with the very scikit-learn that serves it. No pytest import here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.postgres import free_port

__all__ = ["MLSERVER", "PYTHON", "MLServer", "installed", "run_python"]

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-mlserver"
PYTHON = VENV / "bin" / "python"
MLSERVER = VENV / "bin" / "mlserver"


def installed() -> bool:
    return MLSERVER.exists()


def run_python(code: str, *, cwd: Path, timeout: float = 120) -> str:
    """Run ``code`` with the server venv's Python in ``cwd``; its standard output."""
    done = subprocess.run(
        [str(PYTHON), "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"python in {VENV} failed:\n{done.stderr[-4000:]}")
    return done.stdout


class MLServer:
    def __init__(self, models_dir: Path, port: int | None = None) -> None:
        if not installed():
            raise RuntimeError("MLServer is not installed; run scripts/install-mlserver")
        self.dir = models_dir
        self.port = port or free_port()
        self.grpc_port = free_port()
        self.log = models_dir / "mlserver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def models(self) -> list[str]:
        return sorted(
            json.loads(p.read_text())["name"] for p in self.dir.glob("*/model-settings.json")
        )

    def start(self, timeout: float = 90.0) -> None:
        settings = {
            "host": "127.0.0.1",
            "http_port": self.port,
            "grpc_port": self.grpc_port,
            "metrics_endpoint": None,
            "parallel_workers": 0,
            "load_models_at_startup": True,
        }
        (self.dir / "settings.json").write_text(json.dumps(settings))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(MLSERVER), "start", str(self.dir)],
                cwd=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        deadline = time.monotonic() + timeout
        waiting = self.models()
        while waiting:
            if self.proc.poll() is not None:
                raise RuntimeError(f"MLServer exited:\n{self._tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"MLServer did not get ready in {timeout:g} s:\n{self._tail()}")
            try:
                ready = httpx.get(
                    f"{self.url}/v2/models/{waiting[0]}/ready", timeout=1, trust_env=False
                )
                if ready.status_code == 200:
                    waiting.pop(0)
                    continue
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def _tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> MLServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

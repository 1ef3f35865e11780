"""The embedded train queue: worker subprocesses started and watched by the server.

Each worker (``python -m training.worker``) polls the database for the next queued job
(``claim_next_job``: tenants in turn), so the database is the queue. A worker that dies is
restarted, and its job re-queued or failed; one that exits by itself to release PyTorch after
an idle spell (``RECYCLED_EXIT``) is started again the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine

from core.logging import log_event
from core.settings import Settings
from training.queue.base import RECYCLED_EXIT, recover_interrupted, train_queues, worker_name


@train_queues.register("local")
@dataclass
class LocalQueue:
    settings: Settings
    engine: Engine
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> LocalQueue:
        return cls(settings=settings, engine=engine)

    def start(self) -> None:
        self._recover_abandoned()
        for i in range(self.settings.queue.workers):
            self._spawn(worker_name(os.getpid(), i))
        self._watcher = threading.Thread(target=self._watch, name="queue-watcher", daemon=True)
        self._watcher.start()

    def submit(self, model_id: str) -> None:
        # Workers poll the database; nothing else to do. Say so when no worker would run it.
        if not self._procs and not self.settings.queue.workers_elsewhere:
            log_event("queue.no_workers", model=model_id)

    def _spawn(self, name: str) -> None:
        env = {**os.environ, **self.settings.worker_env()}
        proc = subprocess.Popen(
            [sys.executable, "-m", "training.worker", "--name", name, "--parent", str(os.getpid())],
            env=env,
        )
        self._procs[name] = proc
        log_event("queue.worker_started", worker=name, pid=proc.pid)

    def _recover_abandoned(self) -> None:
        recover_interrupted(
            self.engine,
            max_attempts=self.settings.queue.max_attempts,
            stale_after=self.settings.queue.stale_after,
        )

    def _watch(self) -> None:
        ticks = 0
        while not self._stop.wait(1.0):
            ticks += 1
            if ticks % 30 == 0:  # jobs of workers on other hosts that stopped beating
                self._recover_abandoned()
            for name, proc in list(self._procs.items()):
                code = proc.poll()
                if code is None or self._stop.is_set():
                    continue
                if code == RECYCLED_EXIT:  # idle: it released PyTorch
                    log_event("queue.worker_recycled", worker=name)
                else:
                    log_event("queue.worker_died", worker=name, exit_code=code)
                recover_interrupted(
                    self.engine, max_attempts=self.settings.queue.max_attempts, worker=name
                )
                del self._procs[name]
                self._spawn(name)

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        for proc in self._procs.values():
            proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()

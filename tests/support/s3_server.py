"""A throwaway S3-compatible server for tests: ``moto`` in server mode, as a subprocess,
listening only on 127.0.0.1 on a free port::

    with S3Server() as s3:
        s3.create_bucket("parley-test")
        url = s3.endpoint_url      # http://127.0.0.1:PORT, for PARLEY_STORAGE__ENDPOINT_URL
        env = s3.env               # AWS_ACCESS_KEY_ID=testing, ... (moto accepts any)
        s3.stop(); s3.start()      # a fault: the store goes away and comes back, same port
        s3.pause(); s3.resume()    # a fault: the store hangs (SIGSTOP), then answers again

moto stands in for MinIO (or AWS) in tests only: MinIO cannot be installed on our machines and
moto speaks the same S3 wire protocol. Deployments use a real object store.

moto keeps everything in memory, so ``stop`` loses every object; ``start`` creates again the
buckets made through ``create_bucket`` (empty), as an operator would after MinIO lost its volume.

No pytest import here: fixtures wrap this class in a conftest.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["S3_ENV", "S3Server"]

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.buckets: list[str] = []

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS credential variables a client (or a worker subprocess) needs."""
        return dict(S3_ENV)

    def start(self, timeout: float = 30.0) -> None:
        python = Path(sys.executable)
        self.proc = subprocess.Popen(
            [str(python), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **S3_ENV},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"moto server did not answer on port {self.port}")
        for name in self.buckets:
            self._client().create_bucket(Bucket=name)

    def stop(self) -> None:
        """Kill the server (its objects are lost); ``start`` brings it back on the same port."""
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        """Freeze the server: connections open but nothing answers (a hung store)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def _client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str) -> str:
        """Create an empty bucket (again after a restart); returns its name."""
        self._client().create_bucket(Bucket=name)
        if name not in self.buckets:
            self.buckets.append(name)
        return name

    def object_sizes(self, bucket: str) -> dict[str, int]:
        """Every key stored in ``bucket`` and its size in bytes."""
        sizes: dict[str, int] = {}
        for page in self._client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            sizes.update((obj["Key"], int(obj["Size"])) for obj in page.get("Contents", []))
        return sizes

    def object_keys(self, bucket: str) -> list[str]:
        """Every key stored in ``bucket`` (for tests that check what was written)."""
        return list(self.object_sizes(bucket))

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

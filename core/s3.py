"""Artifacts in S3-compatible object storage (MinIO, AWS S3): ``PARLEY_STORAGE__URL=s3://bucket/prefix``.

``S3Store`` implements ``core.storage.ArtifactStore`` with boto3. Every key lives below the URL's
prefix and passes ``check_key``. Credentials come from the usual AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ...); ``PARLEY_STORAGE__ENDPOINT_URL`` names a
MinIO (or other) endpoint; each call gives up after ``PARLEY_STORAGE__TIMEOUT_S``.

A folder (``put_dir``, a model's artifact) is uploaded file by file, then its manifest,
``<prefix>/.parley-manifest.json``, is written LAST::

    {"format": "parley-artifact/1", "sha256": "<sha256_dir of the folder>",
     "files": [{"path": "head.safetensors", "size": 1234, "sha256": "<hex>"}, ...]}

``local_dir`` only downloads a folder whose manifest exists, into a temporary folder, checks each
file's size and sha256 against the manifest, then renames it into the local cache atomically, so
a half-written artifact (no manifest yet, a missing or corrupted object) is never handed out.
The cache (``settings.artifacts_dir``, below ``cache_dir``) is laid out as::

    <artifacts_dir>/<bucket>/files/<url prefix>/<prefix>/...          the folder's files
    <artifacts_dir>/<bucket>/manifests/<url prefix>/<prefix>.json     the manifest they match

A cached folder is used without asking the store again as long as its files still match that
manifest (artifacts are written once per model id and attempt); one that was tampered with is
downloaded again. Processes sharing a cache dir change a folder's cached copy one at a time (an
``flock`` per folder under ``<artifacts_dir>/<bucket>/locks``), so none moves away a copy that
another has just placed and is loading. Connection failures, timeouts and 5xx answers raise
``Unavailable`` naming the store; missing credentials or region, and a skewed clock, raise
``ConfigurationError`` saying what to set.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.errors import ConfigurationError, InvalidInput, NotFound, ParleyError, Unavailable
from core.settings import Settings
from core.storage import check_key, sha256_file

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "S3Store"]

MANIFEST_NAME = ".parley-manifest.json"
MANIFEST_FORMAT = "parley-artifact/1"
RETRY_AFTER_S = 5
_ATTEMPTS = 2  # one retry: a store that is down answers quickly with an error
_CHUNK = 1 << 20


def _digest(files: list[dict[str, Any]]) -> str:
    """``sha256_dir`` computed from the manifest's per-file digests (no file read again)."""
    h = hashlib.sha256()
    for entry in sorted(files, key=lambda e: e["path"]):
        h.update(entry["path"].encode())
        h.update(b"\0")
        h.update(bytes.fromhex(entry["sha256"]))
    return h.hexdigest()


class S3Store:
    """Artifacts as objects below ``s3://bucket/root``, with a local cache for ``local_dir``."""

    page_size = 1000  # keys per listing page and per batch delete (S3's maximum)

    def __init__(
        self,
        bucket: str,
        root: str,
        *,
        cache_dir: Path,
        endpoint_url: str | None = None,
        region: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.root = root.strip("/")
        if self.root:
            check_key(self.root)
        self.endpoint_url = endpoint_url
        self.where = f"the object store at {endpoint_url or 'AWS S3'} (bucket {bucket})"
        cache = cache_dir / bucket
        self._files = cache / "files" / self.root if self.root else cache / "files"
        self._manifests = cache / "manifests" / self.root if self.root else cache / "manifests"
        self._tmp = cache / "tmp"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # each attempt gets half the budget less the retry's back-off (at most 1 s), so a call
        # gives up within timeout_s whether the store refuses connections or hangs
        per_attempt = max(0.1, (timeout_s - 1.0) / _ATTEMPTS)
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                connect_timeout=per_attempt,
                read_timeout=per_attempt,
                retries={"total_max_attempts": _ATTEMPTS, "mode": "standard"},
                # checksums only where S3 requires them: some S3-compatible stores refuse the
                # newer default ones; the manifest's sha256s check what matters
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        url = urlsplit(settings.storage_url)
        if url.scheme != "s3" or not url.netloc:
            raise ConfigurationError(
                f"PARLEY_STORAGE__URL={settings.storage_url!r} names no bucket; write it as "
                "s3://bucket/prefix"
            )
        return cls(
            url.netloc,
            url.path,
            cache_dir=settings.artifacts_dir,
            endpoint_url=settings.storage.endpoint_url,
            region=settings.storage.region,
            timeout_s=settings.storage.timeout_s,
        )

    # --- keys and errors ----------------------------------------------------------------------

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.root}/{key}" if self.root else key

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn what boto3 raises into Parley's errors, naming the store."""
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
        )

        try:
            yield
        except ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code == "NoSuchBucket":
                raise ConfigurationError(
                    f"{self.where} has no bucket {self.bucket!r}; create it (`mc mb` with MinIO, "
                    f"`aws s3 mb s3://{self.bucket}` on AWS) or fix PARLEY_STORAGE__URL"
                ) from e
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise ConfigurationError(
                    f"{self.where} refused Parley's credentials while {what} ({code}); check "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ) from e
            if code in ("RequestTimeTooSkewed", "RequestExpired"):
                raise ConfigurationError(
                    f"{self.where} refused a request while {what} because this machine's clock "
                    f"differs too much from the store's ({code}); set the clock right (run NTP: "
                    "chrony or systemd-timesyncd) on this machine"
                ) from e
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
                raise self._unavailable(what, e) from e
            raise ParleyError(f"{self.where} answered {code or status} while {what}: {e}") from e
        except (NoCredentialsError, PartialCredentialsError) as e:
            raise ConfigurationError(
                f"no complete credentials for {self.where} ({e}); set both AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE naming a profile that has them)"
            ) from e
        except NoRegionError as e:
            raise ConfigurationError(
                f"no region for {self.where}; set PARLEY_STORAGE__REGION (or AWS_DEFAULT_REGION), "
                "e.g. us-east-1"
            ) from e
        except (ConnectionError, HTTPClientError) as e:  # refused, timed out, cut off
            raise self._unavailable(what, e) from e

    def _unavailable(self, what: str, error: BaseException) -> Unavailable:
        return Unavailable(
            f"{self.where} is unreachable ({type(error).__name__}: {error}) while {what}. Try "
            "again in a few seconds; operators: check that the object store is running and "
            "that PARLEY_STORAGE__ENDPOINT_URL points at it",
            retry_after=RETRY_AFTER_S,
            service="object store",
        )

    @staticmethod
    def _missing(e: BaseException) -> bool:
        from botocore.exceptions import ClientError

        if not isinstance(e, ClientError):
            return False
        code = str(e.response.get("Error", {}).get("Code", ""))
        return code in ("NoSuchKey", "404", "NotFound")

    def _keys_under(self, prefix: str, what: str) -> Iterator[tuple[str, int]]:
        """Every (full key, size) stored at ``prefix`` itself or below ``prefix/``."""
        full = self._key(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors(what):
            pages = paginator.paginate(
                Bucket=self.bucket, Prefix=full, PaginationConfig={"PageSize": self.page_size}
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key == full or key.startswith(full + "/"):
                        yield key, int(obj["Size"])

    # --- the ArtifactStore methods ------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        with self._errors(f"storing {key}"):
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)

    def get_bytes(self, key: str) -> bytes:
        full = self._key(key)
        with self._errors(f"reading {key}"):
            try:
                return bytes(self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read())
            except Exception as e:
                if self._missing(e):
                    raise NotFound(f"artifact {key} is missing from storage") from None
                raise

    def exists(self, key: str) -> bool:
        """True for a stored object or a folder with objects below it."""
        full = self._key(key)
        with self._errors(f"looking for {key}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=full)
                return True
            except Exception as e:
                if not self._missing(e):
                    raise
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full + "/", MaxKeys=1)
            return bool(page.get("KeyCount", 0))

    def size_of(self, prefix: str) -> int:
        """Bytes stored at or below ``prefix`` (manifests not counted), from one listing."""
        return sum(
            size
            for key, size in self._keys_under(prefix, f"measuring {prefix}")
            if not key.endswith("/" + MANIFEST_NAME)
        )

    def put_dir(self, prefix: str, directory: Path) -> None:
        """Upload every file of ``directory``, replacing what was at ``prefix``; the manifest
        goes last, so readers see the folder only once it is complete."""
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        entries = []
        for path in files:
            rel = path.relative_to(directory).as_posix()
            if rel == MANIFEST_NAME:
                raise InvalidInput(f"a stored folder may not contain a file named {MANIFEST_NAME}")
            check_key(rel)
            entries.append({"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)})
        manifest = {"format": MANIFEST_FORMAT, "sha256": _digest(entries), "files": entries}
        what = f"storing {prefix}"
        self._delete(prefix, what)  # the old manifest first, so no reader mixes old and new
        with self._errors(what):
            for path, entry in zip(files, entries, strict=True):
                with path.open("rb") as body:
                    self.client.put_object(
                        Bucket=self.bucket, Key=self._key(f"{prefix}/{entry['path']}"), Body=body
                    )
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(f"{prefix}/{MANIFEST_NAME}"),
                Body=json.dumps(manifest, sort_keys=True).encode(),
                ContentType="application/json",
            )

    def delete_prefix(self, prefix: str) -> None:
        """Delete the object at ``prefix`` and every object below it (the manifest first), and
        the local cache of that folder."""
        self._delete(prefix, f"deleting {prefix}")

    def _delete(self, prefix: str, what: str) -> None:
        manifest = self._key(f"{prefix}/{MANIFEST_NAME}")
        with self._errors(what):
            self.client.delete_object(Bucket=self.bucket, Key=manifest)
        keys = [key for key, _ in self._keys_under(prefix, what)]
        with self._errors(what):
            for start in range(0, len(keys), self.page_size):
                batch = [{"Key": k} for k in keys[start : start + self.page_size]]
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise ParleyError(
                        f"{self.where} did not delete {len(answer['Errors'])} object(s) while "
                        f"{what}, e.g. {first.get('Key')}: {first.get('Code')} "
                        f"{first.get('Message')}; try again"
                    )
        with self._lock_for(prefix), self._cache_lock(prefix):
            self._drop_cache(prefix)

    def local_dir(self, prefix: str) -> Path:
        """The folder at ``prefix`` on local disk: the cached copy while it still matches its
        manifest, else a fresh, verified download (one at a time per folder in this process)."""
        check_key(prefix)
        target = self._files / prefix
        cached = self._manifests / f"{prefix}.json"
        if self._cached(target, cached):
            return target
        with self._lock_for(prefix), self._cache_lock(prefix):
            if self._cached(target, cached):  # another thread or process downloaded it meanwhile
                return target
            manifest = self._fetch_manifest(prefix)
            if not (target.is_dir() and self._matches(target, manifest) is None):
                self._place(prefix, manifest, target)
            cached.parent.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="manifest-")
            with os.fdopen(fd, "w") as f:
                json.dump(manifest, f)
            os.replace(tmp, cached)
        return target

    # --- the local cache ----------------------------------------------------------------------

    def _lock_for(self, prefix: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(prefix, threading.Lock())

    @contextmanager
    def _cache_lock(self, prefix: str) -> Iterator[None]:
        """One process at a time changes the cached copy of ``prefix`` (processes sharing one
        cache dir: a gateway's workers, a worker's pool): an exclusive ``flock`` on a file
        named after the folder. Not re-entrant: take it once per call."""
        locks = self._tmp.parent / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(prefix.encode()).hexdigest()[:32]
        fd = os.open(locks / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _cached(self, target: Path, cached: Path) -> bool:
        """Whether ``target`` holds exactly the files of its cached manifest."""
        if not (cached.is_file() and target.is_dir()):
            return False
        try:
            return self._matches(target, json.loads(cached.read_text())) is None
        except (ValueError, KeyError, TypeError, OSError):
            return False  # unreadable, or changed while we read it: download the folder again

    def _place(self, prefix: str, manifest: dict[str, Any], target: Path) -> None:
        """Download into a temporary folder, check it, then rename it over ``target``."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self._tmp, prefix="dl-"))
        try:
            self._download(prefix, manifest, staging)
            if target.is_dir() and self._matches(target, manifest) is None:
                return  # placed meanwhile (by a process not sharing the lock): a reader may use it
            self._drop_cache(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(staging, target)
            except OSError:  # another process placed it first
                if self._matches(target, manifest) is not None:
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _fetch_manifest(self, prefix: str) -> dict[str, Any]:
        try:
            data = self.get_bytes(f"{prefix}/{MANIFEST_NAME}")
        except NotFound:
            raise NotFound(
                f"artifact folder {prefix} is missing from storage (or its upload never "
                "finished: it has no manifest)"
            ) from None
        try:
            manifest = json.loads(data)
            if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest["files"], list):
                raise ValueError(f"format {manifest.get('format')!r}")
        except (ValueError, KeyError, AttributeError) as e:
            raise NotFound(
                f"artifact folder {prefix} in {self.where} has an unreadable manifest ({e}); "
                "store it again"
            ) from None
        return dict(manifest)

    def _download(self, prefix: str, manifest: dict[str, Any], staging: Path) -> None:
        """Every file of the manifest into ``staging``, then checked against it."""
        for entry in manifest["files"]:
            rel = check_key(entry["path"])
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._errors(f"downloading {prefix}/{rel}"):
                try:
                    obj = self.client.get_object(
                        Bucket=self.bucket, Key=self._key(f"{prefix}/{rel}")
                    )
                except Exception as e:
                    if self._missing(e):
                        raise NotFound(
                            f"artifact folder {prefix} in {self.where} is incomplete: {rel} is "
                            "missing; store it again"
                        ) from None
                    raise
                with path.open("wb") as f:
                    for chunk in obj["Body"].iter_chunks(_CHUNK):
                        f.write(chunk)
        problem = self._matches(staging, manifest)
        if problem is not None:
            raise NotFound(
                f"artifact folder {prefix} in {self.where} does not match its manifest "
                f"({problem}); refusing to use it. Store it again"
            )

    @staticmethod
    def _matches(folder: Path, manifest: dict[str, Any]) -> str | None:
        """``None`` when ``folder`` holds exactly the manifest's files, else what differs."""
        files = manifest["files"]
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        expected = {e["path"] for e in files}
        if present != expected:
            return f"files {sorted(present ^ expected)} differ"
        for entry in files:
            path = folder / entry["path"]
            if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
                return f"{entry['path']} has other content"
        if _digest(files) != manifest.get("sha256"):
            return "the folder's digest differs"
        return None

    def _drop_cache(self, prefix: str) -> None:
        check_key(prefix)
        (self._manifests / f"{prefix}.json").unlink(missing_ok=True)
        shutil.rmtree(self._manifests / prefix, ignore_errors=True)  # folders below it (attempts)
        target = self._files / prefix
        if not target.exists():
            return
        self._tmp.mkdir(parents=True, exist_ok=True)
        trash = Path(tempfile.mkdtemp(dir=self._tmp, prefix="old-"))
        try:
            os.replace(target, trash / "old")  # out of readers' way at once; removed after
        except OSError:  # moved by another thread meanwhile, or a file: remove what is left
            shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)

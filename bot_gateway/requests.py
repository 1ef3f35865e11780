"""Request bodies read within limits: the declared length, multipart forms and their files."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from core.errors import InvalidInput, PayloadTooLarge

__all__ = ["check_length", "form_file", "read_form", "read_limited"]

CHUNK = 1 << 20
UPLOAD_SETTING = "max_upload_bytes"


def _too_large(what: str, limit: int, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} is over the upload limit of {limit} bytes (PARLEY_LIMITS__{setting.upper()})",
        limit=setting,
    )


async def read_limited(upload: UploadFile, limit: int, *, setting: str = UPLOAD_SETTING) -> bytes:
    """A file's bytes, refused as soon as they pass ``limit``."""
    parts, size = [], 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large("the file", limit, setting)
        parts.append(chunk)
    return b"".join(parts)


def check_length(request: Request, limit: int, *, setting: str = UPLOAD_SETTING) -> None:
    """Refuse a request whose declared length is over ``limit`` (plus room for the form)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 64 * 1024:
        raise _too_large("the request", limit, setting)


async def read_form(
    request: Request,
    *,
    limit: int,
    max_files: int = 1,
    max_fields: int = 20,
    setting: str = UPLOAD_SETTING,
) -> FormData:
    """The multipart form of a request of at most ``limit`` bytes."""
    check_length(request, limit, setting=setting)
    try:
        return await request.form(max_files=max_files, max_fields=max_fields)
    except Exception as e:  # noqa: BLE001 - starlette raises several kinds for a bad body
        raise InvalidInput(f"could not read the multipart form: {e}") from e


def form_file(form: FormData, field: str, what: str) -> UploadFile:
    """The file sent in ``field``, or a 422 saying how to send ``what``."""
    upload = form.get(field)
    if not isinstance(upload, UploadFile):
        raise InvalidInput(f"send {what} as a multipart form field named `{field}`")
    return upload

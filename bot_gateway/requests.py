"""Request bodies read within limits: the declared length, multipart forms and their files, and
the predict routes' body (JSON, or multipart images with options)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from bot_gateway.schemas import PredictRequest
from core.errors import InvalidInput, PayloadTooLarge
from core.settings import LimitSettings

__all__ = [
    "check_length",
    "form_file",
    "read_form",
    "read_limited",
    "read_predict_request",
]

CHUNK = 1 << 20
UPLOAD_SETTING = "max_upload_bytes"
PREDICT_FORM_OPTIONS = ("num_results", "engine", "task", "min_score", "entity_labels")


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


async def read_predict_request(
    request: Request, limits: LimitSettings
) -> tuple[PredictRequest, list[tuple[str, bytes]]]:
    """The options, and the uploaded files as ``(name, bytes)`` (multipart only)."""
    length = request.headers.get("content-length", "")
    budget = limits.max_image_bytes * limits.max_batch_images + 256 * 1024
    if length.isdigit() and int(length) > budget:
        raise PayloadTooLarge(
            f"the request is {length} bytes; send at most {limits.max_batch_images} images of "
            f"{limits.max_image_bytes} bytes each",
            limit="max_image_bytes",
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        try:
            return PredictRequest.model_validate_json(await request.body()), []
        except ValueError as e:
            raise InvalidInput(f"invalid JSON body: {e}") from e
    try:
        form = await request.form(max_files=limits.max_batch_images + 1, max_fields=20)
    except Exception as e:  # noqa: BLE001 - starlette raises several kinds for a bad body
        raise InvalidInput(f"could not read the multipart form: {e}") from e
    files: list[tuple[str, bytes]] = []
    options: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key not in ("file", "files", "image"):
                raise InvalidInput(f"unexpected file field {key!r}; send images as `file`")
            data = await value.read(limits.max_image_bytes + 1)
            name = f"file {value.filename or len(files) + 1}"
            if len(data) > limits.max_image_bytes:
                raise PayloadTooLarge(
                    f"{name} is over {limits.max_image_bytes} bytes "
                    "(PARLEY_LIMITS__MAX_IMAGE_BYTES)",
                    limit="max_image_bytes",
                )
            files.append((name, data))
        elif key in PREDICT_FORM_OPTIONS:
            options[key] = value.split(",") if key == "entity_labels" else value
        elif key in ("text", "texts"):
            raise InvalidInput("send text as JSON, not in a multipart form")
        else:
            raise InvalidInput(
                f"unknown form field {key!r}; known: file, {', '.join(PREDICT_FORM_OPTIONS)}"
            )
    try:
        return PredictRequest.model_validate(options), files
    except ValueError as e:
        raise InvalidInput(f"invalid form fields: {e}") from e

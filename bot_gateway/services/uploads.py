"""Images customers and agents send in conversations: checked, stored in the artifact store and
recorded as ``Upload`` rows; read back for the bot's conversations (and one conversation's, for
a widget session)."""

from __future__ import annotations

import mimetypes
import secrets
from typing import Any

from fastapi.concurrency import run_in_threadpool

from bot_gateway.deps import Gateway
from bot_gateway.schemas import UploadPublic
from core.db import session_scope
from core.errors import InvalidInput, NotFound, UnsupportedMediaType
from core.ids import new_id
from core.images import decode_image
from core.tables import Bot, Upload

__all__ = ["media_type_of", "read_public_file", "read_upload_sync", "store_upload", "upload_url"]


async def store_upload(
    gateway: Gateway,
    bot: Bot,
    data: bytes,
    name: str,
    *,
    public: bool = False,
    conversation_id: str | None = None,
) -> UploadPublic:
    """Check that ``data`` is an image and keep it for the bot's conversations (for one of
    them when ``conversation_id`` is given); a ``public`` one (an agent's image) can also be
    fetched without credentials at ``public_url``."""
    try:
        image = await run_in_threadpool(
            decode_image, data, name=name, max_pixels=gateway.settings.limits.max_image_pixels
        )
    except InvalidInput as e:
        if "not an image" in e.message or "cannot identify" in e.message:
            raise UnsupportedMediaType(f"{name}: not an image (send JPEG, PNG, WebP or GIF)") from e
        raise
    upload_id = new_id("upload")
    media_type = media_type_of(image.format)
    ext = mimetypes.guess_extension(media_type) or ".img"
    blob_key = f"uploads/{bot.tenant_id}/{bot.id}/{upload_id}{ext}"

    def save() -> None:
        gateway.store.put_bytes(blob_key, data)
        with session_scope(gateway.engine) as session:
            session.add(
                Upload(
                    id=upload_id,
                    tenant_id=bot.tenant_id,
                    bot_id=bot.id,
                    conversation_id=conversation_id,
                    blob_key=blob_key,
                    media_type=media_type,
                    width=image.width,
                    height=image.height,
                    sha256=image.sha256,
                    public_token=token,
                )
            )

    token = secrets.token_urlsafe(24) if public else None
    await run_in_threadpool(save)
    return UploadPublic(
        upload_id=upload_id,
        url=upload_url(bot.id, upload_id),
        media_type=media_type,
        width=image.width,
        height=image.height,
        public_url=f"/files/{upload_id}/{token}" if token else None,
    )


def media_type_of(fmt: str) -> str:
    """The media type of a decoded image's format (JPEG, PNG, ...)."""
    if fmt in ("JPEG", "MPO"):
        return "image/jpeg"
    return mimetypes.types_map.get(f".{fmt.lower()}", f"image/{fmt.lower()}")


def upload_url(bot_id: str, upload_id: str) -> str:
    return f"/v1/bots/{bot_id}/uploads/{upload_id}"


def read_upload_sync(
    gateway: Gateway,
    tenant_id: str,
    bot_id: str,
    upload_id: str,
    *,
    conversation_id: str | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """An upload of the bot (and of that conversation, when ``conversation_id`` is given)."""
    with session_scope(gateway.engine) as session:
        row = session.get(Upload, upload_id)
        if (
            row is None
            or row.tenant_id != tenant_id
            or row.bot_id != bot_id
            or (conversation_id is not None and row.conversation_id != conversation_id)
        ):
            raise NotFound(f"upload {upload_id} not found; upload the image first")
        key, media_type = row.blob_key, row.media_type
    public = {
        "upload_id": upload_id,
        "url": upload_url(bot_id, upload_id),
        "media_type": media_type,
    }
    return gateway.store.get_bytes(key), public


def read_public_file(gateway: Gateway, upload_id: str, token: str) -> tuple[bytes, str]:
    """A ``public`` upload (an agent's image) and its media type, for whoever holds its token."""
    with session_scope(gateway.engine) as session:
        row = session.get(Upload, upload_id)
        if (
            row is None
            or not row.public_token
            or not secrets.compare_digest(row.public_token, token)
        ):
            raise NotFound("no such file")
        key, media_type = row.blob_key, row.media_type
    return gateway.store.get_bytes(key), media_type

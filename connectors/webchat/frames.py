"""The web chat socket's frames (``protocol.md``): reading and checking what the widget sends,
and the shapes of what the server sends back.

Every frame is a JSON object with a ``type``, at most ``MAX_FRAME_CHARS`` characters of UTF-8
text nested at most ``MAX_FRAME_DEPTH`` levels. A frame the server cannot take raises
``FrameError``, whose ``code`` (``invalid_frame`` or ``frame_too_large``) and message go back to
the widget as an ``error`` frame; the socket stays open.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from connectors.base import InboundMessage
from core.documents import check_json_depth
from core.errors import InvalidInput, LimitExceeded
from core.messages import OutboundMessage

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_FRAME_CHARS",
    "MAX_FRAME_DEPTH",
    "FrameError",
    "error_frame",
    "frame_text",
    "history_item",
    "inbound_of",
    "message_frame",
    "read_frame",
]

MAX_FRAME_CHARS = 16 * 1024
MAX_FRAME_DEPTH = 16  # frames are flat objects; deeper is refused before parsing
MAX_ATTACHMENTS = 4
MAX_CLIENT_ID_CHARS = 64


class FrameError(InvalidInput):
    """A frame the server does not take; answered with an ``error`` frame of this ``code``."""

    code = "invalid_frame"

    def __init__(self, message: str, *, code: str = "invalid_frame") -> None:
        super().__init__(message)
        self.code = code


def frame_text(message: Mapping[str, Any]) -> str:
    """The text of a websocket message (ASGI ``websocket.receive``); a binary frame must hold
    UTF-8 JSON."""
    if message.get("text") is not None:
        return str(message["text"])
    try:
        return bytes(message.get("bytes") or b"").decode("utf-8")
    except UnicodeDecodeError as e:
        raise FrameError("frames are JSON text in UTF-8") from e


def read_frame(text: str) -> dict[str, Any]:
    """The frame in ``text``: a JSON object with a string ``type``, within the size and depth
    limits (checked before the JSON parser sees it)."""
    if len(text) > MAX_FRAME_CHARS:
        raise FrameError(f"frames are at most {MAX_FRAME_CHARS} characters", code="frame_too_large")
    try:
        check_json_depth(text, MAX_FRAME_DEPTH, what="the frame")
        frame = json.loads(text)
    except LimitExceeded as e:  # before json.loads recurses into it
        message = f"frames are JSON objects nested at most {MAX_FRAME_DEPTH} levels deep"
        raise FrameError(message) from e
    except json.JSONDecodeError as e:
        raise FrameError(f"frames are JSON objects: {e.msg}") from e
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise FrameError('a frame is a JSON object with a "type"')
    return frame


def inbound_of(frame: dict[str, Any], sender_id: str) -> InboundMessage:
    """The customer message of a ``message`` frame: ``text``, a button's ``payload``, up to
    ``MAX_ATTACHMENTS`` images uploaded before (``{"upload_id"}``), and the widget's
    ``client_id`` (a resend of the same id is answered once)."""
    text = frame.get("text") or ""
    payload = frame.get("payload")
    attachments = frame.get("attachments") or []
    if not isinstance(text, str) or (payload is not None and not isinstance(payload, str)):
        raise FrameError('"text" and "payload" are strings')
    if not isinstance(attachments, list) or len(attachments) > MAX_ATTACHMENTS:
        raise FrameError(f'"attachments" is a list of at most {MAX_ATTACHMENTS} {{"upload_id"}}')
    uploads = []
    for item in attachments:
        if not isinstance(item, dict) or not isinstance(item.get("upload_id"), str):
            raise FrameError('each attachment is {"upload_id": "up_..."}')
        uploads.append(item["upload_id"])
    client_id = frame.get("client_id")
    return InboundMessage(
        sender_id=sender_id,
        text=text,
        payload=payload,
        uploads=tuple(uploads),
        message_id=str(client_id)[:MAX_CLIENT_ID_CHARS] if client_id is not None else None,
    )


def message_frame(message: OutboundMessage, *, by: str = "bot") -> dict[str, Any]:
    """A message as web chat (and the agents' console) sockets carry it."""
    wire = message.to_wire()
    return {"type": "message", "from": by, "message": wire}


def error_frame(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The ``error`` frame the widget shows (``extra``: the ``client_id`` it answers)."""
    return {"type": "error", "error": code, "message": message, **extra}


def history_item(event: dict[str, Any]) -> dict[str, Any]:
    """A stored ``user``/``bot``/``agent`` event as the ``welcome`` frame's history shows it."""
    kind = event.get("event")
    if kind == "user":
        message: dict[str, Any] = {}
        if event.get("text"):
            message["text"] = event["text"]
        if event.get("attachments"):
            message["attachments"] = [
                {"upload_id": a.get("upload_id"), "url": a.get("url")} for a in event["attachments"]
            ]
        return {"from": "user", "message": message, "timestamp": event.get("timestamp")}
    message = {
        k: v for k, v in {"text": event.get("text"), **(event.get("data") or {})}.items() if v
    }
    return {"from": kind, "message": message, "timestamp": event.get("timestamp")}

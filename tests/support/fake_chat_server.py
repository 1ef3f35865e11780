"""A small server that speaks the web chat protocol (connectors/webchat/protocol.md), for the
widget's fast browser test. It is a test double of the gateway's web chat endpoints, not the
gateway: a scripted "Parcelly" bot, in-memory sessions and uploads. As the gateway, a new
session gets a session token in its welcome frame; resuming it, uploading and reading its
uploads with the widget key need that token.

It listens on two loopback ports that share one app, so a test can load the shop page from one
origin (``page_url``) and the widget, websocket and uploads from another (``widget_url``) — the
way a tenant embeds the widget. Only ``page_url``'s origin is allowed to chat.
"""

from __future__ import annotations

import asyncio
import io
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

STATIC = Path(__file__).resolve().parents[2] / "connectors" / "webchat" / "static"
SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
ORDER_RE = re.compile(r"\bPX-\d{6}\b", re.IGNORECASE)
MAX_UPLOAD = 10 * 1024 * 1024
ORDER = "PX-100234"
ORDER_STATUS = f"Order {ORDER} is in transit and should arrive on Thursday."
HELP_URL = "https://example.com/help?topic=orders"
Json = dict[str, Any]


def _choice(title: str, payload: str) -> Json:
    return {"title": title, "payload": payload}


@dataclass
class Conversation:
    conversation_id: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    status: str = "bot"
    history: list[Json] = field(default_factory=list)


@dataclass(frozen=True)
class StoredUpload:
    data: bytes
    media_type: str
    width: int
    height: int
    session_token: str


class FakeChatServer:
    """Start with :meth:`start`, stop with :meth:`stop`; read what clients sent in ``frames``
    (every client frame, in order) and ``uploads``."""

    def __init__(
        self, *, bot_id: str = "bot_parcelly", widget_key: str = "wk_test", typing_s: float = 0.3
    ) -> None:
        self.bot_id = bot_id
        self.widget_key = widget_key
        self.typing_s = typing_s
        self.frames: list[Json] = []
        self.uploads: dict[str, StoredUpload] = {}
        self.conversations: dict[str, Conversation] = {}
        self.accepting = True
        self._sockets = [_bind_loopback(), _bind_loopback()]
        self.page_url, self.widget_url = (
            f"http://127.0.0.1:{s.getsockname()[1]}" for s in self._sockets
        )
        self.allowed_origins = {self.page_url}
        self._connections: set[WebSocket] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/widget.js", self._widget_js),
                Route("/demo", self._demo),
                Route("/v1/bots/{bot_id}/uploads", self._upload, methods=["POST", "OPTIONS"]),
                Route("/v1/bots/{bot_id}/uploads/{upload_id}", self._get_upload),
                WebSocketRoute("/v1/bots/{bot_id}/ws", self._chat),
            ]
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="fake-chat-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake chat server did not start")
            time.sleep(0.02)

    def _run(self) -> None:
        assert self._server is not None
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._server.serve(sockets=self._sockets))
        self._loop.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        for s in self._sockets:
            s.close()

    def drop_connections(self, *, refuse_new: bool) -> None:
        """Close every open chat socket with 1012 (service restart), as a deploy would; with
        ``refuse_new`` later connections are closed with 1013 until :meth:`resume`."""
        self.accepting = not refuse_new

        async def close_all() -> None:
            for ws in list(self._connections):
                await ws.close(1012)

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(10)

    def resume(self) -> None:
        self.accepting = True

    def texts_received(self) -> list[str]:
        return [f.get("text", "") for f in self.frames if f.get("type") == "message"]

    # -- HTTP -----------------------------------------------------------------------------

    async def _widget_js(self, request: Request) -> Response:
        return FileResponse(STATIC / "widget.js", media_type="text/javascript")

    async def _demo(self, request: Request) -> Response:
        html = (STATIC / "demo.html").read_text(encoding="utf-8")
        for name, value in {
            "bot_id": self.bot_id,
            "widget_key": self.widget_key,
            "base_url": self.widget_url,
        }.items():
            html = html.replace("{{" + name + "}}", value)
        return HTMLResponse(html)

    def _cors(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if origin in self.allowed_origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {"Vary": "Origin"}

    def _problem(self, request: Request, status: int, error: str, message: str) -> Response:
        body = {"error": error, "message": message}
        return JSONResponse(body, status_code=status, headers=self._cors(request))

    async def _upload(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            headers = {**self._cors(request), "Access-Control-Allow-Methods": "POST"}
            return Response(status_code=204, headers=headers)
        if request.path_params["bot_id"] != self.bot_id:
            return self._problem(request, 404, "not_found", "No such bot.")
        if request.query_params.get("key") != self.widget_key:
            return self._problem(request, 401, "bad_widget_key", "The widget key was refused.")
        token = request.query_params.get("session_token", "")
        if not any(c.token == token for c in self.conversations.values()):
            return self._problem(request, 403, "forbidden", "Open a chat session first.")
        origin = request.headers.get("origin")
        if origin is not None and origin not in self.allowed_origins:
            return self._problem(request, 403, "origin_not_allowed", "Origin not allowed.")
        form = await request.form()
        file = form.get("file")
        if not isinstance(file, UploadFile):
            return self._problem(
                request, 422, "missing_file", "Send the image as the multipart field 'file'."
            )
        data = await file.read()
        if len(data) > MAX_UPLOAD:
            return self._problem(request, 413, "too_large", "Images can be 10 MB at most.")
        if not (file.content_type or "").startswith("image/"):
            return self._problem(request, 415, "not_an_image", "Only images can be sent.")
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
        except UnidentifiedImageError:
            return self._problem(request, 422, "bad_image", "That file is not a readable image.")
        upload_id = f"up_{secrets.token_hex(8)}"
        media_type = file.content_type or "image/png"
        self.uploads[upload_id] = StoredUpload(data, media_type, width, height, token)
        body = {
            "upload_id": upload_id,
            "url": f"/v1/bots/{self.bot_id}/uploads/{upload_id}",  # relative on purpose
            "media_type": media_type,
            "width": width,
            "height": height,
        }
        return JSONResponse(body, status_code=201, headers=self._cors(request))

    async def _get_upload(self, request: Request) -> Response:
        if request.query_params.get("key") != self.widget_key:  # as the gateway: key or token
            return self._problem(request, 401, "bad_widget_key", "The widget key was refused.")
        upload = self.uploads.get(request.path_params["upload_id"])
        if upload is None or upload.session_token != request.query_params.get("session_token"):
            return self._problem(request, 404, "not_found", "No such upload.")
        return Response(upload.data, media_type=upload.media_type)

    # -- websocket ------------------------------------------------------------------------

    async def _chat(self, ws: WebSocket) -> None:
        await ws.accept()  # accept first: a close code only reaches the browser after accepting
        if ws.path_params["bot_id"] != self.bot_id:
            await ws.close(4404)
            return
        if ws.query_params.get("key") != self.widget_key:
            await ws.close(4401)
            return
        if ws.headers.get("origin") not in self.allowed_origins:
            # as the gateway: an error frame for the developer, then the close code
            message = "origin may not use this bot's widget; add it to allowed_origins"
            await ws.send_json({"type": "error", "error": "forbidden", "message": message})
            await ws.close(4403)
            return
        if not self.accepting:
            await ws.close(1013)
            return
        session = ws.query_params.get("session", "")
        if not SESSION_RE.match(session):
            session = secrets.token_urlsafe(16)
        convo = self.conversations.get(session)
        welcome: Json = {"type": "welcome"}
        if convo is None or convo.token != ws.query_params.get("session_token"):
            if convo is not None:  # not this visitor's session: a new one of its own
                session = secrets.token_urlsafe(16)
            convo = Conversation(conversation_id=f"cv_{secrets.token_hex(6)}")
            self.conversations[session] = convo
            welcome["session_token"] = convo.token
        welcome.update(
            conversation_id=convo.conversation_id,
            session_id=session,
            status=convo.status,
            history=convo.history,
        )
        await ws.send_json(welcome)
        self._connections.add(ws)
        try:
            while True:
                frame = await ws.receive_json()
                self.frames.append(frame)
                if frame.get("type") == "ping":
                    await ws.send_json({"type": "pong"})
                elif frame.get("type") == "message":
                    await self._on_message(ws, convo, frame)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the browser left, or drop_connections closed it
        finally:
            self._connections.discard(ws)

    async def _on_message(self, ws: WebSocket, convo: Conversation, frame: Json) -> None:
        text = frame.get("text") if isinstance(frame.get("text"), str) else None
        uploads = [
            a.get("upload_id") for a in frame.get("attachments") or [] if isinstance(a, dict)
        ]
        if any(u not in self.uploads for u in uploads):
            await ws.send_json(
                {"type": "error", "error": "unknown_upload", "message": "Upload first."}
            )
            return
        await ws.send_json({"type": "ack", "client_id": frame.get("client_id")})
        user: Json = {}
        if text:
            user["text"] = text
        if uploads:
            user["attachments"] = [
                {"upload_id": u, "url": f"/v1/bots/{self.bot_id}/uploads/{u}"} for u in uploads
            ]
        convo.history.append({"from": "user", "message": user, "timestamp": int(time.time())})
        if text == "/error":
            await ws.send_json(
                {"type": "error", "error": "bot_failed", "message": "The bot tripped over."}
            )
            return
        await ws.send_json({"type": "typing", "on": True})
        await asyncio.sleep(self.typing_s)
        for step in self._script(text or "", frame.get("payload"), uploads):
            if "status" in step:
                convo.status = step["status"]
                await ws.send_json({"type": "status", "status": step["status"]})
                continue
            convo.history.append({**step, "timestamp": int(time.time())})
            await ws.send_json({"type": "message", **step})
        await ws.send_json({"type": "typing", "on": False})

    def _script(self, text: str, payload: object, uploads: list[str]) -> list[Json]:
        """The Parcelly demo bot in miniature: each step is a message or a status change."""
        lowered = text.lower()
        if uploads:
            url = f"/v1/bots/{self.bot_id}/uploads/{uploads[0]}"
            card = {
                "title": f"Order {ORDER}",
                "subtitle": "In transit\nExpected Thursday",
                "image": url,
                "buttons": [_choice("Change delivery address", "/change_address")],
            }
            return [
                {
                    "from": "bot",
                    "message": {"text": "Thanks, I can read your label.", "image": url},
                },
                {"from": "bot", "message": {"text": ORDER_STATUS, "cards": [card]}},
            ]
        if payload == "/handoff" or "human" in lowered:
            return [
                {"status": "waiting_for_agent"},
                {
                    "from": "agent",
                    "message": {"text": "Hi, I'm Sam from Parcelly. Reading up now."},
                },
            ]
        if payload == "/label_photo":
            return [{"from": "bot", "message": {"text": "Please send a photo of the label."}}]
        if payload == "/hours":
            return [{"from": "bot", "message": {"text": "We answer every day, 8:00 to 20:00."}}]
        if ORDER_RE.search(text):
            return [{"from": "bot", "message": {"text": ORDER_STATUS}}]
        if payload == "/track_order" or "order" in lowered:
            ask = (
                "Sure! What is your order number? It looks like PX-100234.\n"
                "You can also send a photo of your shipping label."
            )
            replies = [
                _choice("Send a photo of my label", "/label_photo"),
                _choice("Talk to a human", "/handoff"),
            ]
            return [{"from": "bot", "message": {"text": ask, "quick_replies": replies}}]
        answer = f"You said: {text}\nI can help with orders. Details: {HELP_URL}."
        return [
            {
                "from": "bot",
                "message": {
                    "text": answer,
                    "buttons": [_choice("Opening hours", "/hours")],
                    "quick_replies": [
                        _choice("Where is my order?", "/track_order"),
                        _choice("Talk to a human", "/handoff"),
                    ],
                },
            }
        ]


def _bind_loopback() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock

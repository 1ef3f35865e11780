"""Requests whose path or query string holds a NUL character, refused before any route runs.

PostgreSQL can neither store nor compare text holding NUL (``\\x00``): an id or a query value
with one (``/v1/datasets/%00``, ``GET .../examples?q=%00``, ``/v1/analytics?bot_id=%00``)
reached SQL and was a 500 there, while SQLite answered as if it were another string. No name,
id or text in Parley may hold one (JSON bodies holding one are refused too:
``bot_gateway.json_depth``), so ``NulRefusal``, a pure ASGI middleware, answers such a path
``404 not_found`` (nothing is there, as for a static file of that name) and such a query
string ``422 invalid_input``.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from bot_gateway.errors import problem

__all__ = ["NulRefusal"]


class NulRefusal:
    """Refuse HTTP requests with a NUL character in their path (404) or query string (422)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if "\x00" in scope.get("path", ""):
                answer = problem(404, "not_found", "nothing is here: the path has a NUL (%00)")
                await answer(scope, receive, send)
                return
            if b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
                message = (
                    "the query string has a NUL character (%00); no id, name or text in Parley "
                    "may hold one"
                )
                await problem(422, "invalid_input", message)(scope, receive, send)
                return
        await self.app(scope, receive, send)

"""Parley Studio's pages: ``/`` leads to ``/studio``; every ``/studio/...`` URL is the same
single page (``console/studio/index.html``, History-API routing in ``studio.js``), so each page
of the Studio has its own shareable URL; ``/studio/static/...`` are its scripts and styles.
Served with the agents' console's strict Content-Security-Policy (``bot_gateway.pages``).
The Studio itself only calls the public ``/v1`` API with the session cookie."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from bot_gateway.pages import page, static_file

pages = APIRouter(include_in_schema=False)

STUDIO = Path(__file__).resolve().parents[2] / "console" / "studio"


@pages.get("/", response_class=RedirectResponse)
def root() -> RedirectResponse:
    return RedirectResponse("/studio", status_code=307)


@pages.get("/studio/static/{name:path}", response_class=FileResponse)
def studio_static(name: str) -> Response:
    return static_file(STUDIO / "static", name)


@pages.get("/studio", response_class=HTMLResponse)
@pages.get("/studio/{path:path}", response_class=HTMLResponse)
def studio_page(path: str = "") -> Response:
    return page(STUDIO / "index.html", "Parley Studio")

"""How the gateway serves its web pages (the Studio, the agents' console): one strict
Content-Security-Policy and security headers for every page and static file, and static files
looked up only inside their own folder."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse

from core.errors import NotFound

__all__ = ["CSP", "SECURITY_HEADERS", "page", "static_file"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def page(index: Path, what: str) -> FileResponse:
    """An HTML page with the security headers; ``NotFound`` naming ``what`` when it is not
    installed."""
    if not index.is_file():
        raise NotFound(f"{what} is not installed")
    return FileResponse(
        index, media_type="text/html", headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    )


def static_file(folder: Path, name: str) -> FileResponse:
    """``folder/name`` (``name`` may hold sub-folders) with the security headers; a name that
    leads outside ``folder`` or to no file is ``NotFound``."""
    root = folder.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"no file {name}")
    return FileResponse(path, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

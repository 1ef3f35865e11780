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
    try:
        path = (root / name).resolve()
        found = path.is_relative_to(root) and path.is_file()
    except (OSError, ValueError):  # a NUL byte, or a name too long for the file system
        found = False
    if not found:
        raise NotFound(f"no file {name[:200]}")
    return FileResponse(path, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

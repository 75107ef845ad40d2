"""The web page at `GET /`: three static files in service/static/, served by the app (no CDN, no build).

Only these files are served (an allow-list, so no directory listing and no path tricks). They hold
no secrets and stay reachable without an API key; the page itself asks for a key when the API
needs one, and then uses only the public API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent / "static"
FILES = {"/": ("index.html", "text/html"), "/static/app.js": ("app.js", "text/javascript"),
         "/static/app.css": ("app.css", "text/css")}  # fmt: skip
PAGE_PATHS = frozenset(FILES)
# The page holds the API key: only its own scripts and styles run (no inline code, no other origin),
# images may be data: and blob: URLs (the replies' PNGs and GIFs), no site may frame it.
SECURITY_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",  # (X-Content-Type-Options: nosniff is on every reply: service.app)
    "Referrer-Policy": "no-referrer",
}


def _endpoint(name: str, media_type: str):
    async def serve() -> FileResponse:  # no parameters: nothing from the request picks the file
        return FileResponse(STATIC / name, media_type=media_type, headers=SECURITY_HEADERS)

    return serve


def install_page(app: FastAPI) -> None:
    for path, (name, media_type) in FILES.items():
        app.add_api_route(path, _endpoint(name, media_type), methods=["GET"], include_in_schema=False)

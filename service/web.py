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


def _endpoint(name: str, media_type: str):
    async def serve() -> FileResponse:  # no parameters: nothing from the request picks the file
        return FileResponse(STATIC / name, media_type=media_type, headers={"Cache-Control": "no-cache"})

    return serve


def install_page(app: FastAPI) -> None:
    for path, (name, media_type) in FILES.items():
        app.add_api_route(path, _endpoint(name, media_type), methods=["GET"], include_in_schema=False)

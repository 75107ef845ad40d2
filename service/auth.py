"""Optional API-key authentication and request IDs, as pure ASGI middleware.

Why middleware (not a FastAPI dependency): it covers every route, including /docs, /openapi.json
and routes other modules add later, and answers before any body is read.

- Auth is off unless `GANSERVE_API_KEYS` is set. A request carries its key as
  `Authorization: Bearer <key>` or `X-API-Key: <key>`; keys are compared with
  `hmac.compare_digest` against every configured key (no early exit, constant time per key).
  Paths in `GANSERVE_OPEN_PATHS` (default /healthz, /readyz, /metrics) and CORS preflights are
  served without a key. Anything else gets 401 with `WWW-Authenticate: Bearer`.
- Request IDs: `request_id(scope)` returns the client's `X-Request-ID` when it is sane (1-128
  characters of [A-Za-z0-9._:-]), else a fresh one (`new_request_id`), stored in the scope; `service.app`
  sends it back as a header and `service.plumbing.error_body` writes it into every error body.
"""

from __future__ import annotations

import hmac
import itertools
import os
import re

REQUEST_ID_HEADER = b"x-request-id"
SCOPE_KEY = "ganserve.request_id"
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def header(scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v
    return None


_ID_PREFIX = os.urandom(8).hex()  # per process: IDs stay unique across workers and restarts
_ID_COUNTER = itertools.count(1)


def _new_prefix() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_new_prefix)  # a forked worker must not repeat its parent's IDs


def new_request_id() -> str:
    """A unique 32-hex-digit ID as cheap as a counter: 16 random hex digits per process, then
    the count (a uuid4 per request costs a system call for randomness an ID does not need)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def request_id(scope) -> str:
    """The scope's request ID: set once, echoed from a sane client header or generated."""
    rid = scope.get(SCOPE_KEY)
    if rid is None:
        given = header(scope, REQUEST_ID_HEADER)
        rid = given.decode("ascii") if given is not None and _SANE_ID.match(given) else new_request_id()
        scope[SCOPE_KEY] = rid
    return rid


def presented_key(scope) -> bytes | None:
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
    key = header(scope, b"x-api-key")
    return key.strip() if key else None


def key_ok(presented: bytes | None, keys: list[bytes]) -> bool:
    """Constant-time check of `presented` against every key (all are compared, no early exit)."""
    ok = False
    candidate = presented or b""
    for k in keys:
        ok |= hmac.compare_digest(candidate, k)
    return ok and presented is not None


class ApiKeyMiddleware:
    """401 for requests without a valid key, outside the open paths (a no-op without keys)."""

    def __init__(self, app, keys: list[str], open_paths: frozenset[str]):
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.open_paths = open_paths

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or not self.keys
            or scope["path"] in self.open_paths
            or (scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method"))
        ):
            return await self.app(scope, receive, send)
        presented = presented_key(scope)
        if key_ok(presented, self.keys):
            return await self.app(scope, receive, send)
        detail = (
            "invalid API key" if presented else "an API key is required (Authorization: Bearer or X-API-Key)"
        )
        from .plumbing import error_body  # imported here: plumbing imports `request_id` from this module

        body = error_body("unauthorized", detail, request_id(scope))
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="ganserve"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

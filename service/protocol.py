"""How uvicorn is started: header size and header time limits, which uvicorn's own parsers lack.

Why: uvicorn's httptools parser has no limit on a request's head (a 16 MB header is answered, and
hundreds of MB cost tens of seconds of CPU, the cost growing faster than linearly) and no time limit
on it (a client may send one header byte a minute for ever). `HeadLimitedProtocol` counts the bytes
of each request's head as they arrive, before httptools buffers them, and answers 431 and closes
at `max_header_bytes`; a head that has not arrived whole within `header_timeout_s` gets 408 and the
connection closes. Without httptools, h11's own limit (`h11_max_incomplete_event_size`) applies.
`server_options(settings)` is the one place that says how the server runs (`python -m service`,
and the tests that start a real uvicorn).
"""

from __future__ import annotations

import logging
from typing import Any

from .auth import new_request_id
from .settings import Settings

log = logging.getLogger("service")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed: h11 with its own limit
    HttpToolsProtocol = None


def _reply(status: bytes, code: str, detail: str, field: str, limit: float) -> bytes:
    from .plumbing import error_body  # imported late: plumbing imports FastAPI and the registry

    body = error_body(code, detail, new_request_id(), field=field, limit=limit)
    head = (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"x-content-type-options: nosniff\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


if HttpToolsProtocol is not None:

    class HeadLimitedProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a byte and a time limit on each request's head."""

        header_timeout_s: float | None = None  # set by server_options; else from GANSERVE_* (workers)

        def __init__(self, config, *args, **kwargs):
            super().__init__(config, *args, **kwargs)
            if HeadLimitedProtocol.header_timeout_s is None:
                HeadLimitedProtocol.header_timeout_s = Settings().header_timeout_s
            self.max_head = config.h11_max_incomplete_event_size
            self.head_bytes = 0
            self.in_head = True  # between two requests, or inside a head
            self.head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._start_head_timer()

        def connection_lost(self, exc) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def _start_head_timer(self) -> None:
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

        def _stop_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_timed_out(self) -> None:
            self.head_timer = None
            if not self.in_head or self.transport.is_closing():
                return
            if self.head_bytes:
                t = self.header_timeout_s
                detail = f"headers: not received whole within {t:g} s"
                self.transport.write(_reply(b"408 Request Timeout", "request_timeout", detail, "headers", t))
            self.transport.close()

        def _refuse_head(self) -> None:
            log.info("request head over %d bytes: 431, connection closed", self.max_head)
            detail = f"headers: request line and headers exceed the limit of {self.max_head} bytes"
            self.transport.write(
                _reply(
                    b"431 Request Header Fields Too Large",
                    "headers_too_large",
                    detail,
                    "headers",
                    self.max_head,
                )
            )
            self.transport.close()
            self._stop_head_timer()
            self.in_head = False

        def data_received(self, data: bytes) -> None:
            if self.in_head and not self.transport.is_closing():
                room = self.max_head - self.head_bytes
                if len(data) > room:  # feed up to the limit: the head may end inside it
                    super().data_received(data[:room])
                    if self.in_head:
                        return self._refuse_head()
                    data = data[room:]
                else:
                    self.head_bytes += len(data)
            elif self.transport.is_closing():
                return
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._start_head_timer()

        def on_headers_complete(self) -> None:
            self.in_head = False
            self._stop_head_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self.in_head, self.head_bytes = True, 0  # the next request's head (keep-alive)

else:  # pragma: no cover
    HeadLimitedProtocol = None


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn keyword arguments for the limits in `settings` (uvicorn.run or uvicorn.Config)."""
    if HeadLimitedProtocol is not None:
        HeadLimitedProtocol.header_timeout_s = settings.header_timeout_s
    return {
        "http": HeadLimitedProtocol or "h11",
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }

"""uvicorn's httptools protocol with the bounds it lacks: `fitserve api` and `fitserve up` run it
(`uvicorn.run(http=HTTP_PROTOCOL)`), one instance per connection.

Headers in time: uvicorn times nothing before a request's headers are complete (its keep-alive
timer runs only between requests, and any byte cancels it), so a connection that sends nothing, or
half a request line, was held for good. A timer of `header_timeout_seconds` starts when the
connection is made and when a request's first byte comes; the headers complete, it stops. Past it
the connection is closed, with a 408 if a request had begun. The quiet between keep-alive requests
stays uvicorn's (5 s), and a long response (an event stream) starts after its headers: neither is
timed here. A response sent before its request's body was read leaves the rest of that body to
come: it and the next headers get the same timer, so a body is never trickled on for good.

Connections: a process serves at most `max_connections` open at once (HTTP/1.1 has one request
at a time on a connection, so requests in flight are bounded too). A connection made past it is
answered 503 (`connection: close`) once its headers come, so a client reads an answer, not a
reset; past twice it, a new connection is closed at once without a word, so open sockets stay
bounded whatever the clients do. uvicorn's own `limit_concurrency` is not used: it 503s a request
on any connection, old ones too, while that many are open.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.settings import get_settings

HTTP_PROTOCOL = (
    "api.protocol:BoundedHttpProtocol"  # uvicorn.run(http=...) imports it in each process
)
_DETAIL = b"the request's headers did not arrive in time"
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_DETAIL), _DETAIL)
)
FILES_BESIDE_CONNECTIONS = 1024  # the process's own: database, uploads, parse processes' pipes

log = logging.getLogger("fitserve.api")


class BoundedHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout = settings.header_timeout_seconds
        self.max_connections = settings.max_connections
        self._timer: asyncio.TimerHandle | None = None
        self._in_headers = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        open_before = len(self.connections)
        super().connection_made(transport)
        if open_before >= 2 * self.max_connections:
            transport.close()
            return
        if open_before >= self.max_connections:
            # uvicorn answers every request on this connection 503 (and closes it) below a limit of 0.
            self.limit_concurrency = 0
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._arm()  # a no-op where the timer runs already: from the connection, or a response's unread body

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.response_complete
            and cycle.more_body
            and not self.transport.is_closing()
        ):
            self._arm()  # answered before its body was read: the rest, and the next headers, in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._in_headers and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def make_room_for_connections(max_connections: int) -> int:
    """Raise the soft limit on open files to fit twice `max_connections` and the process's own
    files, as far as the hard limit allows (inherited by `--workers` processes); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * max_connections + FILES_BESIDE_CONNECTIONS
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft < wanted:
        log.warning(
            "open files are limited to %d: FITSERVE_MAX_CONNECTIONS=%d needs about %d",
            soft,
            max_connections,
            wanted,
        )
    return soft

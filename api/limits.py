"""A request body over the limit is refused with 413 from its Content-Length, before it is
read, or as soon as a chunked body passes the limit: the 413 goes out at once and the rest of
the body is never read (the connection is closed). Dataset uploads have their own, larger
limit (`upload_max_bytes` plus room for the multipart envelope), predict and /v2 infer one sized
for `predict_max_instances`; every other body is JSON, held to `json_max_bytes` (1 MiB).

A body is also bounded in time: 1000 connections that stalled under their Content-Length stayed
open for good. While the app waits for a chunk, it waits at most `body_idle_timeout_seconds`,
and the whole body must have come in `body_read_timeout_seconds`; past either, a 408 and the
connection closes. Only the wait for the body is timed: a slow app is not the client's fault,
and once the body is complete, `receive` waits for the disconnect (an event stream) unbounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from core.settings import Settings

Scope = dict[str, Any]


class BodyRefused(Exception):
    """Raised from `receive` once the body is refused (its answer already sent): the app stops."""


class BodyTooLarge(BodyRefused):
    """A body without Content-Length passed the limit."""


class BodyTimedOut(BodyRefused):
    """A body stalled past the idle timeout, or took longer than the read timeout."""


def body_limits(settings: Settings) -> Callable[[str], int]:
    """The body limit of a request path."""

    def limit_for(path: str) -> int:
        if path == "/v1/datasets":
            return settings.upload_max_bytes + 2**20
        if path.startswith("/v1/models/") and path.endswith("/predict"):
            return settings.predict_max_bytes
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            return settings.predict_max_bytes  # /v2 infer: JSON or binary tensors, as predict
        return settings.json_max_bytes

    return limit_for


class _Exchange:
    """One request's body and answer: the body counted against its limit and its waits timed; the
    first refusal is the answer, and whatever the app sends after it is dropped."""

    def __init__(self, receive: Any, send: Any, limit: int, idle: float, total: float) -> None:
        self._receive, self._send = receive, send
        self.limit, self.idle, self.total = limit, idle, total
        self.seen = 0
        self.started = self.refused = self.ended = False
        self.deadline: float | None = None

    async def refuse(self, status: int, detail: str) -> None:
        if self.started or self.refused:
            return  # a response is under way: the exception ends it, and uvicorn closes the connection
        self.refused = True
        body = json.dumps({"detail": detail}).encode()
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                    (b"connection", b"close"),
                ],
            }
        )
        await self._send({"type": "http.response.body", "body": body})

    async def receive(self) -> Any:
        if self.ended:
            return await self._receive()  # after the body: the disconnect, however long it takes
        if self.refused:
            raise BodyRefused
        message = await self._timed_receive()
        if message["type"] != "http.request":
            self.ended = True
            return message
        self.seen += len(message.get("body", b""))
        if self.seen > self.limit:
            # Answer now: a body parser may turn the exception into its own 400.
            await self.refuse(413, f"the request body is larger than {self.limit} bytes")
            raise BodyTooLarge
        self.ended = not message.get("more_body", False)
        return message

    async def _timed_receive(self) -> Any:
        # asyncio.timeout arms one timer handle on this task (no task per wait).
        now = asyncio.get_running_loop().time()
        if self.deadline is None:
            self.deadline = now + self.total
        idle = self.deadline - now > self.idle
        try:
            async with asyncio.timeout(min(self.idle, self.deadline - now)):
                return await self._receive()
        except TimeoutError:
            detail = (
                f"no data of the request body came in {self.idle:g} s"
                if idle
                else f"the request body took longer than {self.total:g} s to arrive"
            )
            await self.refuse(408, detail)
            raise BodyTimedOut from None

    async def send(self, message: Any) -> None:
        if self.refused:
            return  # the refusal is the answer; whatever the app makes of the cut body is dropped
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


class BodyLimit:
    def __init__(
        self,
        app: Any,
        limit_for: Callable[[str], int],
        idle_seconds: float = 30.0,
        total_seconds: float = 300.0,
    ) -> None:
        self.app, self._limit_for = app, limit_for
        self.idle_seconds, self.total_seconds = idle_seconds, total_seconds

    def limit_for(self, scope: Scope) -> int:
        return self._limit_for(scope.get("path", ""))

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length in (None, b"0") and b"transfer-encoding" not in headers:
            await self.app(
                scope, receive, send
            )  # no body (a GET, an event stream): nothing to bound
            return
        exchange = _Exchange(
            receive, send, self.limit_for(scope), self.idle_seconds, self.total_seconds
        )
        if length is not None and length.isdigit() and int(length) > exchange.limit:
            await exchange.refuse(413, f"the request body is larger than {exchange.limit} bytes")
            return
        # Answered in `receive` already (or a response had begun: uvicorn closes the connection).
        with contextlib.suppress(BodyRefused):
            await self.app(scope, exchange.receive, exchange.send)

"""A request body over the limit is refused with 413 from its Content-Length, before it is
read, or as soon as a chunked body passes the limit: the 413 goes out at once and the rest of
the body is never read (the connection is closed). Dataset uploads have their own, larger
limit (`upload_max_bytes` plus room for the multipart envelope), predict one sized for
`predict_max_instances`; every other body is JSON, held to `json_max_bytes` (1 MiB)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from core.settings import Settings

Scope = dict[str, Any]


class BodyTooLarge(Exception):
    """Raised from `receive` once a body without Content-Length passes the limit."""


def body_limits(settings: Settings) -> Callable[[str], int]:
    """The body limit of a request path."""

    def limit_for(path: str) -> int:
        if path == "/v1/datasets":
            return settings.upload_max_bytes + 2**20
        if path.startswith("/v1/models/") and path.endswith("/predict"):
            return settings.predict_max_bytes
        return settings.json_max_bytes

    return limit_for


class BodyLimit:
    def __init__(self, app: Any, limit_for: Callable[[str], int]) -> None:
        self.app, self._limit_for = app, limit_for

    def limit_for(self, scope: Scope) -> int:
        return self._limit_for(scope.get("path", ""))

    async def _refuse(self, send: Any, limit: int) -> None:
        body = json.dumps({"detail": f"the request body is larger than {limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._refuse(send, limit)
            return
        seen = 0
        started = refused = False

        async def counted_receive() -> Any:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answer now: a body parser may turn the exception into its own 400.
                    if not started and not refused:
                        refused = True
                        await self._refuse(send, limit)
                    raise BodyTooLarge
            return message

        async def tracked_send(message: Any) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; whatever the app makes of the cut body is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started and not refused:
                await self._refuse(send, limit)

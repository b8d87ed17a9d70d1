"""The key is checked before a body is read: an 86 MiB JSON body without a key was parsed (+354 MB,
3.6 s) before its 401, and predict answered its 422, echoing the input, to a caller with no key.

Every /v1/ and /v2/models request passes here first. A key seen valid is remembered until a revocation moves the
watermark (re-read by a background task every `REVOCATION_CHECK_SECONDS`, never on the event
loop); an unknown key costs one indexed read in a thread. Routes still check the key themselves,
so a revocation is refused by them at once. Refusals (no key, a bad key) are counted per client
address: past `AUTH_FAILURE_BURST` (then `AUTH_FAILURES_PER_SECOND`) they are 429s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import DBAPIError

from api.deps import UNAUTHORIZED, bearer_key
from api.errors import DATABASE_DOWN, DATABASE_RETRY_AFTER
from api.rate_limit import TokenBuckets, retry_after
from core.db import hot_read, unreachable
from core.repository import tenants as tenants_repo
from core.repository.tenants import hash_key

Scope = dict[str, Any]
PROTECTED = ("/v1/", "/v2/models")  # /v2 health and server metadata stay public, as /healthz
RETRY_AFTER = str(DATABASE_RETRY_AFTER).encode()


class KeyCheck:
    def __init__(
        self,
        app: Any,
        check_seconds: float,
        failures_per_second: float,
        failure_burst: int,
        mark: Callable[[], Any] | None = None,
        lookup: Callable[[str], bool] | None = None,
    ) -> None:
        self.app, self.check_seconds = app, max(check_seconds, 0.05)
        self.failures = (
            TokenBuckets(failures_per_second, failure_burst) if failures_per_second > 0 else None
        )
        self._mark_reader = mark or (
            lambda: hot_read(lambda c: tenants_repo.revocation_mark(connection=c))
        )
        self._lookup = lookup or (
            lambda h: hot_read(lambda c: tenants_repo.key_hash_is_valid(connection=c, key_hash=h))
        )
        self._known: set[str] = set()
        self._mark: Any = None
        self._watcher: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED):
            await self.app(scope, receive, send)
            return
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        key = bearer_key(authorization.decode("latin-1")) if authorization is not None else None
        try:
            valid = key is not None and await self._valid(hash_key(key))
        except DBAPIError as exc:
            if not unreachable(exc):
                raise
            # An unknown key with the database down: as every route answers then, a 503 to retry.
            await _answer(send, 503, {"detail": DATABASE_DOWN}, [(b"retry-after", RETRY_AFTER)])
            return
        if valid:
            await self.app(scope, receive, send)
            return
        await self._refuse(scope, send)

    async def _valid(self, key_hash: str) -> bool:
        if key_hash in self._known:
            return True
        mark = self._mark
        if not await run_in_threadpool(self._lookup, key_hash):
            return False
        if mark == self._mark and len(self._known) < 100_000:  # no revocation seen meanwhile
            self._known.add(key_hash)
        return True

    async def _watch(self) -> None:
        """Forget every remembered key when a revocation moves the watermark."""
        while True:
            with contextlib.suppress(Exception):  # the database away: keep what is known, retry
                mark = await run_in_threadpool(self._mark_reader)
                if mark != self._mark:
                    self._known.clear()
                    self._mark = mark
            await asyncio.sleep(self.check_seconds)

    async def _refuse(self, scope: Scope, send: Any) -> None:
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.failures.take(client) if self.failures is not None else 0.0
        if wait > 0:
            seconds = retry_after(wait)
            body = {
                "detail": f"too many requests without a valid API key from this address; retry after {seconds} s"
            }
            await _answer(send, 429, body, [(b"retry-after", str(seconds).encode())])
        else:
            body = {"detail": UNAUTHORIZED.detail}
            await _answer(send, 401, body, [(b"www-authenticate", b"Bearer")])


async def _answer(
    send: Any, status: int, body: dict[str, str], headers: list[tuple[bytes, bytes]]
) -> None:
    """A JSON answer from the middleware; the body is never read: the connection closes after it."""
    head = [(b"content-type", b"application/json"), *headers, (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})

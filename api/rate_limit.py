"""Requests per API key: a token bucket per key, refused with 429 and `Retry-After`.

The buckets live in each API process (keyed by the key's sha256, the same hash the database
keeps), so the check costs a hash and a dict lookup and no query: predict's hot path stays
fast. With N API processes (`fitserve api --workers N`) a key gets up to N times the rate.
Requests without a bearer key are not counted here (they are refused with 401 anyway), nor
are the health probes.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from api.deps import bearer_key
from core.repository.tenants import hash_key

EXEMPT = frozenset({"/healthz", "/readyz"})


class TokenBuckets:
    """`rate` tokens a second up to `burst` per key; each request takes one."""

    def __init__(
        self,
        rate: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_keys, self._clock = rate, float(burst), max_keys, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0.0 when the request is admitted, else the seconds until a token is there."""
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                if key not in self._buckets and len(self._buckets) >= self.max_keys:
                    self._forget_full(now)
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """A bucket that has refilled is the same as none; a flood of keys costs no memory."""
        full = [
            k
            for k, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait: float) -> int:
    """`Retry-After` in whole seconds, at least 1."""
    return max(1, math.ceil(wait))


class RateLimit:
    """ASGI middleware; `rate` 0 lets everything through."""

    def __init__(self, app: Any, rate: float, burst: int) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate, burst) if rate > 0 else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.buckets is None or scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        key = bearer_key(authorization.decode("latin-1")) if authorization is not None else None
        wait = self.buckets.take(hash_key(key)) if key is not None else 0.0
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        seconds = retry_after(wait)
        message = (
            f"rate limit exceeded: this API key may make {self.buckets.rate:g} requests per second "
            f"(bursts of {self.buckets.burst:g}); retry after {seconds} s"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(seconds).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps({"detail": message}).encode()})

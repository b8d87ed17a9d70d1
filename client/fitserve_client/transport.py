"""The HTTP layer: a request described once (`Call`), sent by a sync or an async transport that
retry the same way, so the two clients cannot drift.

Retries: a 429 or 503 means the server did nothing (the rate limit answers before the route;
a 503 wrote nothing), so any request is sent again, after `Retry-After` when the server gave
one. A dropped connection or a timeout is retried only for requests that are safe to send
twice (`Call.idempotent`): reads, predict, and a submit carrying its `Idempotency-Key`. A
connection that was never made is retried for any request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import IO, Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from fitserve_client.errors import (
    APIConnectionError,
    APITimeoutError,
    FitserveError,
    Retryable,
    from_response,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("fitserve_client")
# Statuses a proxy in front of the API may answer for a moment; retried for idempotent calls.
GATEWAY = frozenset({502, 504})


def _user_agent() -> str:
    try:
        return f"fitserve-client/{version('fitserve-client')}"
    except PackageNotFoundError:  # run from a source tree
        return "fitserve-client"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, IO[bytes]]] | None = None
    data: dict[str, str] | None = None
    idempotent: bool = True  # safe to send twice: retried after a dropped connection too

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        for _, body in (self.files or {}).values():
            body.seek(0)  # a retried upload sends its file again from the start
        return http.build_request(
            self.method,
            self.path,
            params=self.params,
            json=self.json,
            headers=self.headers,
            files=self.files,
            data=self.data,
        )


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff: float = 0.5  # the first wait without Retry-After, doubled each time, with jitter
    max_backoff: float = 20.0
    max_retry_after: float = 120.0  # a longer Retry-After is raised at once, not slept through

    def backoff_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so many clients do not come back at once."""
        return min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311

    def wait(self, call: Call[Any], error: FitserveError, attempt: int) -> float | None:
        """Seconds to wait before sending `call` again after `error`; None: raise it."""
        if attempt >= self.max_retries:
            return None
        if isinstance(error, Retryable):
            if error.retry_after is None:
                return self.backoff_delay(attempt)
            if error.retry_after > self.max_retry_after:
                return None
            return error.retry_after + random.uniform(0, 0.1 * error.retry_after + 0.05)  # noqa: S311
        unsent = isinstance(error, APIConnectionError) and not error.request_sent
        if unsent or (call.idempotent and _transient(error)):
            return self.backoff_delay(attempt)
        return None


def _transient(error: FitserveError) -> bool:
    return isinstance(error, APIConnectionError) or error.status in GATEWAY


def connection_error(exc: httpx.TransportError) -> APIConnectionError:
    """The typed error for a request that got no answer."""
    cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    error = cls(
        f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        request_sent=not isinstance(
            exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
        ),
    )
    error.__cause__ = exc
    return error


def parse(model: type[M]) -> Callable[[httpx.Response], M]:
    """Read an answer's body as `model`."""
    return lambda response: model.model_validate_json(response.content)


def no_content(_: httpx.Response) -> None:
    return None


def headers(api_key: str | None) -> dict[str, str]:
    out = {"User-Agent": _user_agent(), "Accept": "application/json"}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    return out


def _refused(response: httpx.Response) -> FitserveError | None:
    return None if response.is_success else from_response(response)


class Transport:
    def __init__(
        self, url: str, api_key: str | None, timeout: float | httpx.Timeout, retry: RetryPolicy
    ) -> None:
        self.retry = retry
        self.http = httpx.Client(base_url=url, headers=headers(api_key), timeout=timeout)

    def send(self, call: Call[T]) -> T:
        response = self.open(call, stream=False)
        return call.parse(response)

    def open(self, call: Call[Any], stream: bool = True) -> httpx.Response:
        """A successful answer, after the retries the policy allows; a stream is the caller's
        to close."""
        attempt = 0
        while True:
            try:
                response = self.http.send(call.request(self.http), stream=stream)
                if stream and not response.is_success:
                    response.read()  # the error's body, before it is parsed
                error = _refused(response)
                if error is None:
                    return response
                response.close()
            except httpx.TransportError as exc:
                error = connection_error(exc)
            if (delay := self.retry.wait(call, error, attempt)) is None:
                raise error
            log.info("%s %s: %s; retrying in %.1f s", call.method, call.path, error, delay)
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self.http.close()


class AsyncTransport:
    def __init__(
        self, url: str, api_key: str | None, timeout: float | httpx.Timeout, retry: RetryPolicy
    ) -> None:
        self.retry = retry
        self.http = httpx.AsyncClient(base_url=url, headers=headers(api_key), timeout=timeout)

    async def send(self, call: Call[T]) -> T:
        response = await self.open(call, stream=False)
        return call.parse(response)

    async def open(self, call: Call[Any], stream: bool = True) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self.http.send(call.request(self.http), stream=stream)
                if stream and not response.is_success:
                    await response.aread()  # the error's body, before it is parsed
                error = _refused(response)
                if error is None:
                    return response
                await response.aclose()
            except httpx.TransportError as exc:
                error = connection_error(exc)
            if (delay := self.retry.wait(call, error, attempt)) is None:
                raise error
            log.info("%s %s: %s; retrying in %.1f s", call.method, call.path, error, delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def close(self) -> None:
        await self.http.aclose()

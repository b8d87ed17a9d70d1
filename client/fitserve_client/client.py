"""`Client` and `AsyncClient`: the resources (jobs, datasets, models, sweeps) over one transport."""

from __future__ import annotations

import httpx

from fitserve_client.config import resolve
from fitserve_client.datasets import AsyncDatasets, Datasets
from fitserve_client.jobs import AsyncJobs, Jobs
from fitserve_client.predict import AsyncModels, Models
from fitserve_client.sweeps import AsyncSweeps, Sweeps
from fitserve_client.transport import AsyncTransport, RetryPolicy, Transport

# Reads wait this long for a byte; an event stream sends a keepalive every 15 s by default
# (STREAM_KEEPALIVE_SECONDS), so a quiet stream never looks dead.
DEFAULT_TIMEOUT = 30.0


class Client:
    """`Client(url, api_key)`; either left out comes from FITSERVE_URL / FITSERVE_API_KEY or the
    file `fitserve login` wrote. `timeout` (seconds, or an httpx.Timeout) bounds each request's
    connect and each read; `max_retries` bounds the retries of 429, 503 and dropped connections."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        retry: RetryPolicy | None = None,
    ) -> None:
        credentials = resolve(url, api_key)
        self.url = credentials.url
        policy = retry or RetryPolicy(max_retries=max_retries)
        self._transport = Transport(credentials.url, credentials.api_key, timeout, policy)
        self.jobs = Jobs(self._transport)
        self.datasets = Datasets(self._transport)
        self.models = Models(self._transport)
        self.sweeps = Sweeps(self._transport)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient:
    """The same as `Client`, with coroutines (and `async for` over `jobs.stream`)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        retry: RetryPolicy | None = None,
    ) -> None:
        credentials = resolve(url, api_key)
        self.url = credentials.url
        policy = retry or RetryPolicy(max_retries=max_retries)
        self._transport = AsyncTransport(credentials.url, credentials.api_key, timeout, policy)
        self.jobs = AsyncJobs(self._transport)
        self.datasets = AsyncDatasets(self._transport)
        self.models = AsyncModels(self._transport)
        self.sweeps = AsyncSweeps(self._transport)

    async def aclose(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

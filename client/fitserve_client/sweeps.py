"""/v1/sweeps: start a hyperparameter sweep, read it (its trials, its best), wait for it, cancel it."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fitserve_client.jobs import SpecLike, load_spec
from fitserve_client.transport import AsyncTransport, Call, Transport, parse
from fitserve_client.types import Sweep, SweepList

SweepStatus = Literal["running", "succeeded", "cancelled", "failed"]
POLL_SECONDS = 1.0


def create_call(sweep: dict[str, Any]) -> Call[Sweep]:
    # Not idempotent: sent twice, it would start two sweeps.
    return Call("POST", "/v1/sweeps", parse(Sweep), json=sweep, idempotent=False)


def sweep_body(base: SpecLike, space: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The body of POST /v1/sweeps: a base job spec (a path, a dict or a model), the search
    space, and the sweep's other fields (sampler, pruner, objective, max_trials...)."""
    return {"base": load_spec(base), "space": space} | fields


def list_call(status: SweepStatus | None, limit: int, offset: int) -> Call[SweepList]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status is not None:
        params["status"] = status
    return Call("GET", "/v1/sweeps", parse(SweepList), params=params)


def get_call(sweep_id: str) -> Call[Sweep]:
    return Call("GET", f"/v1/sweeps/{sweep_id}", parse(Sweep))


def cancel_call(sweep_id: str) -> Call[Sweep]:
    return Call("POST", f"/v1/sweeps/{sweep_id}/cancel", parse(Sweep), idempotent=False)


class Sweeps:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, base: SpecLike, space: dict[str, Any], **fields: Any) -> Sweep:
        return self._t.send(create_call(sweep_body(base, space, **fields)))

    def get(self, sweep_id: str) -> Sweep:
        return self._t.send(get_call(sweep_id))

    def list(
        self, *, status: SweepStatus | None = None, limit: int = 20, offset: int = 0
    ) -> SweepList:
        return self._t.send(list_call(status, limit, offset))

    def cancel(self, sweep_id: str) -> Sweep:
        return self._t.send(cancel_call(sweep_id))

    def wait(self, sweep_id: str, *, timeout: float | None = None) -> Sweep:
        """Poll the sweep until it ends (TimeoutError past `timeout` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (sweep := self.get(sweep_id)).done:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep {sweep_id} still running after {timeout} s")
            time.sleep(POLL_SECONDS)
        return sweep


class AsyncSweeps:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def create(self, base: SpecLike, space: dict[str, Any], **fields: Any) -> Sweep:
        return await self._t.send(create_call(sweep_body(base, space, **fields)))

    async def get(self, sweep_id: str) -> Sweep:
        return await self._t.send(get_call(sweep_id))

    async def list(
        self, *, status: SweepStatus | None = None, limit: int = 20, offset: int = 0
    ) -> SweepList:
        return await self._t.send(list_call(status, limit, offset))

    async def cancel(self, sweep_id: str) -> Sweep:
        return await self._t.send(cancel_call(sweep_id))

    async def wait(self, sweep_id: str, *, timeout: float | None = None) -> Sweep:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (sweep := await self.get(sweep_id)).done:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep {sweep_id} still running after {timeout} s")
            await asyncio.sleep(POLL_SECONDS)
        return sweep

"""A job's live events: the server-sent events parser and the iterators that reconnect.

The API numbers every metric point and status change of a job (`seq`) and sends it as the
event's `id:`. A stream that drops is opened again with `Last-Event-ID: <the last seq seen>`,
and the server replays exactly what follows it: no point is lost or repeated. The iterators
stop after the status that ends the job (succeeded, failed, cancelled or pruned).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from fitserve_client.errors import FitserveError
from fitserve_client.transport import (
    AsyncTransport,
    Call,
    RetryPolicy,
    Transport,
    connection_error,
    no_content,
)
from fitserve_client.types import TERMINAL, Event, JobState, MetricPoint, StatusEvent

KINDS: dict[str, type[MetricPoint] | type[StatusEvent] | type[JobState]] = {
    "metric": MetricPoint,
    "status": StatusEvent,
    "job": JobState,
}


@dataclass
class ServerSentEvent:
    event: str
    id: str | None
    data: str


@dataclass
class Decoder:
    """Lines in, events out, as the WHATWG rules read them: fields per line, a blank line ends
    an event, a line starting with ':' is a comment. An event cut off by a dropped connection
    never ends, so it is never dispatched: a decoder lives as long as one connection."""

    event: str = ""
    id: str | None = None
    data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> ServerSentEvent | None:
        if line == "":
            done = ServerSentEvent(self.event or "message", self.id, "\n".join(self.data))
            found = bool(self.data)
            self.event, self.id, self.data = "", None, []
            return done if found else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id" and "\0" not in value:
            self.id = value
        return None  # `retry:` is for browsers; this client backs off on its own


def decode(sse: ServerSentEvent) -> Event | None:
    """The typed event; None for a kind this client does not know (a newer server's)."""
    kind = KINDS.get(sse.event)
    return None if kind is None else kind.model_validate_json(sse.data)


@dataclass
class Cursor:
    """Where a stream is: the last event seen, and whether the job has ended."""

    last_event_id: int | None = None
    ended: bool = False

    def accept(self, event: Event) -> bool:
        """Take an event in; False for one already seen (never expected: a guard)."""
        if isinstance(event, MetricPoint | StatusEvent):
            if self.last_event_id is not None and event.seq <= self.last_event_id:
                return False
            self.last_event_id = event.seq
            self.ended = isinstance(event, StatusEvent) and event.status in TERMINAL
        return True

    def call(self, job_id: str) -> Call[None]:
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        path = f"/v1/jobs/{quote(job_id, safe='')}/events"
        return Call("GET", path, no_content, headers=headers)


class _Reconnects:
    """Shared by both iterators: the deadline, and how many drops in a row are tolerated."""

    def __init__(self, job_id: str, after: int | None, timeout: float | None) -> None:
        self.job_id, self.cursor = job_id, Cursor(after)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.reconnects, self._failures = 0, 0

    @property
    def last_event_id(self) -> int | None:
        return self.cursor.last_event_id

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError(f"job {self.job_id} has not ended in time")

    def dropped(
        self, got_events: bool, exc: httpx.TransportError | None, policy: RetryPolicy
    ) -> float:
        """After a connection ended before the job did: seconds to wait, or raise when too many
        connections in a row brought nothing."""
        self._failures = 1 if got_events else self._failures + 1
        if self._failures > policy.max_retries:
            if exc is not None:
                raise connection_error(exc)
            raise FitserveError(f"the event stream of job {self.job_id} keeps ending early")
        self.reconnects += 1
        self.check_deadline()
        return policy.backoff_delay(self._failures - 1)


class EventStream(_Reconnects):
    """Iterate a job's events (MetricPoint, StatusEvent, JobState) until it ends; `close()` or
    leaving a `with` block stops early, and `last_event_id` is where to resume (`after=`)."""

    def __init__(
        self, transport: Transport, job_id: str, after: int | None, timeout: float | None
    ) -> None:
        super().__init__(job_id, after, timeout)
        self._transport = transport
        self._events = self._run()

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self) -> Generator[Event, None, None]:
        while not self.cursor.ended:
            self.check_deadline()
            response = self._transport.open(self.cursor.call(self.job_id))
            got, error = False, None
            try:
                if response.status_code == 204:  # past the finished job's last event
                    return
                decoder = Decoder()
                for line in response.iter_lines():
                    self.check_deadline()
                    sse = decoder.feed(line)
                    event = decode(sse) if sse else None
                    if event is not None and self.cursor.accept(event):
                        got = True
                        yield event
                        if self.cursor.ended:
                            return
            except httpx.TransportError as exc:  # dropped: resume after the last event seen
                error = exc
            finally:
                response.close()
            time.sleep(self.dropped(got, error, self._transport.retry))


class AsyncEventStream(_Reconnects):
    """`async for` over a job's events; the same reconnects as `EventStream`."""

    def __init__(
        self, transport: AsyncTransport, job_id: str, after: int | None, timeout: float | None
    ) -> None:
        super().__init__(job_id, after, timeout)
        self._transport = transport
        self._events = self._run()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[Event, None]:
        while not self.cursor.ended:
            self.check_deadline()
            response = await self._transport.open(self.cursor.call(self.job_id))
            got, error = False, None
            try:
                if response.status_code == 204:
                    return
                decoder = Decoder()
                async for line in response.aiter_lines():
                    self.check_deadline()
                    sse = decoder.feed(line)
                    event = decode(sse) if sse else None
                    if event is not None and self.cursor.accept(event):
                        got = True
                        yield event
                        if self.cursor.ended:
                            return
            except httpx.TransportError as exc:
                error = exc
            finally:
                await response.aclose()
            await asyncio.sleep(self.dropped(got, error, self._transport.retry))

"""One live stream of a job's events, as server-sent events, fed by the process's hub.

The stream opens with `retry:` and a `job` event (the job as it stands), replays the job's
events numbered above the client's cursor, then follows live. Each `metric` and `status` event
carries `id: <seq>`; a `job` event (sent again when the job's progress or state moves) carries
the stream's cursor. The last event is the `status` event that ends the job, right after a
final `job` event. A comment every `keepalive` seconds keeps proxies from closing a quiet stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.exc import DBAPIError
from starlette.responses import StreamingResponse

from api.hub import Feed, Frame, Hub
from core.db import unreachable

RETRY_MILLISECONDS = 2000  # how long a browser's EventSource waits before it reconnects
WAITING = ": the database is unreachable; waiting\n\n"
KEEPALIVE = ": keepalive\n\n"


class EventStream(StreamingResponse):
    """Gives the tenant's stream slot back however the response ends: finished, client gone or
    server shutting down."""

    def __init__(self, body: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._release: Callable[[], None] | None = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


def job_frame(feed: Feed, cursor: int) -> str:
    """The job as it stands: not an entry of the sequence, so it carries the stream's cursor."""
    return f"id: {cursor}\nevent: job\ndata: {feed.state_json}\n\n"


async def pending(hub: Hub, feed: Feed, cursor: int) -> list[Frame]:
    """The frames after `cursor`: from the feed, or (an older cursor) a page from the database."""
    frames = feed.after(cursor)
    return frames if frames is not None else await hub.backlog(feed.job_id, cursor)


async def follow(hub: Hub, job_id: str, cursor: int, keepalive: float) -> AsyncIterator[str]:
    async with hub.watch(job_id) as feed:
        yield f"retry: {RETRY_MILLISECONDS}\n\n" + (
            job_frame(feed, cursor) if feed.state_json else ""
        )
        version, quiet_since = feed.version, time.monotonic()
        while True:
            try:
                frames = await pending(hub, feed, cursor)
            except DBAPIError as exc:  # down for a while: say so and wait, do not end
                if not unreachable(exc):
                    raise
                yield WAITING
                await asyncio.sleep(1.0)
                continue
            out: list[str] = []
            held = False  # stopped at the final status before the feed read the job's final state
            for f in frames:
                if f.terminal:
                    if not feed.ended:
                        held = True
                        break
                    out.append(job_frame(feed, cursor))
                out.append(f.text)
                cursor = f.seq
                if f.terminal:
                    yield "".join(out)
                    return
            if feed.version != version and feed.state_json:
                out.append(job_frame(feed, cursor))
                version = feed.version
            if out:
                yield "".join(out)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= keepalive:
                yield KEEPALIVE
                quiet_since = time.monotonic()
            if frames and not held:
                continue  # a page from the database: more may follow at once
            if feed.ended and feed.state is not None and cursor >= feed.state.seq:
                return  # a cursor already past the job's end
            if feed.unreachable:
                yield WAITING
            await feed.changed()  # news, or the hub's tick (every half keepalive)

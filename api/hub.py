"""The live-event hub: one per API process, one feed per watched job, however many streams.

A feed reads its job's new events once and keeps them, rendered, for every stream of that job;
streams wait on the feed and hold no database connection while they wait. What wakes a feed:
- PostgreSQL: one dedicated connection LISTENs on `events.CHANNEL`; the worker's reporter and
  every status change NOTIFY (job id, newest seq) in the transaction that writes the rows. A
  poll every `SAFETY_POLL_SECONDS` besides catches what a lost listening connection missed.
- SQLite: one poll of every watched job's cursor per `stream_poll_seconds`, not one per stream.

A feed keeps the newest `KEEP` events; a stream whose cursor is older (a reconnect with an old
Last-Event-ID, a new stream replaying history) reads the gap from the database itself, in pages.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from api.schemas import JobState
from api.views import frame, to_state
from core.db import hot_read, unreachable
from core.repository import events as events_repo
from core.repository.events import Event
from core.settings import Settings
from core.tables import TERMINAL, Job

log = logging.getLogger("fitserve.hub")
KEEP = 4096  # events a feed keeps in memory
SLICE = 10  # streams woken per turn of the event loop
_FANOUTS: set[asyncio.Task[None]] = set()  # wakes in progress (the loop keeps only weak references)
PAGE = 2000  # events read at once
SAFETY_POLL_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    text: str
    terminal: bool  # a status event that ends the job


@dataclass(eq=False)
class Feed:
    """One watched job: its newest events, rendered once, and its state as last read."""

    job_id: str
    watchers: int = 0
    frames: list[Frame] = field(default_factory=list)
    floor: int = 0  # every event numbered above `floor` (up to `top`) is in `frames`
    top: int = 0
    state: JobState | None = None
    state_json: str = ""  # `state` rendered once for every stream
    version: int = 0  # bumped when the state changes in more than its heartbeat time
    mark: tuple[int, Any] = (0, None)  # (seq, updated_at) last read: a poller's test for news
    unreachable: bool = False  # the last read found the database down
    poke: asyncio.Event = field(default_factory=asyncio.Event)  # read now
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # the first read is done
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def after(self, cursor: int) -> list[Frame] | None:
        """The frames numbered above `cursor`; None when they are not all held (read them yourself)."""
        if cursor < self.floor:
            return None
        return self.frames[bisect.bisect_right(self.frames, cursor, key=lambda f: f.seq) :]

    def publish(self, events: list[Event], state: JobState | None, top: int) -> None:
        """Append events (numbered above `self.top`, in order); every event up to `top` is now held."""
        self.frames.extend(to_frames(events))
        self.top = top
        if len(self.frames) > KEEP:
            dropped = len(self.frames) - KEEP
            self.floor = self.frames[dropped - 1].seq
            del self.frames[:dropped]
        if state is not None:
            if self.state is None or state.model_dump(
                exclude={"updated_at"}
            ) != self.state.model_dump(exclude={"updated_at"}):
                self.version += 1
                self.state_json = state.model_dump_json()
            self.state, self.mark = state, (state.seq, state.updated_at)
        self.wake()

    @property
    def ended(self) -> bool:
        """The state last read is terminal."""
        return self.state is not None and self.state.status in TERMINAL

    def changed(self) -> asyncio.Future[None]:
        """A future done at the feed's next news (or the hub's keepalive tick). A plain future: a
        timer per wait (wait_for) was the costliest part of a stream's step."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def wake(self) -> None:
        """Wake the streams, a slice per turn of the event loop: a thousand streams woken at once
        would keep every other request waiting until the last had sent its events."""
        waiters, self._waiters = self._waiters, []
        _release(waiters[:SLICE])
        if len(waiters) > SLICE:
            task = asyncio.create_task(_release_in_slices(waiters[SLICE:]))
            _FANOUTS.add(task)
            task.add_done_callback(_FANOUTS.discard)


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():  # a stream gone meanwhile left its future cancelled
            waiter.set_result(None)


async def _release_in_slices(waiters: list[asyncio.Future[None]]) -> None:
    for start in range(0, len(waiters), SLICE):
        await asyncio.sleep(0)  # let the loop poll its sockets between slices
        _release(waiters[start : start + SLICE])


STATE_COLUMNS = [c for c in Job.__table__.c if c.name not in ("spec", "summary")]


def _read(job_id: str, after: int | None) -> tuple[Any, list[Event]]:
    """The job row, then its events above `after` (none on a feed's first read). In this order:
    every event up to the row's seq was committed before the row was read, so the events read
    after it include them all."""

    def query(connection: Any) -> tuple[Any, list[Event]]:
        row = connection.execute(select(*STATE_COLUMNS).where(Job.id == job_id)).first()
        if after is None:
            return row, []
        return row, events_repo.read_events(
            connection=connection, job_id=job_id, after=after, limit=PAGE
        )

    return hot_read(query)


def _marks(job_ids: list[str]) -> dict[str, tuple[int, Any]]:
    return hot_read(lambda c: events_repo.cursors(connection=c, job_ids=job_ids))


def to_frames(events: list[Event]) -> list[Frame]:
    return [Frame(e.seq, frame(e), e.kind == "status" and e.status in TERMINAL) for e in events]


def backlog(job_id: str, after: int) -> list[Frame]:
    """A page of the job's events above `after`, rendered (in the reading thread, not the loop)."""
    return to_frames(
        hot_read(
            lambda c: events_repo.read_events(connection=c, job_id=job_id, after=after, limit=PAGE)
        )
    )


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.feeds: dict[str, Feed] = {}
        self.streams: Counter[str] = Counter()  # open streams per tenant
        # The hub's reads get threads of their own: routes busy in the shared pool do not stall streams.
        self.limiter = anyio.CapacityLimiter(4)
        self._tasks: list[asyncio.Task[None]] = []
        self._pages: dict[tuple[str, int], asyncio.Future[list[Frame]]] = {}

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        url = self.settings.database_url
        self._tasks.append(
            asyncio.create_task(self._tick(self.settings.stream_keepalive_seconds / 2))
        )
        if url.startswith("postgresql"):
            self._tasks.append(asyncio.create_task(self._listen(url)))
            self._tasks.append(asyncio.create_task(self._poll(SAFETY_POLL_SECONDS)))
        else:
            self._tasks.append(asyncio.create_task(self._poll(self.settings.stream_poll_seconds)))

    async def close(self) -> None:
        tasks = self._tasks + [f.task for f in self.feeds.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- streams ----------------------------------------------------------------------------
    def admit(self, tenant_id: str) -> bool:
        """Count a new stream of the tenant's, unless it has its `max_streams_per_tenant` open."""
        if self.streams[tenant_id] >= self.settings.max_streams_per_tenant:
            return False
        self.streams[tenant_id] += 1
        return True

    def release(self, tenant_id: str) -> None:
        self.streams[tenant_id] -= 1
        if self.streams[tenant_id] <= 0:
            del self.streams[tenant_id]

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[Feed]:
        feed = self.feeds.get(job_id)
        if feed is None:
            feed = self.feeds[job_id] = Feed(job_id)
            feed.task = asyncio.create_task(self._follow(feed))
            feed.poke.set()
        feed.watchers += 1
        try:
            await feed.ready.wait()
            yield feed
        finally:
            feed.watchers -= 1
            if feed.watchers == 0 and self.feeds.get(job_id) is feed:
                del self.feeds[job_id]
                if feed.task is not None:
                    feed.task.cancel()

    async def backlog(self, job_id: str, after: int) -> list[Frame]:
        """A page of history for a stream whose cursor the feed no longer holds. Streams asking
        for the same page at once (viewers opening the same job) share one read."""
        key = (job_id, after)
        if key not in self._pages:
            self._pages[key] = asyncio.ensure_future(
                anyio.to_thread.run_sync(backlog, job_id, after, limiter=self.limiter)
            )
            self._pages[key].add_done_callback(lambda _: self._pages.pop(key, None))
        return await asyncio.shield(self._pages[key])

    # -- reading ----------------------------------------------------------------------------
    async def _follow(self, feed: Feed) -> None:
        """Read the job's news whenever the feed is poked, once for all of its streams."""
        delay = 0.1
        while True:
            await feed.poke.wait()
            feed.poke.clear()
            after = feed.top if feed.ready.is_set() else None
            try:
                row, events = await anyio.to_thread.run_sync(
                    _read, feed.job_id, after, limiter=self.limiter
                )
            except DBAPIError as exc:  # down for a while: the streams say so and wait
                if not unreachable(exc):
                    log.exception("job %s: reading its events failed", feed.job_id)
                feed.unreachable = True
                feed.wake()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                feed.poke.set()
                continue
            delay, feed.unreachable = 0.1, False
            state = None if row is None else to_state(row)
            seen = state.seq if state is not None else 0
            if after is None:
                feed.floor = seen
                feed.publish([], state, seen)
                feed.ready.set()
                continue
            full = len(events) == PAGE
            newest = events[-1].seq if events else feed.top
            # Not a full page: every event up to the row's seq was read (a gap is a repeated point).
            feed.publish(events, state, newest if full else max(newest, seen))
            if full or newest > seen:  # more to read, or the row is older than its events: read on
                feed.poke.set()

    async def _tick(self, interval: float) -> None:
        """Wake every feed now and then, so quiet streams can send their keepalive comment."""
        while True:
            await asyncio.sleep(interval)
            for feed in list(self.feeds.values()):
                feed.wake()

    async def _poll(self, interval: float) -> None:
        """Poke every feed whose job has news; one query for all watched jobs."""
        while True:
            await asyncio.sleep(interval)
            feeds = [f for f in self.feeds.values() if f.ready.is_set()]
            if not feeds:
                continue
            try:
                marks = await anyio.to_thread.run_sync(
                    _marks, [f.job_id for f in feeds], limiter=self.limiter
                )
            except (
                DBAPIError
            ) as exc:  # the streams say so, and their feeds read again once it answers
                if not unreachable(exc):
                    log.exception("the hub's poll failed")
                for feed in feeds:
                    feed.unreachable = True
                    feed.wake()
                continue
            for feed in feeds:
                if marks.get(feed.job_id, feed.mark) != feed.mark or feed.unreachable:
                    feed.poke.set()

    async def _listen(self, url: str) -> None:
        """LISTEN on one dedicated connection; reconnect (and poke every feed) when it drops."""
        import psycopg

        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {events_repo.CHANNEL}")
                    delay = 0.5
                    for feed in self.feeds.values():  # whatever happened while nobody listened
                        feed.poke.set()
                    async for note in conn.notifies():
                        noted = self.feeds.get(note.payload.partition(" ")[0])
                        if noted is not None:
                            noted.poke.set()
            except (psycopg.Error, OSError) as exc:
                log.warning("event listener: %s; reconnecting in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

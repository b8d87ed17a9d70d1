"""A job's event sequence on both databases: numbered in commit order (a cursor never skips),
the migration numbers existing rows, and the hub's feed keeps what it should."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import create_engine, insert, select, text

from api.hub import KEEP, SLICE, Feed
from core.db import alembic_config, get_engine, hot_read, session_scope
from core.repository import events as events_repo
from core.repository import jobs as jobs_repo
from core.repository import metrics as metrics_repo
from core.repository import tenants as tenants_repo
from core.repository.events import Event
from core.tables import Job, JobEvent, Metric, utcnow
from tests.conftest import PG_ADMIN


def _job(url: str) -> str:
    with session_scope(url) as s:
        tenant = tenants_repo.get_or_create_tenant(session=s, name="events")
        return jobs_repo.create_job(
            session=s, job=Job(tenant_id=tenant.id, name="j", spec={}, epochs=1)
        ).id


def _write_points(url: str, job_id: str, batches: int, start: int) -> None:
    """The reporter's transaction: numbered rows, one repeated point per batch (a gap)."""
    for b in range(batches):
        step = start + b * 10
        rows = [
            {
                "job_id": job_id,
                "attempt": 1,
                "step": step + i // 2,
                "epoch": 1,
                "name": ("a", "b")[i % 2],
                "value": float(i),
                "time": utcnow(),
            }
            for i in range(4)
        ]
        rows.append({**rows[0]})  # repeats a point of this batch: ignored, its number left unused
        with session_scope(url) as s:
            metrics_repo.number_metrics(session=s, job_id=job_id, rows=rows)
            metrics_repo.add_metrics(session=s, rows=rows)


def _write_statuses(url: str, job_id: str, count: int) -> None:
    for _ in range(count):
        with session_scope(url) as s:
            seq = events_repo.allocate(session=s, job_id=job_id, count=1)
            s.execute(
                insert(JobEvent),
                [
                    {
                        "job_id": job_id,
                        "seq": seq,
                        "status": "running",
                        "reason": None,
                        "attempt": 1,
                        "time": utcnow(),
                    }
                ],
            )


def test_a_cursor_reader_never_skips_concurrent_writers(database_url: str) -> None:
    """Three writers (two of points, one of status changes) race a reader that pages by cursor:
    it sees every entry exactly once, in order."""
    job_id = _job(database_url)
    writers = [
        threading.Thread(target=_write_points, args=(database_url, job_id, 60, 0)),
        threading.Thread(target=_write_points, args=(database_url, job_id, 60, 100_000)),
        threading.Thread(target=_write_statuses, args=(database_url, job_id, 60)),
    ]
    for w in writers:
        w.start()
    seen: list[Event] = []
    cursor = 0
    while True:
        done = not any(w.is_alive() for w in writers)
        page = hot_read(
            lambda c, after=cursor: events_repo.read_events(
                connection=c, job_id=job_id, after=after, limit=7
            ),
            database_url,
        )
        seen += page
        cursor = page[-1].seq if page else cursor
        if done and not page:
            break
    with get_engine(database_url).connect() as c:
        metric_seqs = set(c.scalars(select(Metric.seq).where(Metric.job_id == job_id)))
        status_seqs = set(c.scalars(select(JobEvent.seq).where(JobEvent.job_id == job_id)))
        top = c.scalar(select(Job.seq).where(Job.id == job_id))
    seqs = [e.seq for e in seen]
    assert seqs == sorted(set(seqs))
    assert (
        set(seqs) == metric_seqs | status_seqs
        and len(metric_seqs) == 2 * 60 * 4
        and len(status_seqs) == 61
    )
    assert top == 1 + 2 * 60 * 5 + 60, "every number taken, the repeated points' ones left as gaps"
    assert [e.kind for e in seen].count("status") == 61 and seen[0].status == "queued"
    assert all(e.time.tzinfo is not None for e in seen)


def test_status_changes_are_numbered_with_the_points(database_url: str) -> None:
    job_id = _job(database_url)
    with session_scope(database_url) as s:
        job = jobs_repo.claim(session=s, job_id=job_id, owner="w", lease_seconds=30)
        assert job is not None and job.seq == 2
    _write_points(database_url, job_id, 1, 0)
    with session_scope(database_url) as s:
        assert jobs_repo.finish(
            session=s, job_id=job_id, attempt=1, status="succeeded", reason="done"
        )
    events = hot_read(
        lambda c: events_repo.read_events(connection=c, job_id=job_id, after=0, limit=100),
        database_url,
    )
    assert [(e.seq, e.kind, e.status) for e in events] == [
        (1, "status", "queued"),
        (2, "status", "running"),
        (3, "metric", None),
        (4, "metric", None),
        (5, "metric", None),
        (6, "metric", None),
        (8, "status", "succeeded"),
    ]
    assert events[-1].reason == "done" and events[1].attempt == 1


@pytest.fixture(params=["sqlite", "postgres"])
def old_database(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """An empty database at revision 0003, before the event sequence."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    name = f"fitserve_old_{tmp_path.name[-8:].lower().replace('-', '_')}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    request.addfinalizer(lambda: _drop(name))
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _drop(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def test_the_migration_numbers_existing_rows(old_database: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(old_database), "0003")
    engine = create_engine(old_database)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as c:
        c.execute(
            text("INSERT INTO tenant (id, name, created_at) VALUES ('ten_1', 't', :now)"),
            {"now": now},
        )
        c.execute(
            text(
                "INSERT INTO job (id, tenant_id, name, spec, status, reason, attempt, max_attempts, preemptions, "
                "cancel_requested, epoch, epochs, step, steps, parameters, estimated_memory_bytes, latest_metrics, "
                "test_metrics, created_at, updated_at) VALUES ('job_1', 'ten_1', 'j', '{}', 'succeeded', 'done', 1, 3, "
                "0, false, 2, 2, 0, 0, 0, 0, '{}', '{}', :now, :now)"
            ),
            {"now": now},
        )
        # Epoch 1's rows share step 10 with a step loss logged a moment earlier.
        for step, name, second in [
            (10, "val_loss", 2),
            (10, "step_loss", 1),
            (5, "step_loss", 0),
            (10, "loss", 2),
        ]:
            c.execute(
                text(
                    "INSERT INTO metric (job_id, step, name, attempt, epoch, value, time) VALUES "
                    "('job_1', :step, :name, 1, 1, 0.5, :time)"
                ),
                {"step": step, "name": name, "time": now.replace(second=second)},
            )
    engine.dispose()
    command.upgrade(alembic_config(old_database), "head")
    with session_scope(old_database) as s:
        rows = s.execute(select(Metric.seq, Metric.step, Metric.name).order_by(Metric.seq)).all()
        assert [tuple(r) for r in rows] == [
            (1, 5, "step_loss"),
            (2, 10, "step_loss"),
            (3, 10, "loss"),
            (4, 10, "val_loss"),
        ]
        event = s.execute(select(JobEvent.seq, JobEvent.status, JobEvent.reason)).one()
        assert tuple(event) == (5, "succeeded", "done")
        assert s.get(Job, "job_1").seq == 5  # type: ignore[union-attr]
    get_engine(old_database).dispose()


def _event(seq: int, status: str | None = None) -> Event:
    now = utcnow()
    if status:
        return Event(seq=seq, attempt=1, time=now, status=status)
    return Event(seq=seq, attempt=1, time=now, step=seq, epoch=1, name="loss", value=0.1)


def test_a_feed_keeps_its_newest_events_and_sends_older_cursors_to_the_database() -> None:
    async def run() -> None:
        feed = Feed("job_x")
        feed.publish([], None, 10)
        feed.floor = 10
        assert feed.after(10) == [] and feed.after(9) is None
        feed.publish([_event(s) for s in range(11, 11 + KEEP + 5)], None, 10 + KEEP + 5)
        assert feed.floor == 15 and len(feed.frames) == KEEP
        assert feed.after(14) is None
        assert [f.seq for f in feed.after(KEEP + 12) or []] == [KEEP + 13, KEEP + 14, KEEP + 15]
        waiters = [feed.changed() for _ in range(120)]  # woken in slices, every one of them
        waiters[3].cancel()  # a stream gone meanwhile
        feed.publish([_event(KEEP + 16, "succeeded")], None, KEEP + 16)
        assert sum(w.done() for w in waiters) == SLICE, (
            "the first slice at once (with the cancelled one)"
        )
        await asyncio.wait_for(asyncio.gather(*waiters[4:]), 1)
        assert feed.frames[-1].terminal and "event: status" in feed.frames[-1].text
        assert not feed.changed().done()

    asyncio.run(run())


def test_the_openapi_schema_describes_the_stream() -> None:
    from api.main import app

    operation = app.openapi()["paths"]["/v1/jobs/{job_id}/events"]["get"]
    stream = operation["responses"]["200"]["content"]["text/event-stream"]
    events = {e["properties"]["event"]["const"]: e for e in stream["itemSchema"]["oneOf"]}
    assert set(events) == {"metric", "status", "job"}
    data = {
        name: set(e["properties"]["data"]["contentSchema"]["properties"])
        for name, e in events.items()
    }
    assert data["metric"] >= {"seq", "step", "name", "value"} and "progress" in data["job"]
    assert data["status"] == {"seq", "status", "reason", "attempt", "time"}
    names = {p["name"]: p for p in operation["parameters"]}
    assert names["Last-Event-ID"]["in"] == "header" and names["after"]["in"] == "query"
    for words in ("Last-Event-ID", "exactly once", "204", "keepalive", "max_streams_per_tenant"):
        assert words in operation["description"], words
    assert {"204", "404", "429", "422"} <= set(operation["responses"])

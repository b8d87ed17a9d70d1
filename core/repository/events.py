"""A job's event sequence: its metric rows and status changes, numbered 1, 2, 3... per job.

Numbers are taken by bumping `job.seq` in the transaction that writes the rows. That UPDATE
holds the job row's lock until commit, so a job's transactions commit in sequence order: a
reader that sees number n has seen every number below it (gaps, left by a write that turned
out to repeat a point, are fine). On PostgreSQL the same transaction sends `NOTIFY` on
`CHANNEL`, delivered at commit, with the job id and its newest number.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, null, select, text, union_all, update
from sqlalchemy.orm import Session

from core.tables import Job, JobEvent, Metric, utcnow

CHANNEL = "fitserve_events"


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a job's sequence: a metric point (`name` set) or a status change (`status` set)."""

    seq: int
    attempt: int
    time: datetime
    step: int | None = None
    epoch: int | None = None
    name: str | None = None
    value: float | None = None
    status: str | None = None
    reason: str | None = None

    @property
    def kind(self) -> str:
        return "metric" if self.name is not None else "status"


def allocate(*, session: Session, job_id: str, count: int) -> int:
    """Take `count` numbers for the job; returns the last. Holds the job row's lock to commit."""
    top = session.execute(
        update(Job).where(Job.id == job_id).values(seq=Job.seq + count).returning(Job.seq)
    ).scalar_one_or_none()
    if top is None:
        raise LookupError(f"job {job_id} does not exist")
    return int(top)


def notify(*, session: Session, job_id: str, seq: int) -> None:
    """Tell every API process's hub that the job has news up to `seq` (at commit; PostgreSQL only:
    on SQLite the hubs poll)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": f"{job_id} {seq}"},
        )


def record_status(*, session: Session, changed: Iterable[Row[Any]] | Sequence[Any]) -> None:
    """Log the status changes an UPDATE ... RETURNING (id, seq, status, reason, attempt) made, and
    notify. The UPDATE bumped each job's seq itself: the change and its number are one write."""
    now = utcnow()
    rows = [
        {
            "job_id": r.id,
            "seq": r.seq,
            "status": r.status,
            "reason": r.reason,
            "attempt": r.attempt,
            "time": now,
        }
        for r in changed
    ]
    if not rows:
        return
    session.execute(insert(JobEvent), rows)
    for row in rows:
        notify(session=session, job_id=row["job_id"], seq=row["seq"])


# RETURNING for a status-changing UPDATE: what record_status needs.
CHANGED = (Job.id, Job.seq, Job.status, Job.reason, Job.attempt)


def read_events(*, connection: Connection, job_id: str, after: int, limit: int) -> list[Event]:
    """The job's events numbered above `after`, in order, at most `limit`. One statement, so one
    snapshot: metric rows and status changes can never be seen out of step with each other."""
    metrics = select(
        Metric.seq,
        Metric.attempt,
        Metric.time,
        Metric.step,
        Metric.epoch,
        Metric.name,
        Metric.value,
        null().label("status"),
        null().label("reason"),
    ).where(Metric.job_id == bindparam("job_id"), Metric.seq > bindparam("after"))
    statuses = select(
        JobEvent.seq,
        JobEvent.attempt,
        JobEvent.time,
        null(),
        null(),
        null(),
        null(),
        JobEvent.status,
        JobEvent.reason,
    ).where(JobEvent.job_id == bindparam("job_id"), JobEvent.seq > bindparam("after"))
    both = union_all(metrics, statuses).subquery()
    query = select(both).order_by(both.c.seq).limit(bindparam("limit"))
    rows = connection.execute(query, {"job_id": job_id, "after": after, "limit": limit}).all()
    return [_event(r) for r in rows]


def _event(row: Row[Any]) -> Event:
    time = row.time
    if isinstance(time, str):  # SQLite gives a UNION's timestamps back as text
        time = datetime.fromisoformat(time)
    time = (
        time.replace(tzinfo=UTC) if time.tzinfo is None else time.astimezone(UTC)
    )  # as UTCDateTime loads it
    return Event(
        seq=int(row.seq),
        attempt=int(row.attempt),
        time=time,
        step=row.step,
        epoch=row.epoch,
        name=row.name,
        value=row.value,
        status=row.status,
        reason=row.reason,
    )


def cursors(*, connection: Connection, job_ids: Sequence[str]) -> dict[str, tuple[int, datetime]]:
    """Each job's (seq, updated_at): what a poller compares to see whether a job has news."""
    if not job_ids:
        return {}
    rows = connection.execute(
        select(Job.id, Job.seq, Job.updated_at).where(Job.id.in_(job_ids))
    ).all()
    return {r.id: (int(r.seq), r.updated_at) for r in rows}

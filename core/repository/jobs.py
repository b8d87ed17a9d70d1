"""Job rows: creation, tenant-scoped reads, the worker's lease (claim, heartbeat, finish),
and cancellation. Writes from a worker are fenced by `attempt`: a stale copy of a job
matches no row."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from core.repository import events as events_repo
from core.repository.events import CHANGED
from core.tables import TERMINAL, WAITING, ApiKey, Job, JobEvent, JobStatus, utcnow


def status_for_key(
    *, connection: Connection, key_hash: str, job_id: str
) -> tuple[bool, str | None]:
    """(the key is valid, the job's status if the key's tenant owns it), in one query: predict's
    hot path checks the key and the job together."""
    row = connection.execute(
        select(ApiKey.tenant_id, Job.status)
        .select_from(ApiKey)
        .outerjoin(Job, and_(Job.tenant_id == ApiKey.tenant_id, Job.id == job_id))
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    ).first()
    return (False, None) if row is None else (True, row[1])


def create_job(*, session: Session, job: Job) -> Job:
    """A new job and the first event of its sequence: its status (queued)."""
    job.seq = 1
    session.add(job)
    session.flush()
    session.add(
        JobEvent(
            job_id=job.id,
            seq=1,
            status=job.status,
            reason=job.reason,
            attempt=job.attempt,
            time=job.created_at,
        )
    )
    session.flush()
    return job


def get_job(*, session: Session, tenant_id: str, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def get_by_idempotency_key(*, session: Session, tenant_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def list_jobs(
    *,
    session: Session,
    tenant_id: str,
    status: str | None,
    limit: int,
    offset: int,
    name: str | None = None,
) -> tuple[list[Job], int]:
    """Newest first; `name` keeps the jobs whose name holds it, ignoring case (its % and _ are
    plain characters)."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    if name is not None:
        query = query.where(func.lower(Job.name).contains(name.lower(), autoescape=True))
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    )
    return list(rows), int(count)


def _transition(session: Session, *where: ColumnElement[bool], **values: Any) -> list[Any]:
    """A status change: one conditional UPDATE that also numbers it in the job's event sequence,
    then the change logged (and notified). Returns the rows changed: none if the condition failed."""
    changed = session.execute(
        update(Job).where(*where).values(**values, seq=Job.seq + 1).returning(*CHANGED)
    ).all()
    events_repo.record_status(session=session, changed=changed)
    return list(changed)


def request_cancel(*, session: Session, job: Job) -> Job:
    """A queued job is cancelled at once; a running one is flagged and its worker stops it."""
    now = utcnow()
    done = _transition(
        session,
        Job.id == job.id,
        Job.status.in_(WAITING),
        status=JobStatus.CANCELLED,
        reason="cancelled before it started",
        finished_at=now,
        cancel_requested=True,
    )
    if not done:
        session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.RUNNING)
            .values(cancel_requested=True)
        )
    session.flush()
    session.refresh(job)
    return job


DIED = "the worker died (lease expired)"


def claim(
    *, session: Session, job_id: str, owner: str, lease_seconds: float, kind: str | None = None
) -> Job | None:
    """Take the lease on a queued or preempted job (or one whose lease expired) and bump its attempt.

    One conditional UPDATE, so two deliveries of the same task cannot both win. A claim that
    would make more than `max_attempts` counted attempts (preemptions are not counted) ends the
    job `failed` instead, with the last attempt's reason; None is returned then too. `kind`, the
    device kind of the claiming worker, becomes the queue of a job that waited in `any`: its
    later attempts wait for that kind.
    """
    now = utcnow()
    claimable = and_(
        Job.id == job_id,
        Job.cancel_requested.is_(False),
        or_(
            Job.status.in_(WAITING),
            and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now),
        ),
    )
    within = Job.attempt - Job.preemptions < Job.max_attempts  # the job's own, fixed at its submit
    claimed = _transition(
        session,
        claimable,
        within,
        status=JobStatus.RUNNING,
        attempt=Job.attempt + 1,
        lease_owner=owner,
        heartbeat_at=now,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        started_at=func.coalesce(Job.started_at, now),
        reason=None,
        **({} if kind is None else {"queue": case((Job.queue == "any", kind), else_=Job.queue)}),
    )
    if len(claimed) != 1:
        _end_cancelled(session, now, Job.id == job_id, Job.status.in_(WAITING))
        # Over the limit: the job fails here, never loops. The last reason, or a running job's lapsed lease.
        last = func.coalesce(
            Job.reason, literal(DIED)
        )  # a running job's reason is None unless its death is known
        _transition(
            session,
            claimable,
            ~within,
            status=JobStatus.FAILED,
            reason=literal("gave up after ")
            + cast(Job.max_attempts, String)
            + literal(" attempts: ")
            + last,
            finished_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
        return None
    return session.get(Job, job_id, populate_existing=True)


def heartbeat(
    *, session: Session, job_id: str, attempt: int, lease_seconds: float, progress: dict[str, Any]
) -> tuple[bool, bool, int]:
    """Renew the lease and record progress; returns (still ours, cancel requested, the job's seq; 0 if not ours)."""
    now = utcnow()
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING)
        .values(
            heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds), **progress
        )
        .returning(Job.cancel_requested, Job.seq)
    ).first()
    return (False, False, 0) if row is None else (True, bool(row[0]), int(row[1]))


def finish(
    *,
    session: Session,
    job_id: str,
    attempt: int,
    status: str,
    reason: str,
    values: dict[str, Any] | None = None,
) -> bool:
    """Write a terminal status; False if this attempt no longer owns the job."""
    assert status in TERMINAL  # noqa: S101 - callers pass constants
    changed = _transition(
        session,
        Job.id == job_id,
        Job.attempt == attempt,
        Job.status == JobStatus.RUNNING,
        status=status,
        reason=reason,
        finished_at=utcnow(),
        lease_owner=None,
        lease_expires_at=None,
        **(values or {}),
    )
    return len(changed) == 1


def preempt(*, session: Session, job_id: str, attempt: int, reason: str) -> bool:
    """This attempt was stopped by its worker's shutdown: the job waits to be enqueued again, and
    the attempt is not counted toward max_attempts. False if the attempt no longer owns the job,
    or if a cancel was asked for meanwhile: then the job ends `cancelled` instead."""
    ours = (Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING)
    _end_cancelled(session, utcnow(), *ours)
    changed = _transition(
        session,
        *ours,
        Job.cancel_requested.is_(False),
        status=JobStatus.PREEMPTED,
        reason=reason,
        preemptions=Job.preemptions + 1,
        lease_owner=None,
        lease_expires_at=None,
    )
    return len(changed) == 1


def reap_expired(*, session: Session, limit: int = 100) -> list[str]:
    """Running jobs whose lease lapsed (worker killed, machine gone) go back to `queued`; the caller
    enqueues the returned ids after commit. Conditional UPDATEs: of several reapers, one wins each row."""
    now = utcnow()
    ids = session.scalars(
        select(Job.id)
        .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
        .order_by(Job.id)
        .limit(limit)
    ).all()
    reaped = []
    for job_id in ids:
        lapsed = (Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
        _end_cancelled(
            session, now, *lapsed
        )  # a cancel asked for before its worker died is honoured
        changed = _transition(
            session,
            *lapsed,
            Job.cancel_requested.is_(False),
            status=JobStatus.QUEUED,
            reason=func.coalesce(Job.reason, DIED),
            lease_owner=None,
            lease_expires_at=None,
        )
        if changed:
            reaped.append(job_id)
    return reaped


CANCELLED_UNFINISHED = "cancelled by request; its attempt ended before it could stop"


def _end_cancelled(session: Session, now: datetime, *where: ColumnElement[bool]) -> list[Any]:
    """A job flagged for cancelling whose attempt ended any way other than success (its worker
    died, was shut down, or never claimed it) ends `cancelled`: it must not wait for ever."""
    return _transition(
        session,
        *where,
        Job.cancel_requested.is_(True),
        status=JobStatus.CANCELLED,
        reason=literal(CANCELLED_UNFINISHED)
        + func.coalesce(literal(" (") + Job.reason + literal(")"), literal("")),
        finished_at=now,
        lease_owner=None,
        lease_expires_at=None,
    )


def end_flagged_waiting(*, session: Session) -> int:
    """Queued or preempted jobs flagged for cancelling (left by a worker that died before it could
    stop them): ended `cancelled`. The sweeper's pass runs it."""
    now = utcnow()
    return len(_end_cancelled(session, now, Job.status.in_(WAITING)))


def waiting(*, session: Session, job_id: str) -> bool:
    """Is the job queued or preempted (waiting for a worker's claim)?"""
    return session.scalar(select(Job.status).where(Job.id == job_id)) in WAITING


def _waiting_since(stale: datetime) -> ColumnElement[bool]:
    return and_(Job.status.in_(WAITING), Job.cancel_requested.is_(False), Job.updated_at < stale)


def any_waiting(*, session: Session, grace_seconds: float) -> bool:
    """Is a job `queued` or `preempted` and untouched for `grace_seconds`? (One indexed read.)"""
    stale = utcnow() - timedelta(seconds=grace_seconds)
    return session.scalar(select(Job.id).where(_waiting_since(stale)).limit(1)) is not None


def sweep_waiting(*, session: Session, grace_seconds: float, limit: int = 100) -> list[str]:
    """Jobs `queued` or `preempted` and untouched for `grace_seconds` (their message was lost: the
    broker was down at submit, or flushed): touched and returned to be enqueued again after commit.
    A job is swept at most once per grace period, by one sweeper; an extra message is harmless
    (its claim fails)."""
    now = utcnow()
    waiting = _waiting_since(now - timedelta(seconds=grace_seconds))
    ids = session.scalars(select(Job.id).where(waiting).order_by(Job.updated_at).limit(limit)).all()
    swept = []
    for job_id in ids:
        result = session.execute(
            update(Job).where(Job.id == job_id, waiting).values(updated_at=now)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            swept.append(job_id)
    return swept


def lapse(*, session: Session, job_id: str, owner: str, reason: str) -> bool:
    """The training process holding this lease is known dead (killed, out of memory): expire its
    lease now with the reason, for the reaper's next pass, instead of waiting it out."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.RUNNING)
        .values(lease_expires_at=utcnow() - timedelta(seconds=1), reason=reason)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]

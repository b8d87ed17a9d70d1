"""Sweep rows, scoped to their tenant, and their trials (jobs with the sweep's id). The caller
commits. A trial's start and end are single conditional UPDATEs of the sweep row, so racing
API and worker processes never start more trials than the budget or the parallelism allows."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from core.tables import TERMINAL, Job, Sweep, SweepStatus, utcnow


def create_sweep(*, session: Session, sweep: Sweep) -> Sweep:
    session.add(sweep)
    session.flush()
    return sweep


def get_sweep(*, session: Session, tenant_id: str, sweep_id: str) -> Sweep | None:
    return session.scalar(select(Sweep).where(Sweep.id == sweep_id, Sweep.tenant_id == tenant_id))


def list_sweeps(
    *, session: Session, tenant_id: str, status: str | None, limit: int, offset: int
) -> tuple[list[Sweep], int]:
    """Newest first, and how many there are in all."""
    query = select(Sweep).where(Sweep.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Sweep.status == status)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Sweep.created_at.desc(), Sweep.id).limit(limit).offset(offset)
    )
    return list(rows), int(count)


def start_trial(*, session: Session, sweep_id: str) -> int | None:
    """Take a trial slot: the sweep is running, has budget left and fewer unfinished trials than
    its parallelism. Returns the trials started so far, this one included; None: no slot."""
    started = session.execute(
        update(Sweep)
        .where(
            Sweep.id == sweep_id,
            Sweep.status == SweepStatus.RUNNING,
            Sweep.trials_created < Sweep.trial_budget,
            Sweep.trials_created - Sweep.trials_finished < Sweep.parallelism,
        )
        .values(trials_created=Sweep.trials_created + 1, updated_at=utcnow())
        .returning(Sweep.trials_created)
    ).scalar()
    return None if started is None else int(started)


def end_trial(
    *,
    session: Session,
    sweep_id: str,
    job_id: str,
    value: float | None,
    direction: Literal["min", "max"],
) -> bool:
    """A trial's job ended: count it, and make it the sweep's best when its objective `value`
    (None for a trial that did not complete) beats the best so far. Returns whether it did."""
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(trials_finished=Sweep.trials_finished + 1, updated_at=utcnow())
    )
    if value is None:
        return False
    better: ColumnElement[bool] = (
        Sweep.best_value > value if direction == "min" else Sweep.best_value < value
    )
    improved = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, or_(Sweep.best_value.is_(None), better))
        .values(best_value=value, best_job_id=job_id)
    )
    return bool(improved.rowcount)  # type: ignore[attr-defined]


def finish_sweep(*, session: Session, sweep_id: str, status: SweepStatus, reason: str) -> bool:
    """Running -> succeeded, cancelled or failed, once: False if it had ended already."""
    ended = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status == SweepStatus.RUNNING)
        .values(status=status, reason=reason, finished_at=utcnow(), updated_at=utcnow())
    )
    return bool(ended.rowcount)  # type: ignore[attr-defined]


def trial_jobs(*, session: Session, sweep_id: str) -> list[Job]:
    """The sweep's trials, by trial number."""
    query = select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_number, Job.created_at)
    return list(session.scalars(query))


def unfinished_trial_ids(*, session: Session, sweep_id: str) -> list[str]:
    """The trials a cancel has to stop: queued, preempted or running."""
    query = select(Job.id).where(Job.sweep_id == sweep_id, Job.status.not_in(TERMINAL))
    return list(session.scalars(query.order_by(Job.trial_number)))


def count_trials(*, session: Session, sweep_id: str) -> dict[str, int]:
    """Trials per job status; a status no trial has is absent."""
    query = select(Job.status, func.count()).where(Job.sweep_id == sweep_id).group_by(Job.status)
    return {status: int(count) for status, count in session.execute(query).all()}

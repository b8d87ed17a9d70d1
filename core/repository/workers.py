"""The live workers, each a row its maintenance thread renews every pass; and the reasons of
the waiting jobs none of them can ever take."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from core.resources import Capacity, Need, waiting_reason
from core.tables import WAITING, Job, WorkerNode, utcnow

WAITING_PREFIX = "waiting for "


def register(*, session: Session, name: str, capacity: Capacity, concurrency: int) -> None:
    """Insert or renew this worker's row (an UPDATE first: one row per worker, renewed often)."""
    now = utcnow()
    values = {
        "queues": ",".join(capacity.queues),
        "gpus": capacity.gpus,
        "cpus": capacity.cpus,
        "memory_bytes": capacity.memory_bytes,
        "concurrency": concurrency,
        "seen_at": now,
    }
    found = session.execute(update(WorkerNode).where(WorkerNode.name == name).values(**values))
    if found.rowcount == 0:  # type: ignore[attr-defined]
        session.add(WorkerNode(name=name, started_at=now, **values))
        session.flush()


def unregister(*, session: Session, name: str) -> None:
    session.execute(delete(WorkerNode).where(WorkerNode.name == name))


def live(*, session: Session, within_seconds: float) -> list[tuple[str, Capacity]]:
    """Workers seen within the window, oldest first; older rows (workers killed) are deleted."""
    cutoff = utcnow() - timedelta(seconds=within_seconds)
    session.execute(delete(WorkerNode).where(WorkerNode.seen_at < cutoff - timedelta(hours=1)))
    rows = session.scalars(
        select(WorkerNode).where(WorkerNode.seen_at >= cutoff).order_by(WorkerNode.started_at)
    ).all()
    return [
        (
            row.name,
            Capacity(tuple(row.queues.split(",")), row.gpus, row.cpus, row.memory_bytes),
        )
        for row in rows
    ]


def refresh_waiting_reasons(
    *, session: Session, workers: list[tuple[str, Capacity]], limit: int = 200
) -> int:
    """Give each waiting job none of `workers` can take a reason saying what it waits for, and
    clear that reason from those one can take. Reasons of other kinds (a preemption's) stay.
    Returns the rows changed."""
    needs = session.execute(
        select(Job.queue, Job.gpus, Job.processes, Job.nodes, Job.memory_bytes)
        .where(Job.status.in_(WAITING))
        .group_by(Job.queue, Job.gpus, Job.processes, Job.nodes, Job.memory_bytes)
        .limit(limit)
    ).all()
    changed = 0
    for row in needs:
        need = Need(*row)
        reason = waiting_reason(need, workers)
        ours = (
            Job.status.in_(WAITING),
            Job.queue == need.queue,
            Job.gpus == need.gpus,
            Job.processes == need.processes,
            Job.nodes == need.nodes,
            Job.memory_bytes == need.memory_bytes,
            or_(Job.reason.is_(None), Job.reason.startswith(WAITING_PREFIX, autoescape=True)),
            func.coalesce(Job.reason, "") != (reason or ""),
        )
        # updated_at kept: the sweeper reads it as "untouched since", and a reason is no touch.
        result = session.execute(
            update(Job).where(*ours).values(reason=reason, updated_at=Job.updated_at)
        )
        changed += result.rowcount  # type: ignore[attr-defined]
    return changed

"""Metric points and checkpoint records: insert-or-ignore on their unique keys, so a retried
or replayed write never duplicates a row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.repository import events as events_repo
from core.tables import Checkpoint, Metric


def _insert_ignore(session: Session, table: Any) -> Insert:
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing()


# PostgreSQL, when a batch turns out to repeat points: the columns sent as arrays, unnested
# server-side, conflicts ignored.
_PG_BATCH = text(
    "INSERT INTO metric (job_id, attempt, step, epoch, name, value, time, seq) "
    "SELECT * FROM unnest(CAST(:job_id AS varchar[]), CAST(:attempt AS int[]), CAST(:step AS int[]), "
    "CAST(:epoch AS int[]), CAST(:name AS varchar[]), CAST(:value AS float8[]), CAST(:time AS timestamptz[]), "
    "CAST(:seq AS bigint[])) ON CONFLICT DO NOTHING"
)
_COLUMNS = ("job_id", "attempt", "step", "epoch", "name", "value", "time", "seq")
_COPY = f"COPY metric ({', '.join(_COLUMNS)}) FROM STDIN"


def _copy(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    raw = session.connection().connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(_COPY) as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row(tuple(row[c] for c in _COLUMNS))


def add_metrics(*, session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Rows carry job_id, attempt, step, epoch, name, value, time and seq (see
    `number_metrics`); written in one batch.

    On PostgreSQL a batch goes in by COPY, twice as fast as any INSERT here; a batch that repeats
    a point (a retried write, a resumed attempt) fails that COPY inside a savepoint and is written
    again with conflicts ignored. SQLite takes an insert-or-ignore executemany.
    """
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(_insert_ignore(session, Metric), list(rows))
        return
    from psycopg.errors import UniqueViolation

    try:
        with session.begin_nested():
            _copy(session, rows)
    except (IntegrityError, UniqueViolation):
        session.execute(_PG_BATCH, {column: [row[column] for row in rows] for column in _COLUMNS})


def number_metrics(*, session: Session, job_id: str, rows: Sequence[dict[str, Any]]) -> int:
    """Give one job's new rows the next numbers of its event sequence, in order; returns the last
    (the job's cursor). A row that turns out to repeat a point leaves a gap, which is harmless."""
    top = events_repo.allocate(session=session, job_id=job_id, count=len(rows))
    for offset, row in enumerate(rows, start=top - len(rows) + 1):
        row["seq"] = offset
    return top


def add_checkpoint(*, session: Session, row: dict[str, Any]) -> None:
    session.execute(_insert_ignore(session, Checkpoint), [row])


def drop_checkpoints(*, session: Session, job_id: str, epochs: Sequence[int]) -> None:
    """The records of checkpoints that pruning deleted."""
    if epochs:
        session.execute(
            delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.epoch.in_(epochs))
        )


def list_metrics(
    *,
    session: Session,
    job_id: str,
    name: str | None = None,
    after: int = 0,
    since_step: int | None = None,
    limit: int = 10_000,
) -> list[Metric]:
    """A page of the job's points in sequence order, after the cursor `after` (a seq)."""
    query = select(Metric).where(Metric.job_id == job_id, Metric.seq > after)
    if name is not None:
        query = query.where(Metric.name == name)
    if since_step is not None:
        query = query.where(Metric.step > since_step)
    return list(session.scalars(query.order_by(Metric.seq).limit(limit)))


def count_metrics(*, session: Session, job_id: str) -> int:
    return int(
        session.scalar(select(func.count()).select_from(Metric).where(Metric.job_id == job_id)) or 0
    )


def list_checkpoints(*, session: Session, job_id: str) -> list[Checkpoint]:
    return list(
        session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.epoch)
        )
    )

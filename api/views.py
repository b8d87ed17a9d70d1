"""Database rows as their HTTP schemas, and events as server-sent event frames."""

from __future__ import annotations

from typing import Any

from api.schemas import JobPublic, JobState, MetricPoint, Progress, StatusEvent
from core.repository.events import Event
from core.spec import JobSpec
from core.tables import Metric


def to_state(job: Any) -> JobState:
    """A job row (ORM object or Core row of the job table), without its spec."""
    return JobState(
        id=job.id,
        name=job.name,
        status=job.status,
        reason=job.reason,
        attempt=job.attempt,
        progress=Progress(epoch=job.epoch, epochs=job.epochs, step=job.step, steps=job.steps),
        metrics=job.latest_metrics or {},
        test_metrics=job.test_metrics or {},
        parameters=job.parameters,
        estimated_memory_bytes=job.estimated_memory_bytes,
        device=job.device,
        precision=job.precision,
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        seq=job.seq,
        trained_seconds=job.trained_seconds,
    )


def to_public(job: Any) -> JobPublic:
    return JobPublic(**to_state(job).model_dump(), spec=JobSpec.model_validate(job.spec))


def to_point(row: Metric | Event) -> MetricPoint:
    return MetricPoint(
        seq=row.seq,
        step=row.step,
        epoch=row.epoch,
        name=row.name,
        value=row.value,
        attempt=row.attempt,
        time=row.time,
    )


def to_status(event: Event) -> StatusEvent:
    return StatusEvent(
        seq=event.seq,
        status=event.status,
        reason=event.reason,
        attempt=event.attempt,
        time=event.time,
    )


def frame(event: Event) -> str:
    """One SSE frame: `id` is the event's number, so Last-Event-ID resumes right after it."""
    if event.kind == "metric":
        return f"id: {event.seq}\nevent: metric\ndata: {to_point(event).model_dump_json()}\n\n"
    return f"id: {event.seq}\nevent: status\ndata: {to_status(event).model_dump_json()}\n\n"


def job_frame(state: JobState, cursor: int) -> str:
    """The job as it stands; not an entry of the sequence, so it carries the stream's cursor."""
    return f"id: {cursor}\nevent: job\ndata: {state.model_dump_json()}\n\n"

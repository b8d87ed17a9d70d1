"""/v1/jobs: submit, list, read, metrics, events, cancel, checkpoints."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import DBAPIError

from api.deps import CurrentTenant, SessionDep
from api.errors import ApiError, responses
from api.schemas import CheckpointPublic, CheckpointsPublic, JobPublic, JobsPublic, MetricPoint, MetricsPublic, Progress
from api.submit import submit_job
from core.db import session_scope, unreachable
from core.repository import jobs as jobs_repo
from core.repository import metrics as metrics_repo
from core.spec import JobSpec
from core.tables import TERMINAL, Job, Metric, Tenant

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=responses(401, 429, 503))
Status = Literal["queued", "running", "preempted", "succeeded", "failed", "cancelled"]


def to_public(job: Job) -> JobPublic:
    return JobPublic(
        id=job.id, name=job.name, status=job.status, reason=job.reason, attempt=job.attempt,  # type: ignore[arg-type]
        progress=Progress(epoch=job.epoch, epochs=job.epochs, step=job.step, steps=job.steps),
        metrics=job.latest_metrics or {}, test_metrics=job.test_metrics or {}, parameters=job.parameters,
        estimated_memory_bytes=job.estimated_memory_bytes, device=job.device, cancel_requested=job.cancel_requested,
        created_at=job.created_at, updated_at=job.updated_at, started_at=job.started_at, finished_at=job.finished_at,
        spec=JobSpec.model_validate(job.spec),
    )  # fmt: skip


def to_point(row: Metric) -> MetricPoint:
    return MetricPoint(step=row.step, epoch=row.epoch, name=row.name, value=row.value, attempt=row.attempt,
                       time=row.time)  # fmt: skip


def owned_job(session: SessionDep, tenant: Tenant, job_id: str) -> Job:
    """Another tenant's job is indistinguishable from a missing one: 404."""
    job = jobs_repo.get_job(session=session, tenant_id=tenant.id, job_id=job_id)
    if job is None:
        raise ApiError(404, f"job {job_id} not found")
    return job


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic,
             responses={200: {"model": JobPublic, "description": "the job this Idempotency-Key already created"},
                        **responses(400, 409, 413)})  # fmt: skip
def create_job(
    session: SessionDep,
    tenant: CurrentTenant,
    job_in: JobSpec,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobPublic:
    job, created = submit_job(session=session, tenant=tenant, spec=job_in, idempotency_key=idempotency_key)
    if not created:
        response.status_code = status.HTTP_200_OK
    return to_public(job)


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    tenant: CurrentTenant,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobsPublic:
    jobs, count = jobs_repo.list_jobs(session=session, tenant_id=tenant.id, status=status, limit=limit, offset=offset)
    return JobsPublic(data=[to_public(j) for j in jobs], count=count)


@router.get("/{job_id}", response_model=JobPublic, responses=responses(404))
def get_job(session: SessionDep, tenant: CurrentTenant, job_id: str) -> JobPublic:
    return to_public(owned_job(session, tenant, job_id))


@router.get("/{job_id}/metrics", response_model=MetricsPublic, responses=responses(404))
def get_metrics(
    session: SessionDep,
    tenant: CurrentTenant,
    job_id: str,
    name: Annotated[str | None, Query(max_length=64)] = None,
    since_step: Annotated[int | None, Query(ge=-1)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> MetricsPublic:
    owned_job(session, tenant, job_id)
    rows = metrics_repo.list_metrics(session=session, job_id=job_id, name=name, since_step=since_step, limit=limit)
    points = [to_point(r) for r in rows]
    return MetricsPublic(data=points, count=len(points))


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=responses(404, 409))
def cancel_job(session: SessionDep, tenant: CurrentTenant, job_id: str) -> JobPublic:
    job = owned_job(session, tenant, job_id)
    if job.status in TERMINAL:
        raise ApiError(409, f"job {job_id} already ended: {job.status}")
    return to_public(jobs_repo.request_cancel(session=session, job=job))


@router.get("/{job_id}/checkpoints", response_model=CheckpointsPublic, responses=responses(404))
def list_checkpoints(session: SessionDep, tenant: CurrentTenant, job_id: str) -> CheckpointsPublic:
    owned_job(session, tenant, job_id)
    rows = metrics_repo.list_checkpoints(session=session, job_id=job_id)
    data = [CheckpointPublic(epoch=r.epoch, attempt=r.attempt, sha256=r.sha256, metrics=r.metrics,
                             created_at=r.created_at) for r in rows]  # fmt: skip
    return CheckpointsPublic(data=data, count=len(data))


def _snapshot(tenant_id: str, job_id: str, since_step: int) -> tuple[JobPublic | None, list[MetricPoint]]:
    with session_scope() as session:
        job = jobs_repo.get_job(session=session, tenant_id=tenant_id, job_id=job_id)
        if job is None:
            return None, []
        rows = metrics_repo.list_metrics(session=session, job_id=job_id, name=None, since_step=since_step, limit=5000)
        return to_public(job), [to_point(r) for r in rows]


@router.get("/{job_id}/events", response_class=StreamingResponse, responses=responses(404))
def stream_events(session: SessionDep, tenant: CurrentTenant, job_id: str) -> StreamingResponse:
    """Server-sent events: `status` when the job changes, `metric` for each new point; ends when the job does."""
    owned_job(session, tenant, job_id)
    tenant_id = tenant.id

    async def events() -> AsyncIterator[str]:
        last_status, since = "", -1
        while True:
            try:
                job, points = await run_in_threadpool(_snapshot, tenant_id, job_id, since)
            except DBAPIError as exc:  # the database is down for a while: the stream waits, it does not end
                if not unreachable(exc):
                    raise
                yield ": the database is unreachable; waiting\n\n"
                await asyncio.sleep(1.0)
                continue
            if job is None:
                return
            for point in points:
                since = max(since, point.step)
                yield f"event: metric\ndata: {point.model_dump_json()}\n\n"
            state = json.dumps([job.status, job.progress.model_dump(), job.reason])
            if state != last_status:
                last_status = state
                yield f"event: status\ndata: {job.model_dump_json(exclude={'spec'})}\n\n"
            if job.status in TERMINAL:
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

"""/v1/jobs: submit, list, read, summary, metrics, cancel, checkpoints (events:
api/routes/events.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from api.deps import CurrentTenant, SessionDep, SessionRoute, SettingsDep, current_tenant
from api.errors import ApiError, responses
from api.schemas import (
    MAX_SEQ,
    CheckpointPublic,
    CheckpointsPublic,
    JobPublic,
    JobsPublic,
    JobSummary,
    MetricsPublic,
)
from api.submit import submit_job
from api.summary import to_summary
from api.views import to_point, to_public
from core.db import session_scope
from core.repository import jobs as jobs_repo
from core.repository import metrics as metrics_repo
from core.spec import AnyJob
from core.tables import TERMINAL, Job, JobStatus, Tenant

router = APIRouter(
    prefix="/v1/jobs", tags=["jobs"], responses=responses(401, 429, 503), route_class=SessionRoute
)


def owned_job(session: SessionDep, tenant: Tenant, job_id: str) -> Job:
    """Another tenant's job is indistinguishable from a missing one: 404."""
    job = jobs_repo.get_job(session=session, tenant_id=tenant.id, job_id=job_id)
    if job is None:
        raise ApiError(404, f"job {job_id} not found")
    return job


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    responses={
        200: {"model": JobPublic, "description": "the job this Idempotency-Key already created"},
        **responses(400, 409, 413),
    },
)
def create_job(
    session: SessionDep,
    tenant: CurrentTenant,
    job_in: AnyJob,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobPublic:
    job, created = submit_job(
        session=session, tenant=tenant, spec=job_in, idempotency_key=idempotency_key
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return to_public(job)


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    tenant: CurrentTenant,
    status: JobStatus | None = None,
    name: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="only jobs whose name holds this text"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobsPublic:
    jobs, count = jobs_repo.list_jobs(
        session=session,
        tenant_id=tenant.id,
        status=status,
        name=name,
        limit=limit,
        offset=offset,
    )
    return JobsPublic(data=[to_public(j) for j in jobs], count=count)


@router.get("/{job_id}", response_model=JobPublic, responses=responses(404))
def get_job(job_id: str, authorization: Annotated[str | None, Header()] = None) -> Response:
    """What every polling dashboard calls: one thread hop, key and job read in one short session
    and the JSON rendered there (no dependency hops, no response-validation hop): under load, each
    hop is another wait in the event loop's queue."""
    with session_scope() as session:
        job = owned_job(session, current_tenant(session, authorization), job_id)
        return Response(to_public(job).model_dump_json(), media_type="application/json")


@router.get("/{job_id}/summary", response_model=JobSummary, responses=responses(404))
def get_summary(job_id: str, authorization: Annotated[str | None, Header()] = None) -> Response:
    """The submit's dry run (layers, output shapes, parameters) and what the model takes (input
    shape, task, classes, the raw value range of images). Read as GET /v1/jobs/{id} is: one thread
    hop and one short session (the dashboard opens it beside the job's own polls)."""
    with session_scope() as session:
        job = owned_job(session, current_tenant(session, authorization), job_id)
        return Response(to_summary(job).model_dump_json(), media_type="application/json")


@router.get("/{job_id}/metrics", response_model=MetricsPublic, responses=responses(404))
def get_metrics(
    session: SessionDep,
    tenant: CurrentTenant,
    job_id: str,
    name: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_SEQ, description="the cursor: points numbered (seq) above it")
    ] = 0,
    since_step: Annotated[
        int | None, Query(ge=-1, le=MAX_SEQ, description="only points of later steps (a filter)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> MetricsPublic:
    """The job's points in sequence order, a page at a time: pass `next` as `after` for the next
    page (`has_more` says whether the page was full). Points of one step never straddle a page
    boundary unseen, since the cursor is the point's own number, not its step."""
    owned_job(session, tenant, job_id)
    rows = metrics_repo.list_metrics(
        session=session, job_id=job_id, name=name, after=after, since_step=since_step, limit=limit
    )
    points = [to_point(r) for r in rows]
    return MetricsPublic(
        data=points,
        count=len(points),
        next=points[-1].seq if points else after,
        has_more=len(points) == limit,
    )


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=responses(404, 409))
def cancel_job(session: SessionDep, tenant: CurrentTenant, job_id: str) -> JobPublic:
    job = owned_job(session, tenant, job_id)
    if job.status in TERMINAL:
        raise ApiError(409, f"job {job_id} already ended: {job.status}")
    return to_public(jobs_repo.request_cancel(session=session, job=job))


@router.get("/{job_id}/checkpoints", response_model=CheckpointsPublic, responses=responses(404))
def list_checkpoints(
    session: SessionDep, tenant: CurrentTenant, settings: SettingsDep, job_id: str
) -> CheckpointsPublic:
    """The checkpoints that exist (pruning deletes older ones, per `fit.keep_checkpoints`)."""
    owned_job(session, tenant, job_id)
    rows = metrics_repo.list_checkpoints(session=session, job_id=job_id)
    # Records from before pruning removed its rows, or of files lost since, are not shown.
    data = [
        CheckpointPublic(
            epoch=r.epoch,
            attempt=r.attempt,
            sha256=r.sha256,
            metrics=r.metrics,
            created_at=r.created_at,
        )
        for r in rows
        if (settings.artifacts_dir / r.path).exists()
    ]
    return CheckpointsPublic(
        data=data, count=len(data), resume_from=data[-1].epoch if data else None
    )

"""/v1/sweeps: start a hyperparameter sweep, list and read sweeps (their trials and best trial),
cancel one. The trials are jobs (/v1/jobs lists them too); api/sweeps.py moves a sweep on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api import sweeps as sweep_service
from api.deps import CurrentTenant, SessionDep, SessionRoute
from api.errors import ApiError, responses
from api.sweep_schemas import SweepBest, SweepObjective, SweepPublic, SweepsPublic, SweepTrial
from core import sweeps
from core.repository import sweeps as sweeps_repo
from core.spec.sweep import SweepSpec
from core.tables import Sweep, SweepStatus, Tenant

router = APIRouter(
    prefix="/v1/sweeps",
    tags=["sweeps"],
    responses=responses(401, 429, 503),
    route_class=SessionRoute,
)


def owned_sweep(session: SessionDep, tenant: Tenant, sweep_id: str) -> Sweep:
    sweep = sweeps_repo.get_sweep(session=session, tenant_id=tenant.id, sweep_id=sweep_id)
    if sweep is None:
        raise ApiError(404, f"sweep {sweep_id} not found")
    return sweep


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SweepPublic,
    responses=responses(400, 413),
)
def create_sweep(session: SessionDep, tenant: CurrentTenant, sweep_in: SweepSpec) -> SweepPublic:
    sweep = sweep_service.create(session=session, tenant=tenant, spec=sweep_in)
    sweep_service.advance(sweep.id)  # its first trials, now rather than at the next tick
    session.refresh(sweep)
    return to_public(session, sweep)


@router.get("", response_model=SweepsPublic)
def list_sweeps(
    session: SessionDep,
    tenant: CurrentTenant,
    status: SweepStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SweepsPublic:
    rows, count = sweeps_repo.list_sweeps(
        session=session, tenant_id=tenant.id, status=status, limit=limit, offset=offset
    )
    return SweepsPublic(data=[to_public(session, row) for row in rows], count=count)


@router.get("/{sweep_id}", response_model=SweepPublic, responses=responses(404))
def get_sweep(session: SessionDep, tenant: CurrentTenant, sweep_id: str) -> SweepPublic:
    return to_public(session, owned_sweep(session, tenant, sweep_id))


@router.post("/{sweep_id}/cancel", response_model=SweepPublic, responses=responses(404, 409))
def cancel_sweep(session: SessionDep, tenant: CurrentTenant, sweep_id: str) -> SweepPublic:
    sweep = owned_sweep(session, tenant, sweep_id)
    if sweep.status != SweepStatus.RUNNING:
        raise ApiError(409, f"sweep {sweep_id} already ended: {sweep.status}")
    sweep_service.cancel(session=session, sweep=sweep)
    session.refresh(sweep)
    return to_public(session, sweep)


def to_public(session: SessionDep, sweep: Sweep) -> SweepPublic:
    spec = SweepSpec.stored(sweep.spec)
    jobs = {
        job.trial_number: job for job in sweeps_repo.trial_jobs(session=session, sweep_id=sweep.id)
    }
    trials = []
    for record in sweeps.trials(sweep.id, spec):
        job = jobs.get(record.number)
        if job is None and record.state == "fail":
            continue  # asked, then never a job: given back (429) or refused (the sweep's reason)
        trials.append(
            SweepTrial(
                number=record.number,
                job_id=None if job is None else job.id,
                status="starting" if job is None else job.status,
                reason=None if job is None else job.reason,
                params=record.params,
                value=record.value,
                epoch=0 if job is None else job.epoch,
            )
        )
    best = None
    if sweep.best_job_id is not None and sweep.best_value is not None:
        job = next((j for j in jobs.values() if j.id == sweep.best_job_id), None)
        params = next((t.params for t in trials if t.job_id == sweep.best_job_id), {})
        best = SweepBest(
            job_id=sweep.best_job_id,
            trial=None if job is None else job.trial_number,
            value=sweep.best_value,
            params=params,
            spec=spec.trial_spec(params).model_dump(mode="json") if params else {},
        )
    return SweepPublic(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        reason=sweep.reason,
        objective=SweepObjective(metric=spec.objective.metric, direction=spec.objective.direction),
        trial_budget=sweep.trial_budget,
        parallelism=sweep.parallelism,
        trials_created=sweep.trials_created,
        trials_finished=sweep.trials_finished,
        best=best,
        trials=trials,
        spec=sweep.spec,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
    )

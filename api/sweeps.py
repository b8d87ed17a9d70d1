"""Sweeps, driven from the API: a sweep's trials are ordinary jobs made by the submit path, so each
trial's spec is checked (dry run, the server's limits) as any job's.

`advance` is the one place a sweep moves: it tells Optuna and the sweep's counters of each trial
that ended (once per job, guarded by `job.trial_counted`), starts trials while the sweep has
budget and parallelism left, and ends the sweep once every trial has ended. Every API process
runs it for every running sweep each `SWEEP_TICK_SECONDS` (api/main.py); its steps are
conditional UPDATEs, so processes racing on one sweep never start or count a trial twice.
The worker's part is the pruner: each epoch's objective is reported to it, and a trial it stops
ends `pruned` (worker/sweep_trial.py).
"""

from __future__ import annotations

import logging
import math

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.submit import submit_job
from core import sweeps
from core.db import session_scope
from core.repository import jobs as jobs_repo
from core.repository import sweeps as sweeps_repo
from core.spec.sweep import SweepSpec
from core.tables import Job, JobStatus, Sweep, SweepStatus, Tenant

log = logging.getLogger("fitserve.api")
OUTCOMES: dict[str, sweeps.Outcome] = {
    JobStatus.SUCCEEDED: "complete",
    JobStatus.PRUNED: "pruned",
}


def create(*, session: Session, tenant: Tenant, spec: SweepSpec) -> Sweep:
    """The sweep row and its study; its first trials start on the next advance."""
    sweep = sweeps_repo.create_sweep(
        session=session,
        sweep=Sweep(
            tenant_id=tenant.id,
            name=spec.name or spec.base.name,
            spec=spec.model_dump(mode="json"),
            trial_budget=spec.trial_budget,
            parallelism=spec.parallelism,
        ),
    )
    session.commit()  # first: on SQLite, Optuna's connection writes only once ours is done
    sweeps.create_study(sweep.id, spec)
    return sweep


def cancel(*, session: Session, sweep: Sweep) -> None:
    """Ends the sweep and asks each unfinished trial to stop (queued ones end at once)."""
    sweeps_repo.finish_sweep(
        session=session,
        sweep_id=sweep.id,
        status=SweepStatus.CANCELLED,
        reason="cancelled by request",
    )
    for job_id in sweeps_repo.unfinished_trial_ids(session=session, sweep_id=sweep.id):
        job = session.get(Job, job_id)
        if job is not None:
            jobs_repo.request_cancel(session=session, job=job)
    session.commit()


def advance_all() -> None:
    with session_scope() as session:
        running = session.scalars(select(Sweep.id).where(Sweep.status == SweepStatus.RUNNING))
        ids = list(running)
    for sweep_id in ids:
        try:
            advance(sweep_id)
        except Exception:  # one sweep's trouble must not stall the others
            log.exception("sweep %s: advancing failed; trying again next tick", sweep_id)


def advance(sweep_id: str) -> None:
    with session_scope() as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None or sweep.status != SweepStatus.RUNNING:
            return
        spec = SweepSpec.stored(sweep.spec)
        _count_ended(session, sweep, spec)
    while _start_one(sweep_id, spec):
        pass
    with session_scope() as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is not None and sweep.trials_finished >= sweep.trial_budget:
            sweeps_repo.finish_sweep(
                session=session,
                sweep_id=sweep_id,
                status=SweepStatus.SUCCEEDED,
                reason=_summary(sweep, spec),
            )


def _count_ended(session: Session, sweep: Sweep, spec: SweepSpec) -> None:
    """Tell Optuna and the counters of each trial whose job ended, once per job. Optuna is told
    first, outside our transaction (its own connection writes; on SQLite ours must not hold the
    lock meanwhile); telling twice is harmless, counting twice is what `trial_counted` stops."""
    ended = session.scalars(
        select(Job).where(
            Job.sweep_id == sweep.id,
            Job.status.in_([*OUTCOMES, JobStatus.FAILED, JobStatus.CANCELLED]),
            Job.trial_counted.is_(False),
        )
    ).all()
    metric = spec.objective.metric
    session.commit()
    for job in ended:
        outcome = OUTCOMES.get(job.status, "fail")
        value = (job.latest_metrics or {}).get(metric)
        value = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
        if job.trial_number is not None:
            sweeps.tell(sweep.id, spec, job.trial_number, outcome, value)
        counted = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.trial_counted.is_(False))
            .values(trial_counted=True)
        )
        if counted.rowcount == 1:  # type: ignore[attr-defined]  # else another process did
            sweeps_repo.end_trial(
                session=session,
                sweep_id=sweep.id,
                job_id=job.id,
                value=value if outcome == "complete" else None,
                direction=spec.objective.direction,
            )
        session.commit()


def _start_one(sweep_id: str, spec: SweepSpec) -> bool:
    """Start a trial if the sweep has a slot; False when it has none (or cannot start one now).
    The slot is taken and committed before Optuna is asked (its own connection writes), and
    given back if the trial's job cannot be made."""
    with session_scope() as session:
        if sweeps_repo.start_trial(session=session, sweep_id=sweep_id) is None:
            return False
    asked = sweeps.ask(sweep_id, spec)
    with session_scope() as session:
        sweep = session.get(Sweep, sweep_id)
        tenant = None if sweep is None else session.get(Tenant, sweep.tenant_id)
        if sweep is None or tenant is None or asked is None:  # a grid spent early
            session.execute(
                update(Sweep)
                .where(Sweep.id == sweep_id)
                .values(
                    trial_budget=Sweep.trials_created - 1, trials_created=Sweep.trials_created - 1
                )
            )
            return False
        try:
            trial = spec.trial_spec(asked.params)
            trial = trial.model_copy(update={"name": f"{sweep.name}-trial-{asked.number}"[:100]})
            submit_job(
                session=session,
                tenant=tenant,
                spec=trial,
                idempotency_key=f"sweep:{sweep_id}:{asked.number}",
                trial=(sweep_id, asked.number),
            )
        except ApiError as exc:
            return _not_started(session, sweep_id, spec, asked.number, exc)
        except ValidationError as exc:
            error = ApiError(422, exc.errors()[0]["msg"])
            return _not_started(session, sweep_id, spec, asked.number, error)
    return True


def _not_started(
    session: Session, sweep_id: str, spec: SweepSpec, number: int, error: ApiError
) -> bool:
    """A trial the submit refused: over the tenant's active jobs (429), its slot is given back and
    a later tick tries again; refused for what it is (422), it counts as an ended trial. Optuna's
    trial is told failed either way."""
    session.rollback()
    sweeps.tell(sweep_id, spec, number, "fail")
    if error.status == 429:
        session.execute(
            update(Sweep)
            .where(Sweep.id == sweep_id)
            .values(trials_created=Sweep.trials_created - 1)
        )
        return False
    log.info("sweep %s: trial %s refused: %s", sweep_id, number, error.message)
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(
            trials_finished=Sweep.trials_finished + 1,
            reason=f"trial {number} was refused: {error.message}",
        )
    )
    return True


def _summary(sweep: Sweep, spec: SweepSpec) -> str:
    metric = spec.objective.metric
    if sweep.best_job_id is None:
        return f"{sweep.trials_finished} trials ended; none completed with {metric}"
    return (
        f"{sweep.trials_finished} trials ended; the best, job {sweep.best_job_id}, reached "
        f"{metric} {sweep.best_value:.6g}"
    )

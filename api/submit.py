"""From a posted spec to a queued job: resolve the dataset, check the server's maxima and the
tenant's active-job quota, dry-run the model (and check its parameter count), write the row,
commit, and only then enqueue."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import quota
from api.errors import ApiError, unprocessable
from api.summary import build_summary
from core.datasets import DatasetError, builtin_description, builtin_info
from core.queue import enqueue_training
from core.repository import datasets as datasets_repo
from core.repository import jobs as jobs_repo
from core.repository import workers as workers_repo
from core.resources import Need, need_of, pool_refusal, waiting_reason
from core.settings import Settings, get_settings
from core.spec import DataInfo, JobSpec
from core.spec.resources import data_parallel_refusal
from core.tables import Job, JobStatus, Tenant
from models.errors import SpecError
from models.validation import dry_run

log = logging.getLogger("fitserve.api")


class Resolved(NamedTuple):
    """The spec with an uploaded dataset's target filled in, its DataInfo, the dataset id, its
    number of samples (before the test and validation splits), its name and its description."""

    spec: JobSpec
    info: DataInfo
    dataset_id: str | None
    samples: int
    name: str
    description: dict[str, Any]


def resolve_dataset(session: Session, tenant: Tenant, spec: JobSpec) -> Resolved:
    ds = spec.dataset
    if ds.id is None:
        try:
            info = builtin_info(ds)
            samples = quota.dataset_samples(spec, None)
        except DatasetError as exc:
            raise unprocessable(str(exc), ("body", "dataset")) from exc
        return Resolved(spec, info, None, samples, ds.name or "", builtin_description(ds))
    row = datasets_repo.get_dataset(session=session, tenant_id=tenant.id, dataset_id=ds.id)
    if row is None:
        raise unprocessable(f"dataset {ds.id} does not exist", ("body", "dataset", "id"))
    if ds.target is not None and ds.target != row.target:
        raise unprocessable(
            f"dataset {ds.id} was uploaded with target {row.target!r}; upload it again to predict {ds.target!r}",
            ("body", "dataset", "target"),
        )
    info = DataInfo.model_validate(row.description["info"])
    # The task given at upload holds for training too, unless the spec names one.
    update = {"target": row.target, "task": ds.task or info.task}
    resolved = spec.model_copy(update={"dataset": ds.model_copy(update=update)})
    samples = quota.dataset_samples(resolved, row.description)
    return Resolved(resolved, info, row.id, samples, row.name, row.description)


def submit_job(
    *,
    session: Session,
    tenant: Tenant,
    spec: JobSpec,
    idempotency_key: str | None,
    trial: tuple[str, int] | None = None,
) -> tuple[Job, bool]:
    """(job, created). A repeated Idempotency-Key returns the first job; with another spec, 409.
    `trial`: the sweep and trial number the job runs for (api/sweeps.py)."""
    settings = get_settings()
    dataset = resolve_dataset(session, tenant, spec)
    spec, info, dataset_id, samples = dataset[:4]
    if idempotency_key is not None:
        existing = jobs_repo.get_by_idempotency_key(
            session=session, tenant_id=tenant.id, key=idempotency_key
        )
        if existing is not None:
            if existing.spec != spec.model_dump(mode="json"):
                raise ApiError(409, "this Idempotency-Key was used for a different spec")
            return existing, False
    quota.check_spec(spec, settings, samples)
    if spec.fit.max_seconds is not None and spec.fit.max_seconds > settings.max_job_seconds:
        raise unprocessable(
            f"fit.max_seconds {spec.fit.max_seconds} exceeds the server's limit of {settings.max_job_seconds:g} s",
            ("body", "fit", "max_seconds"),
        )
    quota.check_active_jobs(session, tenant.id, settings)
    check_resources(spec)
    counted = quota.meta_dry_run(spec, info)
    if counted is not None:
        quota.check_parameters(spec, settings, counted.parameters)
        quota.check_memory(spec, settings, counted)
    try:
        report = dry_run(spec, info)
    except SpecError as exc:
        raise unprocessable(exc.message, ("body", *exc.loc)) from exc
    quota.check_parameters(spec, settings, report.parameters)
    quota.lock_tenant(
        session, tenant.id
    )  # held to the commit below: the count and the insert are one step
    if (
        dataset_id is not None
        and datasets_repo.get_dataset(session=session, tenant_id=tenant.id, dataset_id=dataset_id)
        is None
    ):
        raise unprocessable(
            f"dataset {dataset_id} does not exist", ("body", "dataset", "id")
        )  # deleted meanwhile
    quota.check_active_jobs(session, tenant.id, settings)
    need = need_of(spec, report.estimated_memory_bytes)
    refusal = None if settings.pools is None else pool_refusal(settings.pools, need)
    if refusal is not None:
        raise unprocessable(refusal[1], ("body", "resources", refusal[0]))
    try:
        job = jobs_repo.create_job(
            session=session,
            job=Job(
                tenant_id=tenant.id,
                name=spec.name,
                spec=spec.model_dump(mode="json"),
                idempotency_key=idempotency_key,
                dataset_id=dataset_id,
                status=JobStatus.QUEUED,
                epochs=spec.fit.epochs,
                parameters=report.parameters,
                max_attempts=settings.max_attempts,
                estimated_memory_bytes=report.estimated_memory_bytes,
                summary=build_summary(report, info, dataset.description, dataset.name, dataset_id),
                queue=need.queue,
                priority=spec.priority,
                gpus=need.gpus,
                processes=need.processes,
                nodes=need.nodes,
                memory_bytes=need.memory_bytes,
                reason=waiting_for(session, need, settings),
                sweep_id=None if trial is None else trial[0],
                trial_number=None if trial is None else trial[1],
            ),
        )
        session.commit()  # the worker must find the row: commit, then enqueue
    except IntegrityError as exc:  # the same Idempotency-Key, submitted concurrently
        session.rollback()
        raise ApiError(
            409, "a job with this Idempotency-Key is being created; retry to get it"
        ) from exc
    try:
        enqueue_training(job.id, job.queue)
    except (
        Exception
    ):  # the row is the truth: the workers' sweeper enqueues a queued job left without a message
        log.warning(
            "job %s: the broker is unreachable; the sweeper will enqueue it", job.id, exc_info=True
        )
    return job, True


def check_resources(spec: JobSpec) -> None:
    """A job that cannot train on its ranks (a family without a backprop step, a global batch
    too small to share out): refused before the dry runs."""
    refusal = data_parallel_refusal(spec.family, spec.fit.batch_size, spec.resources.ranks)
    if refusal is not None:
        raise unprocessable(refusal[1], ("body", *refusal[0]))
    r = spec.resources
    for field, value in (("processes", r.processes), ("nodes", r.nodes)):
        if value > 1:  # until the data-parallel engine lands (worker/fitting.py calls it)
            raise unprocessable(
                f"{field} {value}: this server trains a job in one process on one worker",
                ("body", "resources", field),
            )


def waiting_for(session: Session, need: Need, settings: Settings) -> str | None:
    """The new job's reason while it waits: what it waits for, when no live worker can take it."""
    live = workers_repo.live(
        session=session, within_seconds=3 * settings.sweep_interval_seconds + 5
    )
    return waiting_reason(need, live)


def warm_up() -> None:
    """Pay a first submit's one-time costs when the API starts (scikit-learn's dataset loaders,
    torch's first model built on the meta device: about 3.5 s here), not in a user's request."""
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {
                "layers": [
                    {"type": "flatten"},
                    {"type": "dense", "units": 10, "activation": "softmax"},
                ]
            },
            "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
        }
    )
    info = builtin_info(spec.dataset)
    quota.meta_dry_run(spec, info)
    dry_run(spec, info)

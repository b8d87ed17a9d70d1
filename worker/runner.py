"""One training job, start to terminal state: claim the lease, load data, train with the
reporter, write the outcome. Every path out of here leaves the job row terminal with a
reason, unless another attempt owns it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from pydantic import ValidationError

from core.datasets import DatasetError
from core.db import patiently, session_scope
from core.logging import bind_job
from core.queue import enqueue_training
from core.repository import claims as claims_repo
from core.repository import jobs as jobs_repo
from core.resources import Capacity
from core.settings import Settings, get_settings
from core.spec import JobSpec
from core.storage import job_dir
from core.tables import Job, JobStatus
from models.checkpoint import CheckpointError
from models.errors import SpecError
from worker.capacity import device_for
from worker.datasource import load_train_data, upload_resolver
from worker.fitting import fit, rendezvous_address
from worker.nodes import join_patiently, run_node
from worker.placement import WorkerRefused, place_here
from worker.reporter import STOPPING, JobReporter
from worker.sweep_trial import pruner_for
from worker.training.data import RankFailed
from worker.training.engine import TrainingFailed, TrainResult

log = logging.getLogger("fitserve.worker")
USER_ERRORS = (
    TrainingFailed,
    SpecError,
    DatasetError,
    CheckpointError,
    ValidationError,
    WorkerRefused,
)


def describe_outcome(
    spec: JobSpec, result: TrainResult, reporter: JobReporter
) -> tuple[JobStatus, str]:
    if result.status == "cancelled":
        return (
            JobStatus.CANCELLED,
            f"cancelled by request at epoch {reporter.epoch}, step {reporter.batch}",
        )
    if result.status == "early_stopped" and spec.fit.early_stopping is not None:
        es = spec.fit.early_stopping
        return JobStatus.SUCCEEDED, (
            f"stopped early at epoch {result.epochs_done}: {es.monitor} did not improve for "
            f"{es.patience + 1} epochs (best epoch {result.best_epoch})"
        )
    return JobStatus.SUCCEEDED, f"completed {result.epochs_done} epochs"


def job_seconds(spec: JobSpec, settings: Settings) -> float:
    """The job's time limit: its own `fit.max_seconds`, never over the server's maximum."""
    own = spec.fit.max_seconds
    return settings.max_job_seconds if own is None else min(float(own), settings.max_job_seconds)


def run_job(job_id: str, owner: str) -> str:
    """Claim and train this job (an old message that names only its job; the tests). Returns what
    happened: skipped, lost, preempted, or the terminal status written."""
    bind_job(job_id)  # no attempt yet (and not the previous job's)
    try:
        return _run(lambda settings: _claim(job_id, owner, settings), owner, f"job {job_id}")
    finally:
        bind_job(None)  # what this process logs next is not this job's


def run_next(queue: str, owner: str, capacity: Capacity) -> str:
    """Join a multi-node job of `queue` whose node 0 waits for its other nodes, or else claim the
    next job this worker can take (core/repository/claims.py) and train it."""
    joined = join_patiently(queue, owner, capacity, get_settings())
    if joined is not None:
        return run_node(joined)
    try:
        return _run(
            lambda settings: _claim_next(queue, owner, capacity, settings),
            owner,
            f"queue {queue}",
        )
    finally:
        bind_job(None)


def _run(claim: Callable[[Settings], Claimed | None], owner: str, what: str) -> str:
    settings = get_settings()
    claimed = patiently(
        lambda: claim(settings),
        patience=settings.database_patience_seconds,
        what=f"{what}: claim",
        stop=STOPPING,
    )
    if claimed is None:
        log.info(
            "%s: nothing claimable (gone, running elsewhere, finished, cancelled or out of "
            "attempts); skipping",
            what,
        )
        return "skipped"
    job_id = claimed.job_id
    attempt, trained_before = claimed.attempt, claimed.trained_seconds
    bind_job(
        job_id, attempt
    )  # every record of this process from here on carries job_id and attempt
    log.info("job %s attempt %s: claimed by %s", job_id, attempt, owner)
    if claimed.nodes > 1:  # wake workers for its other nodes, which join node 0's rendezvous
        _wake(job_id, claimed.queue, claimed.nodes - 1)
    reporter = JobReporter(job_id, attempt, settings, trained_before, claimed.epoch)
    reporter.start()
    status, reason, values = JobStatus.FAILED, "", {}
    rank_failed: str | None = None
    try:
        _check_memory(claimed.estimated_memory_bytes, settings)
        placement = place_here(  # raises WorkerRefused
            claimed.device, claimed.precision, device_for(claimed.queue, settings.device)
        )
        spec = JobSpec.model_validate(claimed.spec)
        limit = job_seconds(spec, settings)
        reporter.deadline = (
            time.monotonic() + limit - trained_before
        )  # the limit counts every attempt
        data = load_train_data(spec, upload_resolver(settings, claimed.tenant_id))
        pruner = pruner_for(claimed.sweep_id, claimed.trial_number)
        result = fit(
            spec,
            data,
            job_dir(settings.artifacts_dir, job_id),
            [reporter] if pruner is None else [reporter, pruner],
            placement,
            job_id=job_id,
            attempt=attempt,
            rendezvous=claimed.rendezvous,
            settings=settings,
        )
        status, reason = describe_outcome(spec, result, reporter)
        if pruner is not None and pruner.pruned_at is not None and not reporter.cancel.is_set():
            status, reason = JobStatus.PRUNED, pruner.reason
        if result.status == "cancelled" and reporter.timed_out and not reporter.cancel.is_set():
            status, reason = (
                JobStatus.FAILED,
                (
                    f"ran past its time limit of {limit:g} s over all its attempts (fit.max_seconds, at most "
                    f"{settings.max_job_seconds:g} s on this server); stopped at epoch {reporter.epoch}, step "
                    f"{reporter.batch}"
                ),
            )
        values = {"test_metrics": result.test_metrics, "epoch": result.epochs_done}
    except RankFailed as exc:  # no fault of the job's: it resumes, as after a killed process
        rank_failed = str(exc)
    except USER_ERRORS as exc:
        reason = str(exc)
    except (
        Exception
    ) as exc:  # the job must still end with a reason a user can read: no path, no traceback
        log.exception("job %s attempt %s: unexpected error", job_id, attempt)
        reason = f"internal error ({type(exc).__name__}); the server's log has the details under job {job_id}"
    finally:
        reporter.close()
    if reporter.lost.is_set():
        log.warning(
            "job %s attempt %s: lease lost to another attempt; not writing an outcome",
            job_id,
            attempt,
        )
        return "lost"
    if rank_failed is not None:  # the reporter stopped renewing the lease: now it can lapse
        return _lapse(job_id, owner, rank_failed, settings)
    # Stopped, not cancelled: its worker shuts down, or (several nodes) another node's did.
    stopped = STOPPING.is_set() or claimed.nodes > 1
    if stopped and status == JobStatus.CANCELLED and not reporter.cancel.is_set():
        return _preempt(job_id, claimed.queue, attempt, reporter)
    written = patiently(
        lambda: _finish(job_id, attempt, status, reason, values),
        patience=settings.database_patience_seconds,
        what=f"job {job_id}: outcome",
    )
    log.info(
        "job %s attempt %s: %s (%s)", job_id, attempt, status if written else "fenced off", reason
    )
    return status if written else "lost"


class Claimed(NamedTuple):
    """What an attempt needs of its job row, read in the claim's transaction."""

    job_id: str
    queue: str  # the device kind it waits for (an `any` job: the kind its first attempt took)
    attempt: int
    spec: dict[str, Any]
    tenant_id: str
    trained_seconds: float
    device: str | None  # and precision: what the first attempt began with, kept by every later one
    precision: str | None
    epoch: int
    estimated_memory_bytes: int
    nodes: int
    rendezvous: str | None  # node 0's, for a multi-node job
    sweep_id: str | None  # a sweep's trial: its sweep and trial number
    trial_number: int | None


def _claimed(job: Job | None) -> Claimed | None:
    if job is None:
        return None
    return Claimed(
        job.id,
        job.queue,
        job.attempt,
        job.spec,
        job.tenant_id,
        job.trained_seconds,
        job.device,
        job.precision,
        job.epoch,
        job.estimated_memory_bytes,
        job.nodes,
        job.rendezvous,
        job.sweep_id,
        job.trial_number,
    )


def _claim(job_id: str, owner: str, settings: Settings) -> Claimed | None:
    with session_scope() as session:
        return _claimed(
            jobs_repo.claim(
                session=session, job_id=job_id, owner=owner, lease_seconds=settings.lease_seconds
            )
        )


def _claim_next(queue: str, owner: str, capacity: Capacity, settings: Settings) -> Claimed | None:
    with session_scope() as session:
        job = claims_repo.claim_next(
            session=session,
            queue=queue,
            owner=owner,
            lease_seconds=settings.lease_seconds,
            capacity=capacity,
        )
        if job is not None and job.nodes > 1:  # node 0 hosts the rendezvous of this attempt
            address = rendezvous_address(settings)
            claims_repo.set_rendezvous(
                session=session, job_id=job.id, attempt=job.attempt, address=address
            )
            job.rendezvous = address
        return _claimed(job)


def _wake(job_id: str, queue: str, count: int) -> None:
    for _ in range(count):
        try:
            enqueue_training(job_id, queue)
        except Exception:  # its nodes wait at the rendezvous; the attempt times out and resumes
            log.exception("job %s: waking a worker for another node failed", job_id)


def _lapse(job_id: str, owner: str, reason: str, settings: Settings) -> str:
    """A rank of this attempt died: expire the lease with the reason, so the reaper re-queues the
    job at once and a later attempt resumes it from its last checkpoint (a counted attempt)."""

    def lapse() -> bool:
        with session_scope() as session:
            return jobs_repo.lapse(session=session, job_id=job_id, owner=owner, reason=reason)

    patiently(lapse, patience=settings.database_patience_seconds, what=f"job {job_id}: lapse")
    log.warning("job %s: %s; its lease is expired for the reaper", job_id, reason)
    return "killed"


def _check_memory(estimate: int, settings: Settings) -> None:
    """A worker may allow less than the API (MAX_JOB_MEMORY_BYTES set lower where it runs)."""
    if estimate > settings.max_job_memory_bytes:
        raise WorkerRefused(
            f"the job's training memory is estimated at {estimate:,} bytes, over this worker's limit "
            f"of {settings.max_job_memory_bytes:,} (MAX_JOB_MEMORY_BYTES where it runs)"
        )


def _finish(job_id: str, attempt: int, status: str, reason: str, values: dict[str, Any]) -> bool:
    with session_scope() as session:
        return jobs_repo.finish(
            session=session,
            job_id=job_id,
            attempt=attempt,
            status=status,
            reason=reason,
            values=values,
        )


def _preempt(job_id: str, queue: str, attempt: int, reporter: JobReporter) -> str:
    """The worker is shutting down: hand the job back (it resumes from its last epoch checkpoint)
    and enqueue it again; should the broker be unreachable, the sweeper enqueues it later."""
    reason = f"preempted at epoch {reporter.epoch}, step {reporter.batch}: its worker shut down"

    def preempt() -> bool:
        with session_scope() as session:
            return jobs_repo.preempt(session=session, job_id=job_id, attempt=attempt, reason=reason)

    written = patiently(
        preempt, patience=reporter.settings.database_patience_seconds, what=f"job {job_id}: preempt"
    )
    if not written:
        return "lost"
    log.info("job %s attempt %s: %s", job_id, attempt, reason)
    try:
        enqueue_training(job_id, queue)
    except Exception:
        log.exception(
            "job %s: enqueue after preemption failed; the sweeper will enqueue it", job_id
        )
    return "preempted"

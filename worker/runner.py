"""One training job, start to terminal state: claim the lease, load data, train with the
reporter, write the outcome. Every path out of here leaves the job row terminal with a
reason, unless another attempt owns it."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from core.datasets import DatasetError
from core.db import session_scope
from core.repository import datasets as datasets_repo
from core.repository import jobs as jobs_repo
from core.settings import Settings, get_settings
from core.spec import JobSpec
from core.storage import job_dir, upload_path
from models.checkpoint import CheckpointError
from models.errors import SpecError
from worker.datasource import load_train_data
from worker.reporter import JobReporter
from worker.training.engine import TrainingFailed, TrainResult, train

log = logging.getLogger("fitserve.worker")
USER_ERRORS = (TrainingFailed, SpecError, DatasetError, CheckpointError, ValidationError)


def _upload_resolver(settings: Settings, tenant_id: str):  # type: ignore[no-untyped-def]
    def resolve(dataset_id: str) -> Path:
        with session_scope() as session:
            row = datasets_repo.get_dataset(session=session, tenant_id=tenant_id, dataset_id=dataset_id)
            if row is None:
                raise DatasetError(f"dataset {dataset_id} does not exist")
            return upload_path(settings.artifacts_dir, row.id, row.format)

    return resolve


def describe_outcome(spec: JobSpec, result: TrainResult, reporter: JobReporter) -> tuple[str, str]:
    if result.status == "cancelled":
        return "cancelled", f"cancelled by request at epoch {reporter.epoch}, step {reporter.batch}"
    if result.status == "early_stopped" and spec.fit.early_stopping is not None:
        es = spec.fit.early_stopping
        return "succeeded", (f"stopped early at epoch {result.epochs_done}: {es.monitor} did not improve for "
                             f"{es.patience + 1} epochs (best epoch {result.best_epoch})")  # fmt: skip
    return "succeeded", f"completed {result.epochs_done} epochs"


def run_job(job_id: str, owner: str) -> str:
    """Returns what happened: skipped, lost, or the terminal status written."""
    settings = get_settings()
    with session_scope() as session:
        job = jobs_repo.claim(session=session, job_id=job_id, owner=owner, lease_seconds=settings.lease_seconds)
        if job is None:
            log.info("job %s: not claimable (gone, running elsewhere, finished or cancelled); skipping", job_id)
            return "skipped"
        attempt, raw_spec, tenant_id = job.attempt, job.spec, job.tenant_id
    log.info("job %s attempt %s: claimed by %s", job_id, attempt, owner)
    reporter = JobReporter(job_id, attempt, settings)
    status, reason, values = "failed", "", {}
    try:
        spec = JobSpec.model_validate(raw_spec)
        data = load_train_data(spec, _upload_resolver(settings, tenant_id))
        result = train(spec, data, job_dir(settings.artifacts_dir, job_id), [reporter], resume=True,
                       device=settings.device)  # fmt: skip
        status, reason = describe_outcome(spec, result, reporter)
        values = {"test_metrics": result.test_metrics, "epoch": result.epochs_done}
    except USER_ERRORS as exc:
        reason = str(exc)
    except Exception as exc:  # the job must still end with a reason a user can read
        log.exception("job %s attempt %s: unexpected error", job_id, attempt)
        reason = f"internal error ({type(exc).__name__}): {exc}"
    finally:
        reporter.close()
    if reporter.lost.is_set():
        log.warning("job %s attempt %s: lease lost to another attempt; not writing an outcome", job_id, attempt)
        return "lost"
    with session_scope() as session:
        written = jobs_repo.finish(session=session, job_id=job_id, attempt=attempt, status=status, reason=reason,
                                   values=values)  # fmt: skip
    log.info("job %s attempt %s: %s (%s)", job_id, attempt, status if written else "fenced off", reason)
    return status if written else "lost"

"""The worker's job runner called directly (no broker), against real migrated databases."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import update

from core.db import session_scope
from core.repository import metrics as metrics_repo
from core.repository import tenants as tenants_repo
from core.settings import get_settings
from core.storage import job_dir, upload_path
from core.tables import Dataset, Job
from tests.helpers import digits_mlp, take_queued_job_ids
from tests.test_engine import Recorder
from worker.datasource import load_train_data
from worker.runner import run_job
from worker.training.engine import train


def _submit(spec: dict[str, Any]) -> str:
    with session_scope() as s:
        tenant = tenants_repo.get_or_create_tenant(session=s, name="runner")
        job = Job(
            tenant_id=tenant.id, name="t", spec=spec, epochs=spec.get("fit", {}).get("epochs", 1)
        )
        s.add(job)
        s.flush()
        return job.id


def _job(job_id: str) -> Job:
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def test_run_job_trains_and_records_everything(service_env: str) -> None:
    job_id = _submit(digits_mlp(epochs=2).model_dump(mode="json"))
    assert run_job(job_id, "test-worker") == "succeeded"
    job = _job(job_id)
    assert (job.status, job.reason, job.attempt, job.epoch, job.steps) == (
        "succeeded",
        "completed 2 epochs",
        1,
        2,
        23,
    )
    assert (
        job.lease_owner is None
        and job.finished_at is not None
        and job.latest_metrics["val_accuracy"] > 0.5
    )
    with session_scope() as s:
        epochs = metrics_repo.list_metrics(
            session=s, job_id=job_id, name="val_loss", since_step=None, limit=100
        )
        assert [(m.epoch, m.step) for m in epochs] == [(1, 23), (2, 46)]
        assert [c.epoch for c in metrics_repo.list_checkpoints(session=s, job_id=job_id)] == [1, 2]
    assert (job_dir(get_settings().artifacts_dir, job_id) / "model.json").exists()
    assert run_job(job_id, "redelivered") == "skipped"  # a second delivery trains nothing
    assert _job(job_id).attempt == 1


def test_run_job_ends_failed_with_the_reason(service_env: str) -> None:
    nan = {
        "dataset": {"name": "diabetes", "standardize": False},
        "model": {
            "layers": [
                {"type": "dense", "units": 16, "activation": "relu"},
                {"type": "dense", "units": 1},
            ]
        },
        "compile": {"optimizer": {"type": "sgd", "learning_rate": 10.0}, "loss": "mse"},
        "fit": {"epochs": 5},
    }
    job_id = _submit(nan)
    assert run_job(job_id, "w") == "failed"
    assert _job(job_id).reason.startswith("the loss became")  # type: ignore[union-attr]
    missing = digits_mlp().model_dump(mode="json")
    missing["dataset"] = {"id": "ds_00000000000000000000000000000000"}
    job_id = _submit(missing)
    assert run_job(job_id, "w") == "failed"
    assert _job(job_id).reason == "dataset ds_00000000000000000000000000000000 does not exist"


def test_cancel_flag_stops_a_running_job(service_env: str) -> None:
    job_id = _submit(digits_mlp(epochs=500).model_dump(mode="json"))
    runner, outcome = _run_until_stepping(job_id)
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    runner.join(timeout=10)
    assert outcome == ["cancelled"]
    assert _job(job_id).reason.startswith("cancelled by request at epoch ")  # type: ignore[union-attr]


def test_a_redelivered_job_resumes_from_its_checkpoint(service_env: str) -> None:
    spec = digits_mlp(epochs=4)
    job_id = _submit(spec.model_dump(mode="json"))
    # A first attempt that got through two epochs before its worker died.
    train(
        spec,
        load_train_data(spec),
        job_dir(get_settings().artifacts_dir, job_id),
        [Recorder(stop_at_step=47)],
    )
    assert run_job(job_id, "w") == "succeeded"
    with session_scope() as s:
        epochs = metrics_repo.list_metrics(
            session=s, job_id=job_id, name="loss", since_step=None, limit=100
        )
    assert [m.epoch for m in epochs] == [3, 4]
    assert _job(job_id).reason == "completed 4 epochs"
    # The first attempt died before recording its checkpoints: the one resumed from is recorded now.
    with session_scope() as s:
        recorded = [
            (c.epoch, c.attempt) for c in metrics_repo.list_checkpoints(session=s, job_id=job_id)
        ]
    assert sorted(recorded) == [(2, 1), (3, 1), (4, 1)]


def _run_until_stepping(job_id: str) -> tuple[threading.Thread, list[str]]:
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(run_job(job_id, "w")))
    runner.start()
    deadline = time.monotonic() + 60
    while _job(job_id).step == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return runner, outcome


def test_a_shutting_down_worker_preempts_its_job_which_resumes(
    service_env: str, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from worker.reporter import STOPPING

    job_id = _submit(
        digits_mlp(epochs=30).model_dump(mode="json")
    )  # not over before the stop comes
    thread, outcome = _run_until_stepping(job_id)
    STOPPING.set()
    try:
        thread.join(timeout=30)
    finally:
        STOPPING.clear()
    assert outcome == ["preempted"] and take_queued_job_ids() == [job_id]
    job = _job(job_id)
    assert (job.status, job.attempt, job.preemptions, job.lease_owner) == ("preempted", 1, 1, None)
    assert job.reason.startswith("preempted at epoch ")  # type: ignore[union-attr]
    monkeypatch.setenv(
        "FITSERVE_MAX_ATTEMPTS", "1"
    )  # the preemption did not use up the only attempt
    get_settings.cache_clear()
    assert run_job(job_id, "w2") == "succeeded"
    assert (_job(job_id).attempt, _job(job_id).reason) == (2, "completed 30 epochs")


def test_a_job_past_its_time_limit_fails(service_env: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FITSERVE_MAX_JOB_SECONDS", "1")
    get_settings.cache_clear()
    spec = digits_mlp(epochs=500).model_dump(mode="json")
    spec["fit"]["max_seconds"] = 3600  # bounded by the server's maximum
    job_id = _submit(spec)
    started = time.monotonic()
    assert run_job(job_id, "w") == "failed"
    assert time.monotonic() - started < 30
    assert _job(job_id).reason.startswith("ran past its time limit of 1 s")  # type: ignore[union-attr]


def test_the_time_limit_counts_every_attempt(service_env: str) -> None:
    """fit.max_seconds restarted with each attempt: a job could run attempts x its limit. An attempt
    after 4.5 s of earlier ones gets the half second left."""
    spec = digits_mlp(epochs=500).model_dump(mode="json")
    spec["fit"]["max_seconds"] = 5
    job_id = _submit(spec)
    with session_scope() as s:  # an earlier attempt held a worker 4.5 s, then its worker died
        s.execute(update(Job).where(Job.id == job_id).values(attempt=1, trained_seconds=4.5))
    started = time.monotonic()
    assert run_job(job_id, "w") == "failed"
    assert time.monotonic() - started < 4.5
    job = _job(job_id)
    assert job.reason.startswith("ran past its time limit of 5 s over all its attempts"), job.reason  # type: ignore[union-attr]
    assert 4.5 < job.trained_seconds < 9.5 and job.attempt == 2


def test_an_unexpected_error_ends_the_job_with_a_reason_that_shows_no_internals(
    service_env: str, caplog
) -> None:  # type: ignore[no-untyped-def]
    """A real fault the worker does not expect: the upload's file on disk is a directory."""
    with session_scope() as s:
        tenant = tenants_repo.get_or_create_tenant(session=s, name="runner")
        row = Dataset(
            tenant_id=tenant.id,
            name="gone",
            format="csv",
            size_bytes=1,
            sha256="0" * 64,
            target="label",
            task="classification",
            description={},
        )
        s.add(row)
        s.flush()
        dataset_id = row.id
    where = upload_path(get_settings().artifacts_dir, dataset_id, "csv")
    where.mkdir(parents=True)
    spec = digits_mlp(epochs=1).model_dump(mode="json")
    spec["dataset"] = {"id": dataset_id}
    job_id = _submit(spec)
    assert run_job(job_id, "w") == "failed"
    assert _job(job_id).reason == (
        f"internal error (IsADirectoryError); the server's log has the details under job {job_id}"
    )
    assert str(where) in caplog.text  # the log keeps the detail


def test_a_job_reports_its_device_and_precision_and_a_resume_keeps_them(service_env: str) -> None:
    """The first attempt sets device and precision; a job that began on a GPU cannot be resumed by
    this CPU worker, and fails saying why, without training."""
    job_id = _submit(digits_mlp(epochs=1).model_dump(mode="json"))
    assert run_job(job_id, "w") == "succeeded"
    assert (_job(job_id).device, _job(job_id).precision) == ("cpu", "fp32")
    began_on_gpu = _submit(digits_mlp(epochs=3).model_dump(mode="json"))
    with session_scope() as s:  # as a GPU worker's first attempt leaves it when it dies
        s.execute(
            update(Job)
            .where(Job.id == began_on_gpu)
            .values(attempt=1, device="cuda", precision="bf16", epoch=1)
        )
    assert run_job(began_on_gpu, "w") == "failed"
    job = _job(began_on_gpu)
    assert job.reason == (
        "this job began on cuda at bf16 and keeps both across attempts; the worker that took this "
        "attempt has no GPU to resume it on"
    )
    assert (job.attempt, job.device, job.precision, job.epoch) == (2, "cuda", "bf16", 1)


def test_a_resume_under_a_kept_precision_is_the_same_spec(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The kept precision overrides the task's choice, not the spec: the checkpoint's spec still
    matches, so the resume is not refused as 'written for a different spec'."""
    spec = digits_mlp(epochs=2)
    data = load_train_data(spec)
    train(
        spec, data, tmp_path, [Recorder(stop_at_step=24)]
    )  # a first attempt, stopped in its second epoch
    recorder = Recorder()
    result = train(spec, data, tmp_path, [recorder], resume=True, mixed_precision="off")
    assert result.epochs_done == 2 and recorder.start is not None
    assert (recorder.start.start_epoch, recorder.start.precision) == (1, "fp32")

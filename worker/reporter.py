"""The engine's callback in the worker: progress, heartbeat, cancel checks and metric rows
go to the database from a background thread, so the training loop never waits on it."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core.db import patiently, session_scope
from core.repository import events as events_repo
from core.repository import jobs as jobs_repo
from core.repository import metrics as metrics_repo
from core.settings import Settings
from core.tables import utcnow
from worker.training.callbacks import Callback, CheckpointInfo, TrainStart

log = logging.getLogger("fitserve.worker")
# Set in a pool process when its worker shuts down (SIGTERM): the job stops at the next step and
# is preempted, to resume from its last checkpoint elsewhere.
STOPPING = threading.Event()


class JobReporter(Callback):
    def __init__(
        self,
        job_id: str,
        attempt: int,
        settings: Settings,
        trained_before: float = 0.0,
        epoch: int = 0,
    ) -> None:
        self.job_id, self.attempt, self.settings = job_id, attempt, settings
        # Every attempt's time counts toward fit.max_seconds: this one's is added from the claim on.
        self.trained_before, self.claimed_at = trained_before, time.monotonic()
        self.deadline: float | None = (
            None  # time.monotonic() past which the job stops (its time limit)
        )
        self.timed_out = False
        self.cancel = threading.Event()
        self.lost = threading.Event()  # another attempt owns the job now
        self._done = threading.Event()
        self._wake = threading.Event()  # flush now: the first point, and every epoch's metrics
        self._first = True
        self._lock = threading.Lock()
        self._metrics: list[dict[str, Any]] = []
        self._checkpoints: list[dict[str, Any]] = []
        self._pruned: list[int] = []  # epochs whose checkpoint files are gone: their rows go too
        self._progress: dict[str, Any] = {}
        self._error: SQLAlchemyError | None = None  # the last failed flush's
        self.batch = self.epochs = self.steps = 0
        self.epoch = epoch  # where earlier attempts left it, until this one says where it resumes
        # The thread runs in a copy of this context, so its log records carry the job id and attempt too.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._loop,),
            name=f"reporter-{job_id}",
            daemon=True,
        )

    # -- engine hooks (training thread) ------------------------------------------------------
    def on_train_start(self, start: TrainStart) -> None:
        self.epochs, self.steps, self.epoch = start.epochs, start.steps_per_epoch, start.start_epoch
        if start.start_epoch:
            log.info(
                "job %s attempt %s: resuming after epoch %d, from its checkpoint",
                self.job_id,
                self.attempt,
                start.start_epoch,
            )
        with self._lock:
            self._progress.update(
                epochs=start.epochs,
                steps=start.steps_per_epoch,
                parameters=start.parameters,
                device=start.device,
                precision=start.precision,
                epoch=start.start_epoch,
            )
        self.start()
        self._wake.set()

    def start(self) -> None:
        """Start heartbeating: from the claim on, so loading a large dataset never lets the lease lapse."""
        if self._thread.ident is None and not self._done.is_set():
            self._thread.start()

    def on_step_end(self, epoch: int, step: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch  # plain ints: read by the heartbeat, no lock needed

    def _row(self, epoch: int, step: int, name: str, value: float) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "attempt": self.attempt,
            "step": step,
            "epoch": epoch,
            "name": name,
            "value": value,
            "time": utcnow(),
        }

    def on_step_loss(self, epoch: int, step: int, loss: float) -> None:
        with self._lock:
            self._metrics.append(self._row(epoch, step, "step_loss", loss))
        if self._first:
            self._first = False
            self._wake.set()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        step = epoch * self.steps
        with self._lock:
            self._metrics.extend(self._row(epoch, step, k, v) for k, v in metrics.items())
            self._progress["latest_metrics"] = dict(metrics)
        self._wake.set()

    def on_checkpoint(self, info: CheckpointInfo) -> None:
        path = info.path.relative_to(self.settings.artifacts_dir)
        with self._lock:
            self._checkpoints.append(
                {
                    "job_id": self.job_id,
                    "attempt": self.attempt,
                    "epoch": info.epoch,
                    "path": str(path),
                    "sha256": info.sha256,
                    "metrics": info.metrics,
                    "created_at": utcnow(),
                }
            )
            self._pruned.extend(info.pruned)

    def should_stop(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out = True
        return self.cancel.is_set() or self.lost.is_set() or STOPPING.is_set() or self.timed_out

    # -- the background thread ---------------------------------------------------------------
    def _loop(self) -> None:
        while not self._done.is_set():
            self._wake.wait(self.settings.heartbeat_seconds)
            self._wake.clear()
            if not self._done.is_set():
                self.flush()

    def flush(self) -> bool:
        """Write buffered rows and the heartbeat in one transaction; on a database error keep
        the rows (training goes on) and try again on the next beat. True once written."""
        with self._lock:
            metrics, checkpoints, pruned = self._metrics, self._checkpoints, self._pruned
            self._metrics, self._checkpoints, self._pruned = [], [], []
            progress = {
                **self._progress,
                "epoch": self.epoch,
                "step": self.batch,
                "trained_seconds": self.trained_before + time.monotonic() - self.claimed_at,
            }
        try:
            with session_scope() as session:
                # Numbered afresh in every transaction: a failed one gave its numbers back.
                if metrics:
                    metrics_repo.number_metrics(session=session, job_id=self.job_id, rows=metrics)
                metrics_repo.add_metrics(session=session, rows=metrics)
                for row in checkpoints:
                    metrics_repo.add_checkpoint(session=session, row=row)
                metrics_repo.drop_checkpoints(session=session, job_id=self.job_id, epochs=pruned)
                ours, cancel, seq = jobs_repo.heartbeat(
                    session=session,
                    job_id=self.job_id,
                    attempt=self.attempt,
                    lease_seconds=self.settings.lease_seconds,
                    progress=progress,
                )
                if ours:  # the streams show progress too: every beat is news, delivered at commit
                    events_repo.notify(session=session, job_id=self.job_id, seq=seq)
        except SQLAlchemyError as exc:
            self._error = exc
            log.warning(
                "job %s attempt %s: database unavailable, keeping %d rows: %s",
                self.job_id,
                self.attempt,
                len(metrics),
                exc,
            )
            with self._lock:
                self._metrics[:0], self._checkpoints[:0], self._pruned[:0] = (
                    metrics,
                    checkpoints,
                    pruned,
                )
            return False
        if not ours:
            self.lost.set()
        if cancel:
            self.cancel.set()
        return True

    def close(self) -> None:
        """Stop the thread and write what is left, waiting out a database outage (for up to
        `database_patience_seconds`): the rows exist nowhere else."""
        self._done.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            patiently(
                self._flush_or_raise,
                patience=self.settings.database_patience_seconds,
                what=f"job {self.job_id} attempt {self.attempt}: its last rows",
            )
        except SQLAlchemyError:
            log.error(
                "job %s attempt %s: the database stayed unreachable; %d metric rows not written",
                self.job_id,
                self.attempt,
                len(self._metrics),
            )

    def _flush_or_raise(self) -> None:
        if not self.flush():
            assert self._error is not None  # noqa: S101 - flush keeps the error it failed with
            raise self._error

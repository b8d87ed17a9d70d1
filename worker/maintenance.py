"""The reaper and the sweeper, run by a thread in each worker's main process.

- reaper: a `running` job whose lease lapsed (its worker was killed, its machine is gone) goes
  back to `queued` and is enqueued again, within a lease plus a sweep interval, well under the
  broker's visibility timeout.
- sweeper: a job left `queued` (or `preempted`) and untouched for `queued_grace_seconds` while the
  broker's queue is empty lost its message (the broker was down at submit, or flushed) and is
  enqueued again. While messages wait in the queue the job may just be waiting its turn, behind
  others: then only after `queued_busy_grace_seconds`, so a deep queue is not flooded with a
  duplicate per waiting job every grace period.

After a database outage every lease looks lapsed, its holder having been unable to heartbeat
too: the reaper waits a lease period after its last failed pass, so live jobs renew first.

Both pick rows with conditional UPDATEs, so any number of these threads never hand the same row
out twice in one period; an extra message is harmless anyway: its claim fails (fenced by attempt).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from core.db import session_scope, unreachable
from core.queue import broker_queues, enqueue_training, queue_depth
from core.repository import claims as claims_repo
from core.repository import jobs as jobs_repo
from core.repository import workers as workers_repo
from core.resources import Capacity
from core.settings import Settings

log = logging.getLogger("fitserve.maintenance")


def run_once(
    settings: Settings, enqueue: Callable[[str, str], None] = enqueue_training, reap: bool = True
) -> tuple[list[str], list[str]]:
    """One pass: (reaped ids, swept ids), each enqueued on its queue after its UPDATE is
    committed; and the waiting jobs no live worker can take get a reason saying so."""
    reaped: list[str] = []
    if reap:
        with session_scope() as session:
            reaped = jobs_repo.reap_expired(session=session)
    grace = settings.queued_grace_seconds
    with session_scope() as session:
        overdue = jobs_repo.any_waiting(session=session, grace_seconds=grace)
    # The broker is asked only when a job has waited past the short grace: most passes find none.
    if overdue and not _queue_is_empty(settings):
        grace = settings.queued_busy_grace_seconds
    with session_scope() as session:
        jobs_repo.end_flagged_waiting(
            session=session
        )  # flagged for cancelling, waiting for nothing
        swept = jobs_repo.sweep_waiting(session=session, grace_seconds=grace)
        queues = claims_repo.queues_of(session=session, job_ids=reaped + swept)
    with session_scope() as session:
        live = workers_repo.live(session=session, within_seconds=live_window(settings))
        workers_repo.refresh_waiting_reasons(session=session, workers=live)
    for job_id in reaped + swept:
        try:
            enqueue(job_id, queues.get(job_id, "any"))
        except Exception as exc:  # it stays queued: the sweeper tries again after the grace period
            log.warning("job %s: enqueue failed, will retry: %s", job_id, exc)
            continue
        log.info(
            "job %s: %s",
            job_id,
            "lease expired, re-queued" if job_id in reaped else "enqueued again",
        )
    return reaped, swept


def live_window(settings: Settings) -> float:
    """A worker unseen this long is gone: a few missed passes of its maintenance thread."""
    return 3 * settings.sweep_interval_seconds + 5.0


def _queue_is_empty(settings: Settings) -> bool:
    try:
        return all(queue_depth(name) == 0 for name in broker_queues(settings.queue))
    except Exception as exc:  # the broker is down: what is swept now could not be enqueued anyway
        log.warning("the broker's queue cannot be read: %s", type(exc).__name__)
        return True


class Maintenance(threading.Thread):
    """Also keeps this worker's row in the live-workers table (`name`, what it serves)."""

    def __init__(self, settings: Settings, name: str, capacity: Capacity, concurrency: int) -> None:
        super().__init__(name="fitserve-maintenance", daemon=True)
        self.settings = settings
        self.worker = (name, capacity, concurrency)
        self.stopped = threading.Event()
        self.reap_after = 0.0  # time.monotonic() before which the reaper holds off

    def _register(self) -> None:
        name, capacity, concurrency = self.worker
        with session_scope() as session:
            workers_repo.register(
                session=session, name=name, capacity=capacity, concurrency=concurrency
            )

    def run(self) -> None:
        wait = 0.0  # the first pass at once: the worker shows as live as soon as it is ready
        while not self.stopped.wait(wait):
            wait = self.settings.sweep_interval_seconds
            try:
                self._register()
                run_once(self.settings, reap=time.monotonic() >= self.reap_after)
            except Exception as exc:  # a database or broker outage: the next pass tries again
                if unreachable(exc):
                    hold = self.settings.lease_seconds + self.settings.sweep_interval_seconds
                    self.reap_after = time.monotonic() + hold
                    log.warning(
                        "maintenance pass failed, the database is unreachable; the reaper holds off until "
                        "a lease after it is back: %s",
                        type(exc).__name__,
                    )
                else:
                    log.exception("maintenance pass failed")

    def stop(self) -> None:
        """Stop the passes and take this worker off the live list (best effort: a worker that
        cannot reach the database drops off it once unseen for the live window)."""
        self.stopped.set()
        try:
            with session_scope() as session:
                workers_repo.unregister(session=session, name=self.worker[0])
        except Exception as exc:
            log.warning("could not take this worker off the live list: %s", type(exc).__name__)

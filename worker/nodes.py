"""A node that joined a multi-node job: it holds a rank lease (`job_node`), meets node 0 at the
rendezvous node 0 recorded, and trains its ranks. It writes nothing of the job's: node 0's
leader rank reports, checkpoints and writes the outcome. Its lease thread stops it when the
attempt is over (the job ended, or another attempt owns it); a worker shutting down stops it
too, and node 0 then hands the job back to the queue.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, NamedTuple

from core.db import patiently, session_scope
from core.logging import bind_job
from core.repository import claims as claims_repo
from core.resources import Capacity
from core.settings import Settings, get_settings
from core.spec import JobSpec
from core.storage import job_dir
from worker.capacity import device_for
from worker.datasource import load_train_data, upload_resolver
from worker.fitting import fit
from worker.placement import place_here
from worker.reporter import STOPPING
from worker.training.callbacks import Callback

log = logging.getLogger("fitserve.worker")


class Joined(NamedTuple):
    job_id: str
    attempt: int
    node_rank: int
    spec: dict[str, Any]
    tenant_id: str
    queue: str
    device: str | None
    precision: str | None
    rendezvous: str


def join(queue: str, owner: str, capacity: Capacity, settings: Settings) -> Joined | None:
    with session_scope() as session:
        found = claims_repo.join_next(
            session=session,
            queue=queue,
            owner=owner,
            lease_seconds=settings.lease_seconds,
            capacity=capacity,
        )
        if found is None:
            return None
        job, rank = found
        return Joined(
            job.id,
            job.attempt,
            rank,
            job.spec,
            job.tenant_id,
            job.queue,
            job.device,
            job.precision,
            job.rendezvous or "",
        )


class _Stop(Callback):
    """What a joined node's ranks vote on each step: its attempt is over, or its worker stops."""

    def __init__(self, over: threading.Event) -> None:
        self.over = over

    def should_stop(self) -> bool:
        return self.over.is_set() or STOPPING.is_set()


class _NodeLease(threading.Thread):
    def __init__(self, joined: Joined, settings: Settings) -> None:
        super().__init__(name="fitserve-node-lease", daemon=True)
        self.joined, self.settings = joined, settings
        self.over, self.done = threading.Event(), threading.Event()

    def run(self) -> None:
        j = self.joined
        while not self.done.wait(self.settings.heartbeat_seconds):
            try:
                with session_scope() as session:
                    running = claims_repo.renew_node(
                        session=session,
                        job_id=j.job_id,
                        attempt=j.attempt,
                        node_rank=j.node_rank,
                        lease_seconds=self.settings.lease_seconds,
                    )
            except Exception as exc:  # a database outage: node 0 decides; try again
                log.warning("node lease of job %s: %s", j.job_id, type(exc).__name__)
                continue
            if not running:
                self.over.set()
                return


def run_node(joined: Joined) -> str:
    """Train this node's ranks of the job's attempt; returns what happened, for the log."""
    settings = get_settings()
    bind_job(joined.job_id, joined.attempt)
    log.info(
        "job %s attempt %s: joined as node %s", joined.job_id, joined.attempt, joined.node_rank
    )
    lease = _NodeLease(joined, settings)
    lease.start()
    try:
        spec = JobSpec.model_validate(joined.spec)
        placement = place_here(
            joined.device, joined.precision, device_for(joined.queue, settings.device)
        )
        data = load_train_data(spec, upload_resolver(settings, joined.tenant_id))
        fit(
            spec,
            data,
            job_dir(settings.artifacts_dir, joined.job_id),
            [_Stop(lease.over)],
            placement,
            job_id=joined.job_id,
            attempt=joined.attempt,
            node_rank=joined.node_rank,
            rendezvous=joined.rendezvous,
            settings=settings,
        )
        return "node done"
    except Exception as exc:  # node 0 owns the outcome; its ranks saw this node go
        log.warning("job %s node %s ended: %s", joined.job_id, joined.node_rank, exc)
        return "node failed"
    finally:
        lease.done.set()
        bind_job(None)


def join_patiently(queue: str, owner: str, capacity: Capacity, settings: Settings) -> Joined | None:
    return patiently(
        lambda: join(queue, owner, capacity, settings),
        patience=settings.database_patience_seconds,
        what=f"queue {queue}: join",
        stop=STOPPING,
    )

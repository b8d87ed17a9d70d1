"""Which job a woken worker trains next: the database decides, the broker only wakes workers.

A message on a queue wakes one worker; its training process claims the first job of that queue
it can take, in this order:

1. the highest `priority` present among the jobs it can take (its GPUs, processes, memory);
2. among those, the tenants take turns: the tenant whose job was claimed least recently first
   (`tenant.last_claimed_at`), so one tenant's 500 queued jobs cannot starve another's one;
3. within a tenant, its oldest job.

Each waiting job has one message of its own queue, so every job is claimed by some wake-up even
though a wake-up may claim another job than the one it names. Candidates are each tenant's head
job; two workers racing for the same head both try it with the conditional UPDATE of
`jobs.claim`, one wins and the other moves on to the next tenant's head.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.repository import jobs as jobs_repo
from core.resources import Capacity
from core.tables import WAITING, Job, JobNode, JobStatus, Tenant, utcnow

HEADS = 16  # tenants tried per claim before giving up to a later wake-up


def claim_next(
    *, session: Session, queue: str, owner: str, lease_seconds: float, capacity: Capacity
) -> Job | None:
    """Claim the next job of `queue` this worker can take; None if there is none."""
    now = utcnow()
    takeable = (
        Job.queue == queue,
        Job.cancel_requested.is_(False),
        Job.status.in_(WAITING)
        | ((Job.status == JobStatus.RUNNING) & (Job.lease_expires_at < now)),
        Job.processes <= capacity.processes(queue),
        Job.gpus <= capacity.gpus,
        Job.memory_bytes <= capacity.memory_bytes,
    )
    first_of_tenant = (
        func.row_number()
        .over(partition_by=Job.tenant_id, order_by=(Job.priority.desc(), Job.created_at, Job.id))
        .label("n")
    )
    ranked = (
        select(Job.id, Job.tenant_id, Job.priority, Job.created_at, first_of_tenant)
        .where(*takeable)
        .subquery()
    )
    heads = session.execute(
        select(ranked.c.id, ranked.c.tenant_id)
        .join(Tenant, Tenant.id == ranked.c.tenant_id)
        .where(ranked.c.n == 1)
        .order_by(
            ranked.c.priority.desc(),
            Tenant.last_claimed_at.asc().nulls_first(),
            ranked.c.created_at,
            ranked.c.id,
        )
        .limit(HEADS)
    ).all()
    kind = capacity.any_kind if queue == "any" else queue
    for job_id, tenant_id in heads:
        job = jobs_repo.claim(
            session=session, job_id=job_id, owner=owner, lease_seconds=lease_seconds, kind=kind
        )
        if job is not None:
            # Read the clock now, not at the start: on SQLite this transaction holds the write
            # lock since the claim, so claims that waited for it stamp later than this one.
            session.execute(
                update(Tenant).where(Tenant.id == tenant_id).values(last_claimed_at=utcnow())
            )
            return job
    return None


def set_rendezvous(*, session: Session, job_id: str, attempt: int, address: str) -> None:
    """Node 0 of a multi-node job's attempt records where the other nodes meet it."""
    session.execute(
        update(Job).where(Job.id == job_id, Job.attempt == attempt).values(rendezvous=address)
    )


def join_next(
    *, session: Session, queue: str, owner: str, lease_seconds: float, capacity: Capacity
) -> tuple[Job, int] | None:
    """Take a free node (1 and up) of a running multi-node job of `queue` whose node 0 waits in
    its rendezvous: (the job, the node's rank), or None. A worker joins such a job before it
    starts another: the job's other nodes hold their devices while they wait. The rank lease's
    primary key (job, attempt, node) makes two joiners of one node impossible."""
    now = utcnow()
    joined = (
        select(func.count())
        .where(JobNode.job_id == Job.id, JobNode.attempt == Job.attempt)
        .scalar_subquery()
    )
    forming = session.scalars(
        select(Job)
        .where(
            Job.queue == queue,
            Job.status == JobStatus.RUNNING,
            Job.nodes > 1,
            Job.rendezvous.is_not(None),
            Job.lease_expires_at > now,
            Job.processes <= capacity.processes(queue),
            Job.gpus <= capacity.gpus,
            Job.memory_bytes <= capacity.memory_bytes,
            joined < Job.nodes - 1,
        )
        .order_by(Job.priority.desc(), Job.started_at)
        .limit(HEADS)
    ).all()
    for job in forming:
        taken = set(
            session.scalars(
                select(JobNode.node_rank).where(
                    JobNode.job_id == job.id, JobNode.attempt == job.attempt
                )
            )
        )
        free = [rank for rank in range(1, job.nodes) if rank not in taken]
        if not free:
            continue
        lease = now + timedelta(seconds=lease_seconds)
        try:
            with session.begin_nested():
                session.add(
                    JobNode(
                        job_id=job.id,
                        attempt=job.attempt,
                        node_rank=free[0],
                        owner=owner,
                        lease_expires_at=lease,
                    )
                )
        except IntegrityError:  # another worker took that node first
            continue
        return job, free[0]
    return None


def renew_node(
    *, session: Session, job_id: str, attempt: int, node_rank: int, lease_seconds: float
) -> bool:
    """A joined node's heartbeat: renew its lease; False once the attempt is over (the job ended,
    or another attempt owns it), which tells the node to stop."""
    lease = utcnow() + timedelta(seconds=lease_seconds)
    session.execute(
        update(JobNode)
        .where(JobNode.job_id == job_id, JobNode.attempt == attempt, JobNode.node_rank == node_rank)
        .values(lease_expires_at=lease)
    )
    status = session.scalar(select(Job.status).where(Job.id == job_id, Job.attempt == attempt))
    return status == JobStatus.RUNNING


def owned_by(*, session: Session, owner: str) -> str | None:
    """The job whose lease `owner` holds, if any (a training process known only by its name)."""
    return session.scalar(
        select(Job.id).where(Job.lease_owner == owner, Job.status == JobStatus.RUNNING).limit(1)
    )


def queues_of(*, session: Session, job_ids: list[str]) -> dict[str, str]:
    """Each job's queue, to send its wake-up to."""
    if not job_ids:
        return {}
    rows = session.execute(select(Job.id, Job.queue).where(Job.id.in_(job_ids))).all()
    return {job_id: queue for job_id, queue in rows}

"""Database tables (SQLAlchemy 2). The schema is only ever created by the Alembic migrations.

The job row is the truth about a job: status, reason, attempt (a fencing number), lease
and progress. Celery's result backend is never consulted.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class JobStatus(StrEnum):
    """A job's status: the one column the API, the worker and the streams agree on. A StrEnum, so
    it is stored, compared and serialised as its plain string."""

    QUEUED = "queued"
    RUNNING = "running"
    PREEMPTED = (
        "preempted"  # its worker was stopped (SIGTERM); re-queued at once, not a failed attempt
    )
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"  # a sweep's trial its pruner stopped early (the reason says at which epoch)


JOB_STATUSES = tuple(JobStatus)
TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED)
WAITING = (JobStatus.QUEUED, JobStatus.PREEMPTED)  # for a worker to claim
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)  # what the active-jobs quota counts
UNFINISHED = (*WAITING, JobStatus.RUNNING)  # what needs its dataset


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Unguessable ids: 128 random bits."""
    return f"{prefix}_{secrets.token_hex(16)}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend: SQLite keeps no offset, so one is put back on load."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenant"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ten"))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When a worker last claimed one of its jobs: claims go round the tenants, least recent first.
    last_claimed_at: Mapped[datetime | None] = mapped_column(default=None)


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    # sha256 of the key: the key is 256 random bits, so a fast hash is enough and lookups stay O(1).
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Dataset(Base):
    __tablename__ = "dataset"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(8))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(16))
    description: Mapped[dict[str, Any]] = mapped_column(JSON)  # shapes, classes, samples
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "job"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_job_tenant_status", "tenant_id", "status"),
        # The reaper, the sweeper and /metrics read by status across tenants, every few seconds.
        Index("ix_job_status", "status"),
        # A worker's claim: the waiting jobs of one queue, by priority.
        Index("ix_job_queue_status", "queue", "status", "priority"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset.id"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    reason: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    preemptions: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0"
    )  # attempts not counted
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    parameters: Mapped[int] = mapped_column(BigInteger, default=0)
    estimated_memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    latest_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    test_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    device: Mapped[str | None] = mapped_column(String(32))
    # fp32, bf16 or fp16: set with device by the first attempt's start, and kept by every later one
    precision: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # The job's event cursor: the last sequence number given to one of its metric rows or status
    # changes. Bumped by the UPDATE that writes them, so its row lock orders commits by sequence.
    seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Seconds its attempts have held a worker (claim to end), all together: fit.max_seconds bounds it.
    trained_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # The submit's dry run and what the model takes (api/summary.py); null for jobs from before
    # migration 0007. Deferred: lists and polls never load it.
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, deferred=True)
    # Where it waits and what a worker must have to claim it (the spec's `resources`, `priority`).
    # `any` becomes the kind its first attempt took, so a resume stays on that kind.
    queue: Mapped[str] = mapped_column(String(8), default="any", server_default="any")
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    gpus: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    processes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The larger of the dry run's estimate and `resources.memory_bytes`.
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # A multi-node job's c10d rendezvous (host:port), set by the attempt's first claimant (node 0).
    rendezvous: Mapped[str | None] = mapped_column(String(200))
    # A sweep's trial: its sweep and its Optuna trial number; null for a job submitted on its own.
    # No foreign key: SQLite would copy the job table to add one (migration 0011).
    sweep_id: Mapped[str | None] = mapped_column(String(40), index=True)
    trial_number: Mapped[int | None] = mapped_column(Integer)
    # Its end told to the sweep (Optuna and the counters): set once, by whoever tells it.
    trial_counted: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class Metric(Base):
    """One point of a series. The key is (job, step, name): a retried write, or a resumed attempt
    replaying a step, never duplicates a point. `seq` places it in the job's event sequence:
    the cursor of the live stream and of metric paging (points of one step share the step)."""

    __tablename__ = "metric"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column()
    seq: Mapped[int] = mapped_column(BigInteger)


class JobEvent(Base):
    """A job's status change (queued, running, preempted, succeeded...), in the same sequence as
    its metric rows: the live stream replays both, in order, from any cursor."""

    __tablename__ = "job_event"

    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column()


class Checkpoint(Base):
    __tablename__ = "checkpoint"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500))  # relative to the artifacts dir
    sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RegisteredModel(Base):
    """A name a tenant serves models under; its versions are succeeded jobs (issue 14)."""

    __tablename__ = "registered_model"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mdl"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    # Versions are numbered by this counter, never reused: a deleted version 3 stays unused.
    next_version: Mapped[int] = mapped_column(Integer, default=1)
    # Batching overrides for this model's serving; null: the service's default.
    max_batch_size: Mapped[int | None] = mapped_column(Integer)
    max_delay_ms: Mapped[float | None] = mapped_column(Float)
    exact_batches: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelVersion(Base):
    """Version `version` of a registered model: a succeeded job's checkpoint. Deleting the job
    (an operator's clean-up) leaves the version with no job: it answers 409, not a 500."""

    __tablename__ = "model_version"

    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_model.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("job.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelAlias(Base):
    """A movable name for one version (`production`, `staging`...): one row, so a move is one
    UPDATE and a request sees the old version or the new one, never neither."""

    __tablename__ = "model_alias"

    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_model.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobNode(Base):
    """A rank lease: node `node_rank` (1 and up) of a multi-node job's attempt, held by a worker
    that joined node 0's rendezvous. Node 0 holds the job's own lease."""

    __tablename__ = "job_node"

    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime] = mapped_column()
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerNode(Base):
    """A running worker and what it serves: written by its maintenance thread every pass, so the
    API can say what a waiting job waits for (no live worker serves its queue or has its GPUs)."""

    __tablename__ = "worker"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid of its main process
    queues: Mapped[str] = mapped_column(String(100))  # comma-separated: cpu, cuda
    gpus: Mapped[int] = mapped_column(Integer)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)  # its MAX_JOB_MEMORY_BYTES
    concurrency: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class SweepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # every trial ended (some may have failed or been pruned)
    CANCELLED = "cancelled"
    FAILED = "failed"


class Sweep(Base):
    """A hyperparameter sweep (docs/sweeps.md): its spec, its trial counters and its best trial so
    far. Its trials are jobs (job.sweep_id); its Optuna study, named by its id, lives in Optuna's
    own tables (migration 0011)."""

    __tablename__ = "sweep"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("swp"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=SweepStatus.RUNNING)
    reason: Mapped[str | None] = mapped_column(Text)
    # The spec's trial_budget, and counters one conditional UPDATE checks and bumps: a trial is
    # started only while created < budget and created - finished < the spec's parallelism.
    trial_budget: Mapped[int] = mapped_column(Integer)
    parallelism: Mapped[int] = mapped_column(Integer)
    trials_created: Mapped[int] = mapped_column(Integer, default=0)
    trials_finished: Mapped[int] = mapped_column(Integer, default=0)
    # The best completed trial's job and objective; a plain id (no foreign key): job.sweep_id
    # already points the other way, and a deleted job leaves the record.
    best_job_id: Mapped[str | None] = mapped_column(String(40))
    best_value: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()

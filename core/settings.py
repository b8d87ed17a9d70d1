"""The one Settings object, read once from `FITSERVE_*` variables; the API, worker and CLI share it.

Left unset, the database and the broker are embedded: SQLite files under the data dir and
kombu's SQLAlchemy transport over another SQLite file, so `fitserve up` needs no server.
Production sets `FITSERVE_DATABASE_URL` (PostgreSQL) and `FITSERVE_BROKER_URL` (Redis).
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, computed_field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.resources import Pool


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FITSERVE_", extra="ignore")

    data_dir: Path = Field(
        Path(".fitserve"), description="artifacts, uploads and the embedded database"
    )
    database_url_: str | None = Field(None, alias="FITSERVE_DATABASE_URL")
    broker_url_: str | None = Field(None, alias="FITSERVE_BROKER_URL")
    queue: str = Field("fitserve", max_length=100, description="the Celery queue workers consume")
    device: str | None = Field(
        None, description="torch device; default cuda when present, else cpu"
    )
    worker_queues: str | None = Field(
        None,
        pattern=r"^(cpu|cuda)(,(cpu|cuda))?$",
        description="the device kinds a worker serves (`fitserve worker --queues cpu,cuda`); "
        "default cuda where torch sees a GPU, else cpu. Every worker also serves `any` jobs",
    )
    max_job_processes: int | None = Field(
        None,
        ge=1,
        le=64,
        description="CPU processes one job may run on a worker; default its cores",
    )
    worker_host: str | None = Field(
        None,
        description="the address other workers reach this one at, for a multi-node job's "
        "rendezvous it hosts; default: its hostname's address",
    )
    rank_timeout_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="a data-parallel rank that stops answering fails the others' step this long after",
    )
    sweep_tick_seconds: float = Field(
        1.0, gt=0, le=60, description="how often each API process moves the running sweeps on"
    )
    pools: list[Pool] | None = Field(
        None,
        description="the workers this deployment runs (JSON); when set, a job none of them can "
        "ever take is refused at submit (422) instead of waiting",
    )
    upload_max_bytes: int = Field(100 * 2**20, ge=1024)
    upload_max_inflated_bytes: int = Field(
        256 * 2**20,
        ge=1024,
        description="an uploaded NPZ's arrays, all together, once inflated (413 past it)",
    )
    upload_parse_processes: int = Field(
        2, ge=1, le=64, description="processes that parse uploads, per API process"
    )
    predict_max_instances: int = Field(1024, ge=1)
    model_cache_count: int = Field(8, ge=1)
    model_cache_bytes: int = Field(2 * 2**30, ge=2**20)
    # Serving's dynamic batching defaults (a registered model may override each; docs/serving.md).
    batch_max_size: int = Field(64, ge=1, le=4096, description="rows per forward pass at most")
    batch_max_delay_ms: float = Field(2.0, ge=0, le=1000)
    batch_exact: bool = False
    batch_row_block: int = Field(8, ge=1, le=64)
    lease_seconds: float = Field(
        30.0, gt=1.0, description="a running job's lease; renewed by its heartbeat"
    )
    heartbeat_seconds: float = Field(
        0.5, gt=0.0, le=10.0, description="heartbeat, cancel check and metric flush"
    )
    revocation_check_seconds: float = Field(
        0.1,
        ge=0.0,
        le=5.0,
        description="predict re-reads key revocations this often; 0 checks the key every request",
    )
    max_attempts: int = Field(
        3, ge=1, le=100, description="claims of a job before it fails (preemptions not counted)"
    )
    max_job_seconds: float = Field(
        7 * 24 * 3600.0, gt=0.0, description="the longest a job may train (fit.max_seconds)"
    )
    sweep_interval_seconds: float = Field(
        2.0, gt=0.0, le=300.0, description="the worker's reaper/sweeper period"
    )
    queued_grace_seconds: float = Field(
        60.0,
        gt=0.0,
        description="a job queued (or preempted) this long untouched, the queue empty, is enqueued again",
    )
    queued_busy_grace_seconds: float = Field(
        3600.0,
        gt=0.0,
        description="the same while messages wait in the queue: the job may just be waiting its turn",
    )
    database_patience_seconds: float = Field(
        900.0,
        gt=0.0,
        description="a worker waits out a database outage this long before giving up a write",
    )
    spare_training_process: bool = Field(
        True,
        description="fork each job's training process ahead and warm its device up (CUDA: seconds) while "
        "no job waits; it then holds a device context while idle",
    )
    broker_poll_seconds: float = Field(
        0.05, gt=0.0, le=5.0, description="polling of the embedded broker"
    )
    # Operations: logs and /metrics.
    log_format: Literal["auto", "json", "text"] = Field(
        "auto",
        validation_alias=AliasChoices("FITSERVE_LOG_FORMAT", "LOG_FORMAT"),
        description="service logs: text lines on a terminal, else one JSON object per line "
        "(auto); or always json, or always text",
    )
    log_level: str = Field("INFO", pattern=r"(?i)^(debug|info|warning|error|critical)$")
    metrics_enabled: bool = Field(
        True, description="serve GET /metrics (Prometheus text; no tenant data)"
    )
    metrics_token: SecretStr | None = Field(
        None, description="when set, /metrics needs `Bearer <this token>`"
    )
    # Server-side maxima on a job spec (422 naming the field) and on request bodies (413).
    max_parameters: int = Field(
        50_000_000, ge=1, description="trainable parameters per job (the dry-run's count)"
    )
    max_job_memory_bytes: int = Field(
        8 * 2**30,
        ge=1024,
        description="a job's estimated training memory (weights, gradients, optimizer state, a batch's activations), "
        "from shapes on the meta device; the API refuses a spec past it (422), a worker set lower fails such a job",
    )
    max_dry_run_bytes: int = Field(
        64 * 2**20,
        ge=1024,
        description="what the API's real dry run of a spec (2 samples through the model) may allocate, estimated "
        "on the meta device first; a spec past it is refused (422) before any memory is spent",
    )
    max_epoch_samples: int = Field(
        10**10, ge=1, description="fit.epochs x training samples per job"
    )
    max_batch_size: int = Field(65_536, ge=1, description="fit.batch_size")
    max_layers: int = Field(
        256, ge=1, description="layers per network (model.layers, encoder, generator...)"
    )
    json_max_bytes: int = Field(
        2**20,
        ge=1024,
        validation_alias=AliasChoices("FITSERVE_JSON_MAX_BYTES", "FITSERVE_REQUEST_MAX_BYTES"),
        description="a JSON body (every route but uploads and predict); 413 past it, from its headers",
    )
    predict_max_bytes_: int | None = Field(
        None,
        ge=1024,
        alias="FITSERVE_PREDICT_MAX_BYTES",
        description="a predict body; default 16 KiB per instance of PREDICT_MAX_INSTANCES (16 MiB)",
    )
    # Slow clients and connections, per API process (api/protocol.py, api/limits.py).
    header_timeout_seconds: float = Field(
        10.0,
        gt=0.0,
        description="a request line and headers must arrive within this, else the connection closes",
    )
    body_idle_timeout_seconds: float = Field(
        30.0,
        gt=0.0,
        description="the most a request body may pause between chunks; then 408 and the connection closes",
    )
    body_read_timeout_seconds: float = Field(
        300.0,
        gt=0.0,
        description="the most a whole request body may take to arrive (uploads: raise it for slow links)",
    )
    max_connections: int = Field(
        4096,
        ge=1,
        description="open connections a process serves; past it a 503, past twice it closed at once",
    )
    # Requests with a missing or bad key, per client address (a key is checked before a body is read).
    auth_failures_per_second: float = Field(
        10.0, ge=0.0, description="refused keys per second per address; 0: none"
    )
    auth_failure_burst: int = Field(
        50, ge=1, description="refused keys an address may send at once; more is 429"
    )
    # Per-tenant quotas.
    max_active_jobs: int = Field(
        8, ge=1, description="a tenant's queued + running jobs; more is 429"
    )
    storage_quota_bytes: int = Field(
        2**30, ge=1024, description="a tenant's uploaded datasets, in bytes; more is 413"
    )
    # Live event streams (GET /v1/jobs/{id}/events).
    max_streams_per_tenant: int = Field(
        64, ge=1, description="a tenant's open event streams per API process (429)"
    )
    stream_keepalive_seconds: float = Field(
        15.0, gt=0.0, le=300.0, description="a comment on a quiet stream so often"
    )
    stream_poll_seconds: float = Field(
        0.25,
        gt=0.0,
        le=10.0,
        description="on SQLite, the hub checks its watched jobs this often (PostgreSQL notifies)",
    )
    # Per-API-key token bucket, kept in each API process (N processes admit N times the rate).
    rate_limit_per_second: float = Field(
        200.0, ge=0.0, description="requests per second per API key; 0: no limit"
    )
    rate_limit_burst: int = Field(
        400, ge=1, description="requests a key may make at once before the rate applies"
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def log_style(self) -> Literal["json", "text"]:
        """`log_format` made definite: auto is text where stderr (the logs) is a terminal."""
        if self.log_format == "auto":
            return "text" if sys.stderr.isatty() else "json"
        return self.log_format

    @property
    def database_url(self) -> str:
        return self.database_url_ or f"sqlite:///{self.data_dir / 'fitserve.db'}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def broker_url(self) -> str:
        return self.broker_url_ or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def predict_max_bytes(self) -> int:
        return self.predict_max_bytes_ or max(
            self.json_max_bytes, self.predict_max_instances * 16 * 2**10
        )

    @property
    def embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

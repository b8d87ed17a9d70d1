"""The one Settings object, read once from `FITSERVE_*` variables; the API, worker and CLI share it.

Left unset, the database and the broker are embedded: SQLite files under the data dir and
kombu's SQLAlchemy transport over another SQLite file, so `fitserve up` needs no server.
Production sets `FITSERVE_DATABASE_URL` (PostgreSQL) and `FITSERVE_BROKER_URL` (Redis).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, computed_field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FITSERVE_", extra="ignore")

    data_dir: Path = Field(Path(".fitserve"), description="artifacts, uploads and the embedded database")
    database_url_: str | None = Field(None, alias="FITSERVE_DATABASE_URL")
    broker_url_: str | None = Field(None, alias="FITSERVE_BROKER_URL")
    queue: str = Field("fitserve", max_length=100, description="the Celery queue workers consume")
    device: str | None = Field(None, description="torch device; default cuda when present, else cpu")
    upload_max_bytes: int = Field(100 * 2**20, ge=1024)
    predict_max_instances: int = Field(1024, ge=1)
    model_cache_count: int = Field(8, ge=1)
    model_cache_bytes: int = Field(2 * 2**30, ge=2**20)
    lease_seconds: float = Field(30.0, gt=1.0, description="a running job's lease; renewed by its heartbeat")
    heartbeat_seconds: float = Field(0.5, gt=0.0, le=10.0, description="heartbeat, cancel check and metric flush")
    revocation_check_seconds: float = Field(
        0.1, ge=0.0, le=5.0, description="predict re-reads key revocations this often; 0 checks the key every request"
    )
    broker_poll_seconds: float = Field(0.05, gt=0.0, le=5.0, description="polling of the embedded broker")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def database_url(self) -> str:
        return self.database_url_ or f"sqlite:///{self.data_dir / 'fitserve.db'}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def broker_url(self) -> str:
        return self.broker_url_ or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

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

"""The one Settings object, read once from `FITSERVE_*` variables; the API, worker and CLI share it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FITSERVE_", extra="ignore")

    data_dir: Path = Field(Path(".fitserve"), description="runs, artifacts and the embedded database")
    device: str | None = Field(None, description="torch device; default cuda when present, else cpu")

    @property
    def runs_dir(self) -> Path:
        return self.data_dir.resolve() / "runs"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

"""Bodies and answers of /v1/models' registry: names, numbered versions, movable aliases."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
# An alias starts with a letter, so `/versions/{v}` reads digits as a number and the rest as an alias.
ALIAS = r"^[A-Za-z][A-Za-z0-9._-]{0,63}$"
AliasName = Annotated[str, Field(pattern=ALIAS, max_length=64)]


class Batching(BaseModel):
    """How this model's concurrent requests share forward passes; an unset field is the
    service's default (see docs/serving.md)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int | None = Field(
        None, ge=1, le=4096, description="rows in one forward pass at most; 1 turns batching off"
    )
    max_delay_ms: float | None = Field(
        None, ge=0, le=1000, description="how long a pass waits for more requests, when some wait"
    )
    exact: bool | None = Field(
        None,
        description="pad every pass to a block of rows, so an answer is bit-identical whatever "
        "it was batched with (costs a lone small request up to 8x the compute)",
    )


class RegisterModel(BaseModel):
    """Register a succeeded job as the next version of `name` (version 1 when the name is new)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=MODEL_NAME, max_length=100, examples=["digits"])
    job_id: str = Field(max_length=40, description="a succeeded job of yours")
    description: str | None = Field(None, max_length=2000)
    aliases: list[AliasName] = Field(
        default_factory=list, max_length=20, description="aliases moved to the new version"
    )
    batching: Batching | None = None

    @field_validator("name")
    @classmethod
    def _not_a_job_id(cls, name: str) -> str:
        # A serving route's `{ref}` is a job id or a name: never both.
        if name.startswith("job_"):
            raise ValueError("a model name does not start with 'job_' (job ids do)")
        return name


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=2000)
    batching: Batching | None = None


class AliasUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1, description="the version the alias names from now on")


class ModelVersionPublic(BaseModel):
    name: str
    version: int
    job_id: str | None = Field(description="null once the job was deleted")
    job_status: str | None = Field(description="null once the job was deleted")
    aliases: list[str]
    created_at: datetime


class RegisteredModelPublic(BaseModel):
    name: str
    description: str | None
    latest_version: int | None = Field(description="what the name alone serves")
    aliases: dict[str, int]
    batching: Batching = Field(description="this model's overrides; unset: the service's")
    versions: list[ModelVersionPublic] | None = Field(
        None, description="GET /v1/models/{name} only"
    )
    created_at: datetime
    updated_at: datetime


class RegisteredModelsPublic(BaseModel):
    data: list[RegisteredModelPublic]
    count: int
    next_after: str | None = Field(description="pass as `after` for the next page; null at the end")

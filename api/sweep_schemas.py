"""HTTP shapes of /v1/sweeps: a sweep, its trials (each an ordinary job) and its best trial."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class SweepObjective(BaseModel):
    metric: str
    direction: Literal["min", "max"]


class SweepTrial(BaseModel):
    number: int = Field(description="the trial's number in the sweep, from 0")
    job_id: str | None = Field(description="its job; none for a trial the submit refused")
    status: str = Field(description="its job's status; `refused` for a trial without a job")
    reason: str | None
    params: dict[str, Any] = Field(description="its value at each path of the search space")
    value: float | None = Field(
        description="its objective: the final one, or a pruned trial's last reported one"
    )
    epoch: int = Field(description="epochs its job has trained")


class SweepBest(BaseModel):
    job_id: str
    trial: int | None
    value: float
    params: dict[str, Any]
    spec: dict[str, Any] = Field(
        description="the best trial's job spec: submit it to train it again"
    )


class SweepPublic(BaseModel):
    id: str
    name: str
    status: Literal["running", "succeeded", "cancelled", "failed"]
    reason: str | None
    objective: SweepObjective
    trial_budget: int = Field(
        description="trials to run: max_trials, or fewer where a grid has fewer"
    )
    parallelism: int
    trials_created: int
    trials_finished: int
    best: SweepBest | None
    trials: list[SweepTrial]
    spec: dict[str, Any] = Field(description="the sweep spec as posted, with its defaults")
    created_at: datetime
    finished_at: datetime | None


class SweepsPublic(BaseModel):
    data: list[SweepPublic]
    count: int

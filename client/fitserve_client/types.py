"""What the API answers, as pydantic models.

Written here, not imported from the server (this package never imports it), and kept equal to
the server's OpenAPI component schemas by tests/test_sdk_types.py. Unknown fields are ignored,
so a newer server that adds one does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

JobStatus = Literal["queued", "running", "preempted", "succeeded", "failed", "cancelled", "pruned"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "pruned"})
# A numpy array when numpy is installed (predict converts), else nested lists.
ArrayLike = Any


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Progress(Model):
    epoch: int
    epochs: int
    step: int
    steps: int


class JobState(Model):
    """A job without its spec: what the live stream's `job` events carry."""

    id: str
    name: str
    status: JobStatus
    reason: str | None
    attempt: int
    progress: Progress
    metrics: dict[str, float]
    test_metrics: dict[str, float]
    parameters: int
    estimated_memory_bytes: int
    device: str | None
    precision: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    seq: int
    trained_seconds: float

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class Job(JobState):
    """A job as the job routes answer it; `spec` as submitted (the server validated it)."""

    spec: dict[str, Any]


class JobList(Model):
    data: list[Job]
    count: int


class MetricPoint(Model):
    seq: int
    step: int
    epoch: int
    name: str
    value: float
    attempt: int
    time: datetime


class MetricPage(Model):
    data: list[MetricPoint]
    count: int
    next: int
    has_more: bool


class StatusEvent(Model):
    """A status change, as the live stream's `status` events carry it."""

    seq: int
    status: JobStatus
    reason: str | None
    attempt: int
    time: datetime


class Checkpoint(Model):
    epoch: int
    attempt: int
    sha256: str
    metrics: dict[str, float]
    created_at: datetime


class Checkpoints(Model):
    data: list[Checkpoint]
    count: int
    resume_from: int | None


class Dataset(Model):
    id: str | None
    name: str
    source: Literal["builtin", "uploaded"]
    task: str
    kind: str
    input_shape: list[int]
    num_classes: int | None
    class_names: list[str] | None
    samples: int | None
    test_samples: int | None = None
    target: str | None = None
    size_bytes: int | None = None
    created_at: datetime | None = None


class DatasetList(Model):
    data: list[Dataset]
    count: int


class Prediction(Model):
    """Predict's answer; the array fields are numpy arrays when numpy is installed."""

    operation: str
    predictions: ArrayLike
    class_ids: ArrayLike | None = None
    probabilities: ArrayLike | None = None
    classes: list[str] | None = None
    log_variances: ArrayLike | None = None
    job_id: str
    model: str | None = None
    version: int | None = None


class Batching(Model):
    """A registered model's batching overrides; None: the service's default."""

    max_batch_size: int | None = None
    max_delay_ms: float | None = None
    exact: bool | None = None


class ModelVersion(Model):
    name: str
    version: int
    job_id: str | None
    job_status: str | None
    aliases: list[str]
    created_at: datetime


class RegisteredModel(Model):
    name: str
    description: str | None
    latest_version: int | None
    aliases: dict[str, int]
    batching: Batching
    versions: list[ModelVersion] | None = None
    created_at: datetime
    updated_at: datetime


class ModelList(Model):
    data: list[RegisteredModel]
    count: int
    next_after: str | None


class ErrorDetail(Model):
    """One error of a 422: the field's path, a message, its kind."""

    loc: list[str | int]
    msg: str
    type: str


class Metrics(list[MetricPoint]):
    """A job's metric points in sequence order; `records()` as dicts, `to_pandas()` a frame."""

    def records(self) -> list[dict[str, Any]]:
        return [p.model_dump() for p in self]

    def to_pandas(self) -> Any:
        try:
            import pandas
        except ImportError as exc:
            raise ImportError(
                "to_pandas needs pandas: pip install 'fitserve-client[pandas]'"
            ) from exc
        columns = list(MetricPoint.model_fields)
        return pandas.DataFrame(self.records(), columns=columns)


Event = MetricPoint | StatusEvent | JobState


class SweepObjective(Model):
    metric: str
    direction: Literal["min", "max"]


class SweepTrial(Model):
    """A sweep's trial: its job (none for one the server refused), its values and objective."""

    number: int
    job_id: str | None
    status: str
    reason: str | None
    params: dict[str, Any]
    value: float | None
    epoch: int


class SweepBest(Model):
    job_id: str
    trial: int | None
    value: float
    params: dict[str, Any]
    spec: dict[str, Any]  # the best trial's job spec: submit it to train it again


class Sweep(Model):
    id: str
    name: str
    status: Literal["running", "succeeded", "cancelled", "failed"]
    reason: str | None
    objective: SweepObjective
    trial_budget: int
    parallelism: int
    trials_created: int
    trials_finished: int
    best: SweepBest | None
    trials: list[SweepTrial]
    spec: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        return self.status != "running"


class SweepList(Model):
    data: list[Sweep]
    count: int

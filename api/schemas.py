"""HTTP schemas: one family per resource (Public, Publics with data and count)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.spec import AnyJob
from core.tables import JobStatus

# The largest cursor or step a query may name: the database's BIGINT. One past it was a 500 (an
# integer the driver could not bind), found by schemathesis' stateful phase.
MAX_SEQ = 2**63 - 1


class Progress(BaseModel):
    epoch: int = Field(description="the epoch in progress or last finished, from 1")
    epochs: int
    step: int = Field(description="steps done in the current epoch")
    steps: int = Field(description="steps in one epoch")


class JobState(BaseModel):
    """A job as it stands, without its spec: what the live stream's `job` events carry."""

    id: str
    name: str
    status: JobStatus
    reason: str | None
    attempt: int
    progress: Progress
    metrics: dict[str, float] = Field(description="the latest epoch's metrics")
    test_metrics: dict[str, float]
    parameters: int
    estimated_memory_bytes: int
    device: str | None = Field(
        description="where it trains: cpu or cuda, set by its first attempt and kept"
    )
    precision: str | None = Field(
        description="fp32, bf16 or fp16 (autocast), set by its first attempt and kept"
    )
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    seq: int = Field(
        description="the job's event cursor: the number of its newest metric point or status change"
    )
    trained_seconds: float = Field(
        description="seconds its attempts have run, together (fit.max_seconds bounds it)"
    )


class JobPublic(JobState):
    spec: AnyJob


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class MetricPoint(BaseModel):
    seq: int = Field(
        description="its place in the job's event sequence: the cursor for `after` and Last-Event-ID"
    )
    step: int
    epoch: int
    name: str
    value: float
    attempt: int
    time: datetime


class MetricsPublic(BaseModel):
    data: list[MetricPoint]
    count: int
    next: int = Field(
        description="the cursor after this page: pass it as `after` for the points that follow"
    )
    has_more: bool = Field(description="the page was full: more points may follow at once")


class StatusEvent(BaseModel):
    """A status change, as the live stream's `status` events carry it."""

    seq: int = Field(description="its place in the job's event sequence")
    status: JobStatus
    reason: str | None
    attempt: int
    time: datetime


class CheckpointPublic(BaseModel):
    epoch: int
    attempt: int
    sha256: str
    metrics: dict[str, float]
    created_at: datetime


class CheckpointsPublic(BaseModel):
    data: list[CheckpointPublic]
    count: int
    resume_from: int | None = Field(
        description="the newest listed epoch, where a resume would start (the resume itself skips a "
        "checkpoint whose weights no longer match their sha256, and takes the one before)"
    )


class DatasetPublic(BaseModel):
    id: str | None = Field(description="an uploaded dataset's id; built-ins have none")
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


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


Operation = Literal[
    "predict", "encode", "decode", "reconstruct", "sample", "generate", "discriminate", "transform"
]


class PredictRequest(BaseModel):
    """`operation` defaults to the family's first one (predict for classifiers and regressors,
    reconstruct for autoencoders, generate for GANs...); a wrong one for the family is a 422."""

    model_config = ConfigDict(extra="forbid")

    operation: Operation | None = Field(None, description="default: the family's first operation")
    instances: list[Any] | None = Field(
        None,
        min_length=1,
        description="raw feature values (or latent vectors for decode), one entry per instance",
    )
    count: int | None = Field(None, ge=1, le=1024, description="sample / generate: how many")
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="sample / generate: a seed, for the same draws"
    )
    labels: list[Annotated[int, Field(ge=0, le=100_000)]] | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="generate with a conditional GAN: one class id per sample",
    )


class PredictResponse(BaseModel):
    operation: str = Field(description="the operation that ran")
    predictions: list[Any]
    class_ids: list[int] | None = None
    probabilities: list[list[float]] | None = None
    classes: list[str] | None = None
    log_variances: list[Any] | None = Field(
        None, description="vae encode: the log-variance beside each mean"
    )
    job_id: str = Field(description="the job whose model answered")
    model: str | None = Field(None, description="the registered name, when asked by name")
    version: int | None = Field(None, description="the version that answered, when asked by name")


class LayerRow(BaseModel):
    index: int
    type: str
    output_shape: list[int] = Field(description="one sample's output shape")
    parameters: int
    network: str | None = Field(None, description="a GAN's generator or discriminator")


class ModelInput(BaseModel):
    """What the model takes, as its dataset was when the job was submitted."""

    dataset: str = Field(description="the built-in's name, or the upload's name")
    dataset_id: str | None = Field(description="an uploaded dataset's id")
    kind: Literal["image", "tabular"]
    task: str
    input_shape: list[int]
    num_classes: int | None
    class_names: list[str] | None
    feature_names: list[str] | None = Field(description="a tabular dataset's columns, when named")
    feature_means: list[float] | None = Field(description="a tabular dataset's column means")
    value_range: list[float] | None = Field(
        description="an image dataset's raw pixel range [low, high] (digits 0-16, MNIST 0-255)"
    )


class JobSummary(BaseModel):
    """The dry run of the submit and what the model takes; jobs from before it was kept have no
    `layers` and no `input`."""

    family: str
    operations: list[str] = Field(description="the family's predict operations, default first")
    parameters: int
    estimated_memory_bytes: int
    output_shape: list[int] | None
    layers: list[LayerRow]
    input: ModelInput | None

"""The Fitserve SDK: `Client` and `AsyncClient` for a running Fitserve service.

from fitserve_client import Client

with Client("http://127.0.0.1:8000", api_key) as fs:
    job = fs.jobs.submit("examples/digits_mlp.json")
    fs.jobs.wait(job.id, progress=True)
    fs.models.predict(job.id, x[:5]).predictions
"""

from fitserve_client.client import AsyncClient, Client
from fitserve_client.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequest,
    Conflict,
    FitserveError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    ValidationError,
)
from fitserve_client.events import AsyncEventStream, EventStream
from fitserve_client.transport import RetryPolicy
from fitserve_client.types import (
    Checkpoint,
    Checkpoints,
    Dataset,
    DatasetList,
    ErrorDetail,
    Event,
    Job,
    JobList,
    JobState,
    MetricPoint,
    Metrics,
    Prediction,
    Progress,
    StatusEvent,
)

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncEventStream",
    "AuthenticationError",
    "BadRequest",
    "Checkpoint",
    "Checkpoints",
    "Client",
    "Conflict",
    "Dataset",
    "DatasetList",
    "ErrorDetail",
    "Event",
    "EventStream",
    "FitserveError",
    "Job",
    "JobList",
    "JobState",
    "MetricPoint",
    "Metrics",
    "NotFound",
    "PayloadTooLarge",
    "Prediction",
    "Progress",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "StatusEvent",
    "ValidationError",
]

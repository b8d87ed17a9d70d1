"""/v1/models/{job_id}/predict: inference from a succeeded job's checkpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.errors import ApiError, unprocessable
from api.model_cache import ModelCache
from api.routes.jobs import owned_job
from api.schemas import PredictRequest, PredictResponse
from core.storage import job_dir
from models.checkpoint import CheckpointError
from models.inference import PredictError

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.post("/{job_id}/predict", response_model=PredictResponse, response_model_exclude_none=True)
def predict(
    request: Request, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep, job_id: str,
    body: PredictRequest,
) -> PredictResponse:  # fmt: skip
    """Instances are in the dataset's raw units; the preprocessing saved with the model is applied here.
    A sync route: FastAPI runs it in its thread pool, off the event loop."""
    job = owned_job(session, tenant, job_id)
    if job.status != "succeeded":
        raise ApiError(409, f"job {job_id} is {job.status}; predict needs a succeeded job")
    if len(body.instances) > settings.predict_max_instances:
        raise unprocessable(f"at most {settings.predict_max_instances} instances per request", ("body", "instances"))
    cache: ModelCache = request.app.state.models
    try:
        predictor = cache.get(job.id, job_dir(settings.artifacts_dir, job.id) / "model.json")
        out = predictor.predict(body.instances)
    except PredictError as exc:
        raise unprocessable(str(exc), ("body", "instances")) from exc
    except CheckpointError as exc:
        raise ApiError(500, f"the model of job {job_id} cannot be loaded: {exc}") from exc
    return PredictResponse(job_id=job.id, **out)

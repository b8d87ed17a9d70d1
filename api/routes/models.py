"""/v1/models/{job_id}/predict: inference from a succeeded job's checkpoint."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from api.deps import UNAUTHORIZED, bearer_key
from api.errors import ApiError, responses, unprocessable
from api.model_cache import ModelCache
from api.observability import PREDICT_SECONDS
from api.predict_gate import PredictGate
from api.schemas import PredictRequest, PredictResponse
from core.db import hot_read
from core.repository import jobs as jobs_repo
from core.repository.tenants import hash_key
from core.settings import get_settings
from core.storage import job_dir
from core.tables import JobStatus
from models.checkpoint import CheckpointError
from models.errors import PredictError
from models.families import OPERATION_NAMES, OperationRequest

log = logging.getLogger("fitserve.api")
router = APIRouter(prefix="/v1/models", tags=["models"], responses=responses(401, 429, 503))


@router.post(
    "/{job_id}/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses=responses(400, 404, 409, 413),
)
@PREDICT_SECONDS.time()
def predict(
    request: Request,
    job_id: str,
    body: PredictRequest,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Instances are in the dataset's raw units; the preprocessing saved with the model is applied here.

    The hot path: a sync route (FastAPI runs it in its thread pool, off the event loop) with no
    dependencies to hop through; the key and the job are checked in one autocommit query, then
    remembered by the predict gate until a key is revoked; the model comes from the cache.
    """
    settings = get_settings()
    key = bearer_key(authorization)
    if key is None:
        raise UNAUTHORIZED
    key_hash = hash_key(key)
    gate: PredictGate = request.app.state.predict_gate
    if not gate.admits(key_hash, job_id):
        generation = gate.generation
        valid, job_status = hot_read(
            lambda connection: jobs_repo.status_for_key(
                connection=connection, key_hash=key_hash, job_id=job_id
            )
        )
        if not valid:
            raise UNAUTHORIZED
        if job_status is None:
            raise ApiError(404, f"job {job_id} not found")
        if job_status != JobStatus.SUCCEEDED:
            raise ApiError(409, f"job {job_id} is {job_status}; predict needs a succeeded job")
        gate.remember(
            key_hash, job_id, generation
        )  # succeeded is terminal: only a revocation undoes this
    if len(body.instances or ()) > settings.predict_max_instances:
        raise unprocessable(
            f"at most {settings.predict_max_instances} instances per request", ("body", "instances")
        )
    cache: ModelCache = request.app.state.models
    try:
        predictor = cache.get(job_id, job_dir(settings.artifacts_dir, job_id) / "model.json")
        operation = body.operation or OPERATION_NAMES[predictor.family][0]
        asked = OperationRequest(
            instances=body.instances, count=body.count, seed=body.seed, labels=body.labels
        )
        out = predictor.run(operation, asked)
    except PredictError as exc:
        raise unprocessable(str(exc), ("body", exc.field)) from exc
    except (
        CheckpointError
    ) as exc:  # the detail (a path on this server) goes to the log, not to the caller
        log.error("job %s: its model cannot be loaded: %s", job_id, exc)
        raise ApiError(
            500, f"the model of job {job_id} cannot be loaded; the server's log has the details"
        ) from exc
    # Serialised once, by pydantic's Rust encoder; a returned model would be validated again.
    answer = PredictResponse(job_id=job_id, operation=operation, **out)
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")

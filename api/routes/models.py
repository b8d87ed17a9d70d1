"""/v1/models/{job_id}/predict: inference from a succeeded job's checkpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from api.deps import bearer_key
from api.errors import responses, unprocessable
from api.model_refs import resolve
from api.observability import PREDICT_SECONDS
from api.schemas import PredictRequest, PredictResponse
from api.serving import run_operation
from core.settings import get_settings
from models.errors import PredictError
from models.families import OperationRequest

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
    served = resolve(request.app.state.predict_gate, bearer_key(authorization), job_id, None)
    if len(body.instances or ()) > settings.predict_max_instances:
        raise unprocessable(
            f"at most {settings.predict_max_instances} instances per request", ("body", "instances")
        )
    asked = OperationRequest(
        instances=body.instances, count=body.count, seed=body.seed, labels=body.labels
    )
    try:
        operation, out = run_operation(request.app.state, served, body.operation, asked)
    except PredictError as exc:
        raise unprocessable(str(exc), ("body", exc.field)) from exc
    # Serialised once, by pydantic's Rust encoder; a returned model would be validated again.
    answer = PredictResponse(job_id=job_id, operation=operation, **out)
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")

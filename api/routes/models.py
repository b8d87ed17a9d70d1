"""/v1/models/{ref}/predict and /v1/models/{name}/versions/{version}/predict: inference from a
succeeded job's checkpoint, named by its job id or through the model registry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response

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
    "/{ref}/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses=responses(400, 404, 409, 413),
)
@PREDICT_SECONDS.time()
def predict(
    request: Request,
    ref: Annotated[str, Path(description="a job id, or a registered model's name (its latest)")],
    body: PredictRequest,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Instances are in the dataset's raw units; the preprocessing saved with the model is applied here.

    The hot path: a sync route (FastAPI runs it in its thread pool, off the event loop) with no
    dependencies to hop through; the key and the job are checked in one autocommit query (a job
    id's answer is then remembered by the predict gate until a key is revoked); the model comes
    from the cache, and concurrent requests to it share forward passes (docs/serving.md).
    """
    return _predict(request, ref, None, body, authorization)


@router.post(
    "/{name}/versions/{version}/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses=responses(400, 404, 409, 413),
)
@PREDICT_SECONDS.time()
def predict_version(
    request: Request,
    name: str,
    version: Annotated[str, Path(description="a version number, or an alias such as production")],
    body: PredictRequest,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Predict with one version of a registered model, by number or by alias."""
    return _predict(request, name, version, body, authorization)


def _predict(
    request: Request,
    ref: str,
    version: str | None,
    body: PredictRequest,
    authorization: str | None,
) -> Response:
    settings = get_settings()
    state = request.app.state
    served = resolve(state.predict_gate, bearer_key(authorization), ref, version, state.names)
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
    answer = PredictResponse(
        job_id=served.job_id,
        model=served.name,
        version=served.version,
        operation=operation,
        **out,
    )
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")

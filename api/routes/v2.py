"""The Open Inference Protocol v2 over REST (KServe's, Triton's): health, server and model metadata,
model readiness and inference, with the binary tensor data extension. docs/inference-protocol.md.

A model is named as on /v1 (a job id, or a registered name with an optional version), resolved by
api/model_refs.py: the key is checked, another tenant's model is a 404 on every route, a job that
has not succeeded a 409. Errors are the protocol's `{"error": message}`. Health and the server
metadata are public (as /healthz and /readyz are): they say nothing about any tenant's models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import bearer_key
from api.errors import ApiError
from api.model_refs import ServedModel, resolve
from api.oip import (
    DTYPES,
    InferRequest,
    OipError,
    OutputTensor,
    RequestedOutput,
    encode_response,
    parse_request,
)
from api.oip_models import OperationIO, describe, metadata, operations
from api.routes.health import _check_broker, _check_database
from api.serving import load, run_operation
from core.settings import get_settings
from models.errors import PredictError
from models.families import OperationRequest
from models.inference import Predictor

router = APIRouter(prefix="/v2", tags=["inference protocol (v2)"])


class ProtocolError(BaseModel):
    """The protocol's error object."""

    error: str


_MEANINGS = {
    400: "a tensor, parameter or output is wrong; the message names it",
    401: "a valid API key is required",
    404: "no such model, or another tenant's",
    409: "the job has not succeeded, or its model files are gone",
    413: "the body is over PREDICT_MAX_BYTES",
    500: "the model cannot be loaded; the server's log has the details",
}


def _refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ProtocolError, "description": _MEANINGS[c]} for c in codes}


MODEL_REFUSALS = _refusals(401, 404, 409, 500)
INFER_REFUSALS = _refusals(400, 401, 404, 409, 413, 500)
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": list(DTYPES)},
        "parameters": {"type": "object", "description": "binary_data_size: its bytes follow"},
        "data": {"type": "array", "description": "row-major, flat or nested"},
    },
}
# The body is read raw (JSON, or JSON and binary tensors), so the schema is declared by hand.
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "title": "InferenceRequest",
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {
                            "type": "object",
                            "description": "operation, count, seed, binary_data_output",
                        },
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "Inference-Header-Content-Length bytes of JSON, then tensors",
                }
            },
        },
    }
}
EXTENSIONS = ["binary_tensor_data"]
Authorization = Annotated[str | None, Header()]
MAX_COUNT, MAX_SEED, MAX_LABEL = 1024, 2**31 - 1, 100_000  # as /v1 predict's body allows


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _answering(work: Callable[[], Response]) -> Response:
    """Every refusal in the protocol's shape, with its status (and headers: a 401's challenge)."""
    try:
        return work()
    except OipError as exc:
        return _error(exc.status, exc.message)
    except ApiError as exc:
        return _error(exc.status, exc.message)
    except HTTPException as exc:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


def _resolve(
    request: Request, authorization: str | None, name: str, version: str | None
) -> ServedModel:
    gate = request.app.state.predict_gate
    return resolve(gate, bearer_key(authorization), name, version, request.app.state.names)


def _head(name: str, served: ServedModel) -> dict[str, Any]:
    head: dict[str, Any] = {"model_name": name}
    if served.version is not None:
        head["model_version"] = str(served.version)
    return head


@router.get("/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "the database or broker is down"}})
def ready() -> JSONResponse:
    ok = _check_database() == "ok" and _check_broker() == "ok"
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("")
def server_metadata(request: Request) -> dict[str, Any]:
    return {"name": "fitserve", "version": request.app.version, "extensions": EXTENSIONS}


# -- model metadata and readiness --------------------------------------------------------------
def _metadata(
    request: Request, authorization: str | None, name: str, version: str | None
) -> Response:
    def work() -> Response:
        served = _resolve(request, authorization, name, version)
        predictor = load(request.app.state, served)
        return JSONResponse(metadata(name, served.version, predictor))

    return _answering(work)


@router.get("/models/{name}", responses=MODEL_REFUSALS)
def model_metadata(request: Request, name: str, authorization: Authorization = None) -> Response:
    return _metadata(request, authorization, name, None)


@router.get("/models/{name}/versions/{version}", responses=MODEL_REFUSALS)
def model_version_metadata(
    request: Request, name: str, version: str, authorization: Authorization = None
) -> Response:
    return _metadata(request, authorization, name, version)


def _ready(request: Request, authorization: str | None, name: str, version: str | None) -> Response:
    def work() -> Response:
        served = _resolve(request, authorization, name, version)
        load(request.app.state, served)  # ready: loaded, in the model cache
        return JSONResponse({"name": name, "ready": True})

    return _answering(work)


@router.get("/models/{name}/ready", responses=MODEL_REFUSALS)
def model_ready(request: Request, name: str, authorization: Authorization = None) -> Response:
    return _ready(request, authorization, name, None)


@router.get("/models/{name}/versions/{version}/ready", responses=MODEL_REFUSALS)
def model_version_ready(
    request: Request, name: str, version: str, authorization: Authorization = None
) -> Response:
    return _ready(request, authorization, name, version)


# -- inference ---------------------------------------------------------------------------------
async def _body(request: Request) -> bytes:
    """The body, read on the event loop (the body limit has bounded it); the route runs in a thread."""
    return await request.body()


Body = Annotated[bytes, Depends(_body)]
HeaderLength = Annotated[str | None, Header(alias="Inference-Header-Content-Length")]


def _parameter_int(req: InferRequest, name: str, low: int, high: int) -> int | None:
    value = req.parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OipError(f"parameter {name!r} must be an integer in {low}..{high}")
    return value


def _operation(req: InferRequest, predictor: Predictor) -> str:
    allowed = operations(predictor)
    chosen = req.parameters.get("operation", allowed[0])
    if chosen not in allowed:
        raise OipError(
            f"parameter 'operation': {chosen!r} is not an operation of this {predictor.family} "
            f"model; choose one of {list(allowed)}"
        )
    return str(chosen)


def _operation_request(
    req: InferRequest, io: OperationIO, operation: str, family: str
) -> OperationRequest:
    known = {"operation", "binary_data_output", *io.parameters}
    unknown = set(req.parameters) - known
    if unknown:
        raise OipError(
            f"parameter {sorted(unknown)[0]!r} is not read by {operation}; it reads "
            f"{', '.join(sorted(known))}"
        )
    names = [t.name for t in io.inputs]
    extra = [name for name in req.inputs if name not in names]
    if extra:
        raise OipError(
            f"input {extra[0]!r} is not an input of {operation}; its inputs are "
            f"{names or 'none (it reads parameters)'}"
        )
    limit = get_settings().predict_max_instances
    instances = req.inputs.get("instances")
    if "instances" in names and instances is None:
        raise OipError(f"input 'instances' is required by {operation}")
    if instances is not None:
        if instances.ndim < 1 or len(instances) == 0:
            raise OipError("input 'instances': give at least one instance (shape [n, ...])")
        if len(instances) > limit:
            raise OipError(f"input 'instances': at most {limit} instances per request")
    labels = req.inputs.get("labels")
    label_list: list[int] | None = None
    if labels is not None:
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or not 1 <= len(labels) <= limit:
            raise OipError(f"input 'labels' must be 1..{limit} integer class ids, shape [n]")
        if labels.min() < 0 or labels.max() > MAX_LABEL:
            raise OipError(f"input 'labels': class ids lie in 0..{MAX_LABEL}")
        label_list = labels.tolist()
    if instances is not None and family == "seq2seq":
        # seq2seq checks each token of a list; a numeric array is the same values
        return OperationRequest(instances=instances.tolist(), labels=label_list)
    return OperationRequest(
        instances=instances,
        count=_parameter_int(req, "count", 1, MAX_COUNT),
        seed=_parameter_int(req, "seed", 0, MAX_SEED),
        labels=label_list,
    )


_FIELDS = {
    "instances": "input 'instances'",
    "labels": "input 'labels'",
    "count": "parameter 'count'",
    "seed": "parameter 'seed'",
    "operation": "parameter 'operation'",
}


def _outputs(req: InferRequest, io: OperationIO, out: dict[str, Any]) -> list[OutputTensor]:
    specs = {t.name: t for t in io.outputs}
    produced = [name for name in specs if name in out]
    requested = req.outputs
    if requested is None:
        requested = [RequestedOutput(name, None) for name in produced]
    missing = [o.name for o in requested if o.name not in produced]
    if missing:
        raise OipError(f"output {missing[0]!r} is not an output here; choose from {produced}")
    tensors = []
    for wanted in requested:
        spec, value = specs[wanted.name], out[wanted.name]
        if spec.datatype == "BYTES":
            array = np.array([str(v).encode() for v in value], dtype=object)
        else:
            array = np.asarray(value, dtype=np.float32 if spec.datatype == "FP32" else np.int64)
        binary = req.binary_output if wanted.binary is None else wanted.binary
        tensors.append(OutputTensor(wanted.name, spec.datatype, array, binary))
    return tensors


def _infer(
    request: Request,
    authorization: str | None,
    name: str,
    version: str | None,
    body: bytes,
    header_length: str | None,
) -> Response:
    def work() -> Response:
        served = _resolve(request, authorization, name, version)
        req = parse_request(body, header_length)
        predictor = load(request.app.state, served)
        operation = _operation(req, predictor)
        io = describe(predictor, operation)
        asked = _operation_request(req, io, operation, predictor.family)
        try:
            ran, out = run_operation(request.app.state, served, operation, asked)
        except PredictError as exc:
            raise OipError(f"{_FIELDS.get(exc.field, exc.field)}: {exc}") from exc
        head = _head(name, served)
        if req.id is not None:
            head["id"] = req.id
        head["parameters"] = {"operation": ran}
        content, length = encode_response(head, _outputs(req, io, out))
        if length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(length)},
        )

    return _answering(work)


@router.post("/models/{name}/infer", responses=INFER_REFUSALS, openapi_extra=INFER_BODY)
def infer(
    request: Request,
    name: str,
    body: Body,
    authorization: Authorization = None,
    inference_header_content_length: HeaderLength = None,
) -> Response:
    return _infer(request, authorization, name, None, body, inference_header_content_length)


@router.post(
    "/models/{name}/versions/{version}/infer", responses=INFER_REFUSALS, openapi_extra=INFER_BODY
)
def infer_version(
    request: Request,
    name: str,
    version: str,
    body: Body,
    authorization: Authorization = None,
    inference_header_content_length: HeaderLength = None,
) -> Response:
    return _infer(request, authorization, name, version, body, inference_header_content_length)

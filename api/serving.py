"""Run a family operation on a resolved model: the one entry every serving route calls, so
loading, caching and batching are shared by /v1 predict and /v2 infer."""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch
from starlette.datastructures import State

from api import batching
from api.errors import ApiError
from api.model_cache import ModelCache
from api.model_refs import ServedModel
from core.settings import get_settings
from core.storage import job_dir
from models.checkpoint import CheckpointError
from models.families import OPERATION_NAMES, OperationRequest
from models.inference import Predictor

log = logging.getLogger("fitserve.api")
_thread = threading.local()


def one_torch_thread() -> None:
    """Each request thread runs torch on one thread, set in that thread: a thread the pool made
    can otherwise start with the machine's count, and a matrix product split over two threads
    rounds differently (measured: the same request answered in two different last bits)."""
    if not getattr(_thread, "set", False):
        torch.set_num_threads(1)
        _thread.set = True


def load(state: State, served: ServedModel) -> Predictor:
    """The model from the cache; missing files are a 409 (the job's files were removed), an
    unreadable checkpoint a 500 whose detail (a path on this server) goes to the log."""
    cache: ModelCache = state.models
    path = job_dir(get_settings().artifacts_dir, served.job_id) / "model.json"
    try:
        return cache.get(served.job_id, path)
    except CheckpointError as exc:
        if not path.exists():
            raise ApiError(
                409, f"the model files of job {served.job_id} are missing from this server"
            ) from exc
        log.error("job %s: its model cannot be loaded: %s", served.job_id, exc)
        raise ApiError(
            500,
            f"the model of job {served.job_id} cannot be loaded; the server's log has the details",
        ) from exc


def run_operation(
    state: State, served: ServedModel, operation: str | None, request: OperationRequest
) -> tuple[str, dict[str, Any]]:
    """(the operation that ran, its outputs). Raises PredictError for the caller's mistakes.
    Requests with only `instances` are batched with concurrent ones to the same model."""
    one_torch_thread()
    predictor = load(state, served)
    name = operation or OPERATION_NAMES[predictor.family][0]
    settings = served.batching or batching.default_settings()
    return name, batching.run(predictor, name, request, settings)

"""/v1/models/{job_id}/predict: numpy arrays in and out when numpy is installed, lists otherwise.

Instances go in the dataset's raw units (the server applies the model's preprocessing).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from fitserve_client.transport import AsyncTransport, Call, Transport
from fitserve_client.types import Prediction

ARRAY_FIELDS = ("predictions", "class_ids", "probabilities", "log_variances")


def as_lists(instances: Any) -> Any:
    """JSON-ready instances: an array (or a list of arrays) as nested lists."""
    if hasattr(instances, "tolist"):
        return instances.tolist()
    return [i.tolist() if hasattr(i, "tolist") else i for i in instances]


def as_arrays(prediction: Prediction) -> Prediction:
    """The answer's lists as numpy arrays, when numpy is installed and they are rectangular."""
    try:
        import numpy as np
    except ImportError:
        return prediction
    arrays = {}
    for name in ARRAY_FIELDS:
        value = getattr(prediction, name)
        if value is not None:
            try:
                arrays[name] = np.asarray(value)
            except ValueError:  # ragged (sequences of different lengths): kept as lists
                continue
    return prediction.model_copy(update=arrays)


def _parse(response: httpx.Response) -> Prediction:
    return as_arrays(Prediction.model_validate_json(response.content))


def predict_call(
    job_id: str, instances: Any, operation: str | None, fields: dict[str, Any]
) -> Call[Prediction]:
    body = dict(fields)  # count, seed, labels: the operation's own fields
    if instances is not None:
        body["instances"] = as_lists(instances)
    if operation is not None:
        body["operation"] = operation
    if body.get("labels") is not None:
        body["labels"] = as_lists(body["labels"])
    return Call("POST", f"/v1/models/{quote(job_id, safe='')}/predict", _parse, json=body)


class Models:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def predict(
        self, job_id: str, instances: Any = None, *, operation: str | None = None, **fields: Any
    ) -> Prediction:
        """Run a succeeded job's model; `fields` are the operation's own (count, seed, labels)."""
        return self._t.send(predict_call(job_id, instances, operation, fields))


class AsyncModels:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def predict(
        self, job_id: str, instances: Any = None, *, operation: str | None = None, **fields: Any
    ) -> Prediction:
        return await self._t.send(predict_call(job_id, instances, operation, fields))

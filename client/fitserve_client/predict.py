"""/v1/models: predict (numpy arrays in and out when numpy is installed, lists otherwise) and the
model registry (client/registry.py builds those calls).

Instances go in the dataset's raw units (the server applies the model's preprocessing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from fitserve_client import registry
from fitserve_client.registry import model_path
from fitserve_client.transport import AsyncTransport, Call, Transport
from fitserve_client.types import ModelList, ModelVersion, Prediction, RegisteredModel

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
    ref: str,
    version: str | int | None,
    instances: Any,
    operation: str | None,
    fields: dict[str, Any],
) -> Call[Prediction]:
    body = dict(fields)  # count, seed, labels: the operation's own fields
    if instances is not None:
        body["instances"] = as_lists(instances)
    if operation is not None:
        body["operation"] = operation
    if body.get("labels") is not None:
        body["labels"] = as_lists(body["labels"])
    path = model_path(ref)
    if version is not None:
        path += f"/versions/{quote(str(version), safe='')}"
    return Call("POST", f"{path}/predict", _parse, json=body)


class Models:
    """Predict, and the model registry: names, numbered versions, aliases."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def predict(
        self,
        ref: str,
        instances: Any = None,
        *,
        version: str | int | None = None,
        operation: str | None = None,
        **fields: Any,
    ) -> Prediction:
        """`ref` a job id or a registered name (its latest version, or `version`: a number or an
        alias); `fields` are the operation's own (count, seed, labels)."""
        return self._t.send(predict_call(ref, version, instances, operation, fields))

    def register(
        self,
        name: str,
        job_id: str,
        *,
        aliases: Sequence[str] = (),
        description: str | None = None,
        batching: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """A succeeded job as the next version of `name`; `aliases` move to it."""
        return self._t.send(registry.register_call(name, job_id, aliases, description, batching))

    def list(self, *, after: str | None = None, limit: int = 50) -> ModelList:
        return self._t.send(registry.list_call(after, limit))

    def get(self, name: str) -> RegisteredModel:
        return self._t.send(registry.get_call(name))

    def update(self, name: str, **fields: Any) -> RegisteredModel:
        """`description` or `batching` (a dict; a None value goes back to the default)."""
        return self._t.send(registry.update_call(name, fields))

    def set_alias(self, name: str, alias: str, version: int) -> RegisteredModel:
        """Create `alias` or move it to `version`, in one write."""
        return self._t.send(registry.set_alias_call(name, alias, version))

    def delete_alias(self, name: str, alias: str) -> None:
        self._t.send(registry.delete_alias_call(name, alias))

    def delete_version(self, name: str, version: int) -> None:
        self._t.send(registry.delete_version_call(name, version))

    def delete(self, name: str) -> None:
        self._t.send(registry.delete_call(name))


class AsyncModels:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def predict(
        self,
        ref: str,
        instances: Any = None,
        *,
        version: str | int | None = None,
        operation: str | None = None,
        **fields: Any,
    ) -> Prediction:
        return await self._t.send(predict_call(ref, version, instances, operation, fields))

    async def register(
        self,
        name: str,
        job_id: str,
        *,
        aliases: Sequence[str] = (),
        description: str | None = None,
        batching: dict[str, Any] | None = None,
    ) -> ModelVersion:
        call = registry.register_call(name, job_id, aliases, description, batching)
        return await self._t.send(call)

    async def list(self, *, after: str | None = None, limit: int = 50) -> ModelList:
        return await self._t.send(registry.list_call(after, limit))

    async def get(self, name: str) -> RegisteredModel:
        return await self._t.send(registry.get_call(name))

    async def update(self, name: str, **fields: Any) -> RegisteredModel:
        return await self._t.send(registry.update_call(name, fields))

    async def set_alias(self, name: str, alias: str, version: int) -> RegisteredModel:
        return await self._t.send(registry.set_alias_call(name, alias, version))

    async def delete_alias(self, name: str, alias: str) -> None:
        await self._t.send(registry.delete_alias_call(name, alias))

    async def delete_version(self, name: str, version: int) -> None:
        await self._t.send(registry.delete_version_call(name, version))

    async def delete(self, name: str) -> None:
        await self._t.send(registry.delete_call(name))

"""/v1/models' registry: a succeeded job registered under a name, numbered versions, aliases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from fitserve_client.transport import Call, no_content, parse
from fitserve_client.types import ModelList, ModelVersion, RegisteredModel


def model_path(name: str) -> str:
    return f"/v1/models/{quote(name, safe='')}"


def register_call(
    name: str,
    job_id: str,
    aliases: Sequence[str],
    description: str | None,
    batching: dict[str, Any] | None,
) -> Call[ModelVersion]:
    body: dict[str, Any] = {"name": name, "job_id": job_id, "aliases": list(aliases)}
    if description is not None:
        body["description"] = description
    if batching is not None:
        body["batching"] = batching
    # Not idempotent: sent twice, it would register two versions.
    return Call("POST", "/v1/models", parse(ModelVersion), json=body, idempotent=False)


def list_call(after: str | None, limit: int) -> Call[ModelList]:
    params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
    return Call("GET", "/v1/models", parse(ModelList), params=params)


def get_call(name: str) -> Call[RegisteredModel]:
    return Call("GET", model_path(name), parse(RegisteredModel))


def update_call(name: str, fields: dict[str, Any]) -> Call[RegisteredModel]:
    return Call("PATCH", model_path(name), parse(RegisteredModel), json=fields)


def set_alias_call(name: str, alias: str, version: int) -> Call[RegisteredModel]:
    path = f"{model_path(name)}/aliases/{quote(alias, safe='')}"
    return Call("PUT", path, parse(RegisteredModel), json={"version": version})


def delete_alias_call(name: str, alias: str) -> Call[None]:
    path = f"{model_path(name)}/aliases/{quote(alias, safe='')}"
    return Call("DELETE", path, no_content, idempotent=False)


def delete_version_call(name: str, version: int) -> Call[None]:
    return Call("DELETE", f"{model_path(name)}/versions/{version}", no_content, idempotent=False)


def delete_call(name: str) -> Call[None]:
    return Call("DELETE", model_path(name), no_content, idempotent=False)

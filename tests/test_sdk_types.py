"""The SDK's response models against the server's OpenAPI schema: the same fields, the same
required ones, the same JSON types, so the two cannot drift. The SDK keeps its own copies (it
never imports the server); this test is what keeps them equal."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from fitserve_client import types
from pydantic import BaseModel

from api.main import create_app

# SDK model -> the OpenAPI component it reads
COMPONENTS: dict[type[BaseModel], str] = {
    types.Job: "JobPublic",
    types.JobList: "JobsPublic",
    types.Progress: "Progress",
    types.MetricPoint: "MetricPoint",
    types.MetricPage: "MetricsPublic",
    types.Checkpoint: "CheckpointPublic",
    types.Checkpoints: "CheckpointsPublic",
    types.Dataset: "DatasetPublic",
    types.DatasetList: "DatasetsPublic",
    types.Prediction: "PredictResponse",
    types.ModelVersion: "ModelVersionPublic",
    types.RegisteredModel: "RegisteredModelPublic",
    types.ModelList: "RegisteredModelsPublic",
    types.Batching: "Batching",
    types.ErrorDetail: "ValidationError",
    types.Sweep: "SweepPublic",
    types.SweepList: "SweepsPublic",
    types.SweepTrial: "SweepTrial",
    types.SweepBest: "SweepBest",
    types.SweepObjective: "SweepObjective",
}
# The live stream's events: the `data:` schema of each event kind
EVENTS: dict[str, type[BaseModel]] = {
    "metric": types.MetricPoint,
    "status": types.StatusEvent,
    "job": types.JobState,
}
# Fields of the server's the SDK leaves out on purpose: a 422 error's echo of the input
LEFT_OUT = {"ValidationError": {"input", "ctx"}}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app().openapi()


def kinds(schema: dict[str, Any], defs: dict[str, Any]) -> frozenset[str]:
    """A property's JSON types, coarsely: `array<integer>`, `string:date-time`, `object`...;
    `any` for a schema that allows anything. A reference to a model is `object` (each model is
    compared in its own pair)."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return frozenset({"object"}) if "properties" in target else kinds(target, defs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return frozenset().union(*(kinds(s, defs) for s in schema[key]))
    if "const" in schema or ("enum" in schema and "type" not in schema):
        values = [schema["const"]] if "const" in schema else schema["enum"]
        return frozenset({"string" if isinstance(v, str) else "number" for v in values})
    found = set()
    for kind in [schema["type"]] if isinstance(schema.get("type"), str) else schema.get("type", []):
        if kind == "array":
            found.add(f"array<{','.join(sorted(kinds(schema.get('items', {}), defs)))}>")
        elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            found.add(f"object<{','.join(sorted(kinds(schema['additionalProperties'], defs)))}>")
        elif kind == "string" and "format" in schema:
            found.add(f"string:{schema['format']}")
        else:
            found.add(kind)
    return frozenset(found or {"any"})


def assert_same(model: type[BaseModel], server: dict[str, Any], components: dict[str, Any]) -> None:
    ours = model.model_json_schema(ref_template="#/$defs/{model}")
    defs = {**components, **ours.get("$defs", {})}
    name = server.get("title", model.__name__)
    fields = set(server["properties"]) - LEFT_OUT.get(name, set())
    assert set(ours["properties"]) == fields, (model.__name__, name)
    assert set(ours.get("required", [])) == set(server.get("required", [])), model.__name__
    for field in fields:
        mine, theirs = (
            kinds(ours["properties"][field], defs),
            kinds(server["properties"][field], components),
        )
        if "any" in mine:  # an array field: numpy arrays or lists on the SDK's side
            assert ("null" in mine) == ("null" in theirs), (model.__name__, field)
        else:
            assert mine == theirs, (model.__name__, field, mine, theirs)


def test_each_response_model_has_the_servers_fields_and_types(openapi: dict[str, Any]) -> None:
    components = openapi["components"]["schemas"]
    for model, name in COMPONENTS.items():
        assert_same(model, components[name], components)


def test_each_event_model_is_the_streams_data_schema(openapi: dict[str, Any]) -> None:
    components = openapi["components"]["schemas"]
    answer = openapi["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]
    items = answer["content"]["text/event-stream"]["itemSchema"]["oneOf"]
    by_kind = {
        i["properties"]["event"]["const"]: i["properties"]["data"]["contentSchema"] for i in items
    }
    assert set(by_kind) == set(EVENTS)
    for kind, model in EVENTS.items():
        assert_same(model, by_kind[kind], components)


def test_every_response_the_api_declares_has_an_sdk_model(openapi: dict[str, Any]) -> None:
    declared = {n for n in openapi["components"]["schemas"] if n.endswith(("Public", "Response"))}
    assert declared <= set(COMPONENTS.values()), declared - set(COMPONENTS.values())


def test_the_job_statuses_are_the_servers(openapi: dict[str, Any]) -> None:
    assert set(get_args(types.JobStatus)) == set(
        openapi["components"]["schemas"]["JobStatus"]["enum"]
    )
    assert {"succeeded", "failed", "cancelled", "pruned"} == types.TERMINAL


def test_kinds_tell_types_apart() -> None:
    """The comparison is not vacuous: a changed type reads differently."""
    assert kinds({"type": "integer"}, {}) != kinds({"type": "number"}, {})
    assert kinds({"type": "array", "items": {"type": "integer"}}, {}) == {"array<integer>"}
    assert kinds({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}, {}) == {
        "string:date-time",
        "null",
    }

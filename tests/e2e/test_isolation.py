"""Tenant isolation, walked from the live OpenAPI schema: every route with a path parameter is
called by one tenant with the other tenant's real ids (a succeeded job, an uploaded dataset) and
a body the owner's own call accepts; each answers 404 naming the object and nothing more, the
same answer a never-made id gets, and leaves the owner's objects as they were. A route whose path
parameter the walk cannot fill fails the test (extend PARAMS), as does a request body it cannot
make (extend BODIES): a new route cannot slip past the walk. The routes without ids, the lists
among them, show nothing of the other tenant; ids are 128 random bits. Both directions, both
backends."""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Service, wait_for
from tests.helpers import EXAMPLES

METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")
PATH_PARAMETER = re.compile(r"\{(\w+)\}")
ID_PREFIXES = {
    "job": "job_",
    "dataset": "ds_",
    "model": "m-",  # a registered name, chosen by the test: 128 random bits too
    "sweep": "swp_",
}  # then 32 hex digits: core.tables.new_id, 128 random bits
ID_FORMATS = {kind: re.compile(f"{prefix}[0-9a-f]{{32}}") for kind, prefix in ID_PREFIXES.items()}
# Each path parameter the schema may hold, and the kind of object whose id fills it.
PARAMS = {
    "job_id": "job",
    "dataset_id": "dataset",
    "sweep_id": "sweep",
    "ref": "job",  # a serving route's job id or name: walked with the job id
    "name": "model",
    "alias": "alias",
    "version": "version",
}
ALIAS, VERSION = "production", "1"  # the owner's registered model has both
# The routes the walk must at least reach: fewer means the schema lost some, not that they are safe.
KNOWN = {
    ("GET", "/v1/jobs/{job_id}"),
    ("GET", "/v1/jobs/{job_id}/metrics"),
    ("GET", "/v1/jobs/{job_id}/checkpoints"),
    ("GET", "/v1/jobs/{job_id}/events"),
    ("POST", "/v1/jobs/{job_id}/cancel"),
    ("POST", "/v1/models/{ref}/predict"),
    ("POST", "/v1/models/{name}/versions/{version}/predict"),
    ("GET", "/v1/models/{name}"),
    ("PUT", "/v1/models/{name}/aliases/{alias}"),
    ("DELETE", "/v1/models/{name}"),
    ("GET", "/v1/datasets/{dataset_id}"),
    ("DELETE", "/v1/datasets/{dataset_id}"),
    ("GET", "/v1/sweeps/{sweep_id}"),
    ("POST", "/v1/sweeps/{sweep_id}/cancel"),
}
DIRECTIONS = [pytest.param("a", "b", id="b-probes-a"), pytest.param("b", "a", id="a-probes-b")]


@dataclass(frozen=True)
class Owned:
    """One tenant's objects; `marker` is in each of their names, so any echo of them can be found."""

    tenant: str
    marker: str
    job: dict[str, Any]
    dataset: dict[str, Any]
    features: int  # values in one instance of the job's dataset, for a valid predict body
    model: str  # the job registered under this name, version 1, aliased `production`
    sweep: str  # a one-trial sweep's id, ended

    @property
    def ids(self) -> dict[str, str]:
        objects = {"job": self.job["id"], "dataset": self.dataset["id"], "model": self.model}
        objects["sweep"] = self.sweep
        return objects | {"alias": ALIAS, "version": VERSION}

    def traces(self) -> list[str]:
        return [self.marker, self.job["id"], self.dataset["id"], self.model, self.sweep]


# The body each request schema gets: one its owner's call accepts, so a 404 cannot be a bad body's.
BODIES: dict[str, Callable[[Owned], dict[str, Any]]] = {
    "PredictRequest": lambda owned: {"instances": [[0.0] * owned.features]},
    "ModelUpdate": lambda owned: {"description": "walked"},
    "AliasUpdate": lambda owned: {"version": int(VERSION)},
    "InferenceRequest": lambda owned: {  # /v2 infer: the Open Inference Protocol's request
        "inputs": [
            {
                "name": "instances",
                "shape": [1, owned.features],
                "datatype": "FP32",
                "data": [0.0] * owned.features,
            }
        ]
    },
}


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    params: tuple[str, ...]
    body: (
        str | None
    )  # the request body's schema name, or its content types when it is not a JSON $ref

    def url(self, ids: dict[str, str]) -> str:
        return PATH_PARAMETER.sub(lambda m: ids[PARAMS[m.group(1)]], self.template)

    def request(self, client: httpx.Client, ids: dict[str, str], owned: Owned) -> httpx.Response:
        if self.body is None:
            return client.request(self.method, self.url(ids))
        assert self.body in BODIES, (
            f"{self.method} {self.template} takes a {self.body} body the cross-tenant "
            "walk cannot make: add one to BODIES in tests/e2e/test_isolation.py"
        )
        return client.request(self.method, self.url(ids), json=BODIES[self.body](owned))

    def not_found(self, ids: dict[str, str]) -> list[dict[str, str]]:
        field = "error" if self.template.startswith("/v2/") else "detail"  # the protocol's shape
        return [{field: f"{PARAMS[p]} {ids[PARAMS[p]]} not found"} for p in self.params]


def body_schema(operation: dict[str, Any]) -> str | None:
    content = operation.get("requestBody", {}).get("content")
    if not content:
        return None
    schema = content.get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else schema.get("title") or ",".join(sorted(content))


def schema_routes(service: Service) -> tuple[list[Route], list[str]]:
    """The routes with path parameters, and the GET paths without any, from the running service."""
    schema = httpx.get(f"{service.url}/openapi.json").json()
    routes, plain = [], []
    for path, item in schema["paths"].items():
        params = tuple(PATH_PARAMETER.findall(path))
        unknown = [p for p in params if p not in PARAMS]
        assert not unknown, (
            f"{path} has path parameters {unknown} the cross-tenant walk cannot fill: "
            "add them to PARAMS in tests/e2e/test_isolation.py"
        )
        for method in (m for m in METHODS if m in item):
            if params:
                routes.append(Route(method.upper(), path, params, body_schema(item[method])))
            elif method == "get":
                plain.append(path)
    return routes, plain


def _upload(client: httpx.Client, marker: str) -> dict[str, Any]:
    rows = ["width,height,kind"] + [
        f"{i % 7}.5,{i % 5}.25,{'yes' if i % 2 else 'no'}-{marker}" for i in range(40)
    ]
    answer = client.post(
        "/v1/datasets",
        files={"file": (f"isolation-{marker}.csv", "\n".join(rows), "text/csv")},
        data={"target": "kind"},
    )
    assert answer.status_code == 201, answer.text
    dataset: dict[str, Any] = answer.json()
    return dataset


def _submit(client: httpx.Client, marker: str) -> str:
    spec = json.loads((EXAMPLES / "digits_mlp.json").read_text()) | {"name": f"isolation-{marker}"}
    spec["fit"] |= {"epochs": 1}
    answer = client.post("/v1/jobs", json=spec)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _sweep(client: httpx.Client, marker: str) -> str:
    """A one-trial sweep of a one-epoch job, started (it ends while the fixture waits)."""
    base = json.loads((EXAMPLES / "digits_mlp.json").read_text()) | {"name": f"sweep-{marker}"}
    base["fit"] |= {"epochs": 1}
    body = {
        "base": base,
        "space": {"model.layers.1.units": {"type": "choice", "values": [8]}},
        "sampler": "grid",
        "objective": {"metric": "val_accuracy", "direction": "max"},
        "max_trials": 1,
    }
    answer = client.post("/v1/sweeps", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _ended_sweep(client: httpx.Client, sweep_id: str) -> str:
    deadline = time.monotonic() + 120
    while client.get(f"/v1/sweeps/{sweep_id}").json()["status"] == "running":
        assert time.monotonic() < deadline, f"sweep {sweep_id} still running"
        time.sleep(0.3)
    return sweep_id


def _register(client: httpx.Client, job_id: str, aliases: list[str]) -> str:
    name = ID_PREFIXES["model"] + secrets.token_hex(16)
    answer = client.post("/v1/models", json={"name": name, "job_id": job_id, "aliases": aliases})
    assert answer.status_code == 201, answer.text
    return name


def _digits_features(client: httpx.Client) -> int:
    catalogue = client.get("/v1/datasets").json()["data"]
    return math.prod(
        next(
            d["input_shape"]
            for d in catalogue
            if d["source"] == "builtin" and d["name"] == "digits"
        )
    )


@pytest.fixture(scope="module")
def owned(service: Service) -> dict[str, Owned]:
    """Each tenant's succeeded one-epoch job and uploaded CSV; both jobs are queued before either is awaited."""
    started: dict[str, tuple[str, dict[str, Any], str]] = {}
    sweeps: dict[str, str] = {}
    for tenant in ("a", "b"):
        marker = secrets.token_hex(6)
        with service.client(tenant) as client:
            started[tenant] = (marker, _upload(client, marker), _submit(client, marker))
            sweeps[tenant] = _sweep(client, marker)
    objects = {}
    for tenant, (marker, dataset, job_id) in started.items():
        with service.client(tenant) as client:
            job = wait_for(client, job_id, ("succeeded", "failed", "cancelled"), timeout=120)
            assert job["status"] == "succeeded", job["reason"]
            model = _register(client, job_id, [ALIAS])
            sweep = _ended_sweep(client, sweeps[tenant])
            features = _digits_features(client)
            objects[tenant] = Owned(tenant, marker, job, dataset, features, model, sweep)
    return objects


def snapshot(client: httpx.Client, owned: Owned) -> dict[str, Any]:
    """What the owner sees of its objects."""
    job = client.get(f"/v1/jobs/{owned.ids['job']}").json()
    assert job["status"] == "succeeded" and job["cancel_requested"] is False, job
    return {
        "job": job,
        "dataset": client.get(f"/v1/datasets/{owned.ids['dataset']}").json(),
        "checkpoints": client.get(f"/v1/jobs/{owned.ids['job']}/checkpoints").json(),
        "metrics": client.get(f"/v1/jobs/{owned.ids['job']}/metrics").json()["count"],
    }


def assert_refused(intruder: httpx.Client, route: Route, owned: Owned) -> None:
    """404 naming the object, nothing else in the body, exactly what an id never made gets."""
    answer = route.request(intruder, owned.ids, owned)
    where = f"{route.method} {route.url(owned.ids)} as tenant {owned.tenant}'s intruder"
    assert answer.status_code == 404, f"{where}: {answer.status_code} {answer.text}"
    assert answer.json() in route.not_found(owned.ids), f"{where}: {answer.text}"
    assert owned.marker not in answer.text, f"{where} leaks: {answer.text}"
    ghosts = owned.ids | {kind: p + secrets.token_hex(16) for kind, p in ID_PREFIXES.items()}
    ghost = route.request(intruder, ghosts, owned)
    assert (ghost.status_code, ghost.json()) in [(404, d) for d in route.not_found(ghosts)], (
        ghost.text
    )
    assert set(ghost.headers) == set(answer.headers), (
        f"{where}: headers tell a foreign id from a missing one"
    )


def assert_served(owner: httpx.Client, route: Route, owned: Owned) -> None:
    """The same call by the owner is served: the id, the route and the body are right. A DELETE is
    served on a copy of the owner's object (the walk's later calls need the original)."""
    if route.method == "DELETE" and "{name}" in route.template:  # a copy of the registered model
        copy = _register(owner, owned.ids["job"], [ALIAS] if "{alias}" in route.template else [])
        answer = route.request(owner, {**owned.ids, "model": copy}, owned)
        assert answer.status_code == 204, f"DELETE {route.template}: {answer.text}"
        return
    if route.method == "DELETE":
        copy = _upload(owner, owned.marker)
        answer = route.request(owner, {**owned.ids, "dataset": copy["id"]}, owned)
        assert answer.status_code == 204, (
            f"DELETE {route.template} as its owner: {answer.status_code} {answer.text}"
        )
        assert owner.get(f"/v1/datasets/{copy['id']}").status_code == 404
        return
    answer = route.request(owner, owned.ids, owned)
    ended = [  # the cancel of a succeeded job, of an ended sweep
        {"detail": f"job {owned.ids['job']} already ended: succeeded"},
        {"detail": f"sweep {owned.ids['sweep']} already ended: succeeded"},
    ]
    assert answer.status_code == 200 or (answer.status_code == 409 and answer.json() in ended), (
        f"{route.method} {route.url(owned.ids)} as its owner: {answer.status_code} {answer.text}"
    )


@pytest.mark.parametrize(("owner", "intruder"), DIRECTIONS)
def test_every_route_with_an_id_answers_another_tenant_404(
    service: Service, owned: dict[str, Owned], owner: str, intruder: str
) -> None:
    routes, _ = schema_routes(service)
    walked = {(r.method, r.template) for r in routes}
    assert walked >= KNOWN, f"the schema lost routes the walk must cover: {sorted(KNOWN - walked)}"
    mine = owned[owner]
    with service.client(owner) as owner_client, service.client(intruder) as other:
        before = snapshot(owner_client, mine)
        for route in routes:
            assert_refused(other, route, mine)
        assert snapshot(owner_client, mine) == before, (
            "another tenant's refused calls changed the owner's objects"
        )
        for route in routes:
            assert_served(owner_client, route, mine)
        for (
            route
        ) in routes:  # again, with the model cache and the predict gate warm from the owner's calls
            assert_refused(other, route, mine)
        assert snapshot(owner_client, mine)["job"] == before["job"]


def _all_jobs(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    while True:
        page = client.get("/v1/jobs", params={**params, "limit": 100, "offset": len(jobs)})
        assert page.status_code == 200, page.text
        jobs += page.json()["data"]
        if len(jobs) >= page.json()["count"] or not page.json()["data"]:
            return jobs


@pytest.mark.parametrize(("owner", "intruder"), DIRECTIONS)
def test_routes_without_ids_show_nothing_of_another_tenant(
    service: Service, owned: dict[str, Owned], owner: str, intruder: str
) -> None:
    _, plain = schema_routes(service)
    assert {"/v1/jobs", "/v1/datasets"} <= set(plain)
    mine, theirs = owned[owner], owned[intruder]
    with service.client(intruder) as other:
        for path in plain:
            answer = other.get(path)
            assert answer.status_code == 200, f"GET {path}: {answer.status_code} {answer.text}"
            leaked = [s for s in mine.traces() if s in answer.text]
            assert not leaked, f"GET {path} as tenant {intruder} shows tenant {owner}'s {leaked}"
        for status in ({}, {"status": "succeeded"}):
            listed = [j["id"] for j in _all_jobs(other, **status)]
            assert theirs.ids["job"] in listed and mine.ids["job"] not in listed, status
        datasets = [d["id"] for d in other.get("/v1/datasets").json()["data"]]
        assert theirs.ids["dataset"] in datasets and mine.ids["dataset"] not in datasets


def csv_spec(dataset_id: str) -> dict[str, Any]:
    """A small classifier for an uploaded CSV of two features."""
    return {
        "name": "probe",
        "dataset": {"id": dataset_id},
        "model": {"preset": {"name": "mlp", "hidden_units": [8]}},
        "compile": {
            "optimizer": "adam",
            "loss": "sparse_categorical_crossentropy",
            "metrics": ["accuracy"],
        },
        "fit": {"epochs": 1, "validation_split": 0.2},
    }


@pytest.mark.parametrize(("owner", "intruder"), DIRECTIONS)
def test_a_spec_cannot_name_another_tenants_dataset(
    service: Service, owned: dict[str, Owned], owner: str, intruder: str
) -> None:
    dataset_id = owned[owner].ids["dataset"]
    with service.client(intruder) as other:
        before = other.get("/v1/jobs").json()["count"]
        answer = other.post("/v1/jobs", json=csv_spec(dataset_id))
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["body", "dataset", "id"], answer.text
        assert answer.json()["detail"][0]["msg"] == f"dataset {dataset_id} does not exist"
        assert owned[owner].marker not in answer.text
        assert other.get("/v1/jobs").json()["count"] == before
    with service.client(
        owner
    ) as mine:  # the same spec is the owner's to train (cancelled: not needed further)
        created = mine.post("/v1/jobs", json=csv_spec(dataset_id))
        assert created.status_code == 201, created.text
        assert mine.post(f"/v1/jobs/{created.json()['id']}/cancel").status_code in (200, 409)


def test_ids_are_128_random_bits(owned: dict[str, Owned]) -> None:
    for objects in owned.values():
        for kind, object_id in objects.ids.items():
            if kind not in ID_FORMATS:
                continue  # the alias and the version: names the owner chose
            assert ID_FORMATS[kind].fullmatch(object_id), (
                f"{kind} id {object_id!r} is not {ID_FORMATS[kind].pattern}"
            )
    assert owned["a"].ids["job"] != owned["b"].ids["job"]
    assert owned["a"].ids["dataset"] != owned["b"].ids["dataset"]

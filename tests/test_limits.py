"""Limits: the per-key token bucket, the body limit on streamed bodies, the spec maxima and
the per-tenant quotas (on the real SQLite and PostgreSQL databases)."""

from __future__ import annotations

import math
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request

from api import quota
from api.errors import ApiError
from api.limits import BodyLimit
from api.rate_limit import RateLimit, TokenBuckets, retry_after
from core.db import session_scope
from core.repository import tenants as tenants_repo
from core.settings import Settings
from core.spec import JobSpec
from core.tables import Dataset, Job
from models.validation import dry_run
from tests.helpers import EXAMPLES, digits_mlp


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- token bucket -------------------------------------------------------------------------


def test_a_bucket_admits_its_burst_then_refuses_until_it_refills() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)  # one token comes every 1/rate seconds
    clock.now += 0.5
    assert buckets.take("k") == 0.0
    assert buckets.take("k") > 0
    clock.now += 60  # refills to the burst, never beyond
    assert [buckets.take("k") for _ in range(4)][-1] > 0


def test_buckets_are_per_key() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, clock=Clock())
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0


def test_a_flood_of_keys_is_bounded_in_memory() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=2, max_keys=100, clock=clock)
    buckets.take("busy")
    buckets.take("busy")
    for i in range(1000):
        buckets.take(f"k{i}")
    assert len(buckets) <= 100


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert retry_after(0.001) == 1
    assert retry_after(1.0) == 1
    assert retry_after(1.2) == 2


def test_a_bucket_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1)


# --- the middlewares, on a small app --------------------------------------------------------


def small_app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/thing")
    def thing() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/v1/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.post("/v1/form")
    async def form(request: Request) -> dict[str, int]:
        return {"fields": len(await request.form())}

    return app


async def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        return await client.request(method, path, **kwargs)


@pytest.mark.anyio
async def test_rate_limit_answers_429_with_retry_after() -> None:
    app = RateLimit(small_app(), rate=1.0, burst=2)
    key = {"Authorization": "Bearer fs_one"}
    codes = [(await call(app, "GET", "/v1/thing", headers=key)).status_code for _ in range(2)]
    assert codes == [200, 200]
    refused = await call(app, "GET", "/v1/thing", headers=key)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "rate limit exceeded" in refused.json()["detail"]
    # Another key has its own bucket; health probes and key-less requests are not counted.
    assert (
        await call(app, "GET", "/v1/thing", headers={"Authorization": "Bearer fs_two"})
    ).status_code == 200
    assert (await call(app, "GET", "/healthz", headers=key)).status_code == 200
    assert (await call(app, "GET", "/v1/thing")).status_code == 200


@pytest.mark.anyio
async def test_rate_zero_disables_the_limit() -> None:
    app = RateLimit(small_app(), rate=0.0, burst=1)
    key = {"Authorization": "Bearer fs_one"}
    assert {(await call(app, "GET", "/v1/thing", headers=key)).status_code for _ in range(20)} == {
        200
    }


@pytest.mark.anyio
async def test_a_streamed_body_over_the_limit_is_413_and_stops_early() -> None:
    pulled = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(1000):
            pulled += 1
            yield b"x" * 1024

    app = BodyLimit(
        small_app(), limit_for=lambda path: 20 * 1024 if path == "/v1/form" else 10 * 1024
    )
    answer = await call(app, "POST", "/v1/echo", content=chunks())  # no Content-Length: chunked
    assert answer.status_code == 413, answer.text
    assert "larger than 10240 bytes" in answer.json()["detail"]
    assert pulled <= 12

    # A multipart parser would turn the cut body into its own 400: the 413 goes out first.
    pulled = 0

    async def multipart() -> AsyncIterator[bytes]:
        nonlocal pulled
        pulled += 1
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        for _ in range(1000):
            pulled += 1
            yield b"1,2\n" * 256

    headers = {"content-type": "multipart/form-data; boundary=b"}
    answer = await call(app, "POST", "/v1/form", content=multipart(), headers=headers)
    assert answer.status_code == 413, answer.text
    assert "larger than 20480 bytes" in answer.json()["detail"]
    assert pulled <= 25


@pytest.mark.anyio
async def test_content_length_over_the_limit_is_refused_before_reading() -> None:
    app = BodyLimit(small_app(), limit_for=lambda _: 1024)
    assert (await call(app, "POST", "/v1/echo", content=b"x" * 2048)).status_code == 413
    assert (await call(app, "POST", "/v1/echo", content=b"x" * 1000)).json() == {"size": 1000}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- spec maxima -------------------------------------------------------------------------------


def settings(**fields: Any) -> Settings:
    return Settings(**fields)


def refusal(exc: pytest.ExceptionInfo[ApiError]) -> tuple[int, list[str | int], str]:
    return exc.value.status, exc.value.loc, exc.value.message


def test_epochs_times_samples_over_the_limit_names_fit_epochs() -> None:
    spec = digits_mlp(epochs=100, validation_split=0.0)
    quota.check_spec(spec, settings(max_epoch_samples=179_700), 1797)  # exactly the limit passes
    with pytest.raises(ApiError) as exc:
        quota.check_spec(spec, settings(max_epoch_samples=179_699), 1797)
    status, loc, msg = refusal(exc)
    assert (status, loc) == (422, ["body", "fit", "epochs"])
    assert (
        msg
        == "epochs x training samples = 100 x 1797 = 179700 exceeds the server's limit of 179699"
    )


def test_training_samples_leave_out_the_test_and_validation_splits() -> None:
    spec = digits_mlp(validation_split=0.5)
    assert quota.training_samples(spec, 1000) == 500
    assert quota.dataset_samples(spec, None) == 1797  # digits
    assert quota.dataset_samples(spec, {"samples": 42}) == 42


def test_batch_size_and_layers_over_the_limit() -> None:
    spec = digits_mlp(batch_size=64)
    with pytest.raises(ApiError) as exc:
        quota.check_spec(spec, settings(max_batch_size=32), 1797)
    assert refusal(exc)[:2] == (422, ["body", "fit", "batch_size"])
    assert "batch_size 64 exceeds the server's limit of 32" in refusal(exc)[2]
    with pytest.raises(ApiError) as exc:
        quota.check_spec(spec, settings(max_layers=4), 1797)
    assert refusal(exc)[:2] == (422, ["body", "model", "layers"])
    assert "5 layers exceed the server's limit of 4" in refusal(exc)[2]


def test_a_family_network_is_counted_too() -> None:
    dense = [{"type": "dense", "units": 4, "activation": "relu"}] * 3
    spec = JobSpec.model_validate(
        {
            "family": "gan",
            "dataset": {"name": "moons"},
            "gan": {"generator": {"layers": dense}, "discriminator": {"layers": [*dense, *dense]}},
        }
    )
    with pytest.raises(ApiError) as exc:
        quota.check_spec(spec, settings(max_layers=5), 1000)
    assert refusal(exc)[1] == ["body", "gan", "discriminator", "layers"]
    with pytest.raises(ApiError) as exc:
        quota.check_parameters(spec, settings(max_parameters=10), 11)
    assert refusal(exc) == (
        422,
        ["body", "gan"],
        "the model has 11 parameters, which exceeds the server's limit of 10",
    )


def test_parameters_over_the_limit_name_the_model() -> None:
    quota.check_parameters(digits_mlp(), settings(max_parameters=100), 100)
    with pytest.raises(ApiError) as exc:
        quota.check_parameters(digits_mlp(), settings(max_parameters=100), 101)
    assert refusal(exc)[:2] == (422, ["body", "model"])


# --- per-tenant quotas, on the real databases ---------------------------------------------------


def test_active_jobs_and_stored_bytes_count_only_the_tenant(database_url: str) -> None:
    with session_scope(database_url) as session:
        mine = tenants_repo.get_or_create_tenant(session=session, name=f"t-{secrets.token_hex(4)}")
        other = tenants_repo.get_or_create_tenant(session=session, name=f"t-{secrets.token_hex(4)}")
        for status in ("queued", "running", "succeeded", "failed", "cancelled"):
            session.add(Job(tenant_id=mine.id, name="j", spec={}, status=status))
        session.add(Job(tenant_id=other.id, name="j", spec={}, status="queued"))
        for tenant, size in ((mine, 1000), (mine, 234), (other, 10**6)):
            session.add(
                Dataset(
                    tenant_id=tenant.id,
                    name="d",
                    format="csv",
                    size_bytes=size,
                    sha256="0" * 64,
                    target=None,
                    task="regression",
                    description={},
                )
            )
        session.flush()
        assert quota.active_jobs(session, mine.id) == 2
        assert quota.stored_bytes(session, mine.id) == 1234
        nothing = tenants_repo.get_or_create_tenant(
            session=session, name=f"t-{secrets.token_hex(4)}"
        )
        assert quota.stored_bytes(session, nothing.id) == 0

        quota.check_active_jobs(session, mine.id, settings(max_active_jobs=3))
        with pytest.raises(HTTPException) as exc:
            quota.check_active_jobs(session, mine.id, settings(max_active_jobs=2))
        assert exc.value.status_code == 429
        assert exc.value.headers == {"Retry-After": str(quota.JOBS_RETRY_AFTER_SECONDS)}
        assert "2 queued or running jobs" in exc.value.detail
        assert "FITSERVE_MAX_ACTIVE_JOBS=2" in exc.value.detail


def test_non_finite_inputs_are_echoed_as_strings_in_a_422() -> None:
    from api.errors import finite

    assert finite({"input": [float("nan"), float("inf"), 1.5], "loc": ["body"]}) == {
        "input": ["nan", "inf", 1.5],
        "loc": ["body"],
    }


def test_a_huge_model_is_counted_on_the_meta_device_without_memory() -> None:
    from core.datasets import builtin_info

    wide = [{"type": "dense", "units": 65_536, "activation": "relu"}] * 3
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {
                "layers": [
                    {"type": "flatten"},
                    *wide,
                    {"type": "dense", "units": 10, "activation": "softmax"},
                ]
            },
            "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
        }
    )
    counted = quota.meta_dry_run(
        spec, builtin_info(spec.dataset)
    )  # 34 GB of float32 if it were real
    assert counted is not None
    assert (
        counted.parameters
        == 64 * 65_536 + 65_536 + 2 * (65_536 * 65_536 + 65_536) + 65_536 * 10 + 10
    )
    small = quota.meta_dry_run(digits_mlp(), builtin_info(digits_mlp().dataset))
    assert small == dry_run(
        digits_mlp(), builtin_info(digits_mlp().dataset)
    )  # the meta run reports what the real one does
    assert small is not None and small.parameters == 2_474


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.json")))
def test_no_example_is_refused_for_its_memory(name: str) -> None:
    from core.datasets import builtin_info

    spec = JobSpec.model_validate_json((EXAMPLES / f"{name}.json").read_text())
    report = quota.meta_dry_run(spec, builtin_info(spec.dataset))
    assert report is not None
    quota.check_memory(spec, settings(), report)


@pytest.mark.parametrize(
    ("name", "loc"),
    [
        ("digits_cnn_augmented", ["body", "model", "layers", 0]),
        ("digits_dcgan", ["body", "gan", "generator", "layers", 2]),
        (
            "digits_autoencoder",
            ["body", "autoencoder", "encoder", 0],
        ),  # the first of the largest (64 values)
        ("digits_vae", ["body", "vae", "encoder", 0]),
        ("digits_rbm", ["body", "rbm"]),
    ],
)
def test_a_memory_refusal_names_the_largest_layer_of_any_family(name: str, loc: list[Any]) -> None:
    from core.datasets import builtin_info

    spec = JobSpec.model_validate_json((EXAMPLES / f"{name}.json").read_text())
    report = quota.meta_dry_run(spec, builtin_info(spec.dataset))
    assert report is not None
    with pytest.raises(ApiError) as exc:
        quota.check_memory(spec, settings(max_job_memory_bytes=1024), report)
    status, where, message = refusal(exc)
    assert (status, where) == (422, loc), message
    assert (
        message.startswith("the job's training memory is estimated at ")
        and "over the server's limit of 1.0 KiB" in message
    )
    # The check's own cost: weights and gradients, and 2 samples' activations 3 times over, in float32.
    per_sample = sum(math.prod(layer["output_shape"]) for layer in report.layers)
    check = 4 * (2 * report.parameters + 2 * 3 * per_sample)
    with pytest.raises(ApiError) as exc:
        quota.check_memory(spec, settings(max_dry_run_bytes=check - 1), report)
    status, where, message = refusal(exc)
    assert (status, where) == (422, loc) and message.startswith(
        "checking this model means running 2 samples"
    )
    quota.check_memory(spec, settings(max_dry_run_bytes=check, max_job_memory_bytes=2**40), report)

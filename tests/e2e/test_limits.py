"""Limits through HTTP: hostile specs on both backends, and a service of its own with small
maxima, quotas and rate limits (embedded) for what needs other settings."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import Service, _base_env, free_port, wait_for
from tests.e2e.http import example, refused
from tests.e2e.test_uploads import _api_rss

# --- hostile specs, on the shared service (both backends) ----------------------------------------


def digits_spec(**fit: Any) -> dict[str, Any]:
    spec = example("digits_mlp")
    spec["fit"] = {**spec.get("fit", {}), **fit}
    return spec


def test_absurd_epochs_are_refused(service: Service) -> None:
    error = refused(service, digits_spec(epochs=1e12))
    assert error["loc"] == ["body", "fit", "epochs"]


def test_a_nan_learning_rate_is_refused(service: Service) -> None:
    raw = json.dumps(digits_spec()).replace(
        '"optimizer": "adam"', '"optimizer": {"type": "adam", "learning_rate": NaN}'
    )
    assert "NaN" in raw
    with service.client() as client:
        answer = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    error = answer.json()["detail"][0]
    assert (
        error["loc"][:3] == ["body", "compile", "optimizer"] and error["loc"][-1] == "learning_rate"
    )


def test_ten_thousand_layers_are_refused(service: Service) -> None:
    spec = digits_spec()
    spec["model"] = {"layers": [{"type": "dense", "units": 4}] * 10_000}
    error = refused(service, spec)
    assert error["loc"] == ["body", "model", "layers"]
    assert "256" in error["msg"]


def test_a_model_of_billions_of_parameters_is_refused_without_building_it(service: Service) -> None:
    spec = digits_spec()
    wide = [{"type": "dense", "units": 65_536, "activation": "relu"}] * 3
    spec["model"] = {
        "layers": [
            {"type": "flatten"},
            *wide,
            {"type": "dense", "units": 10, "activation": "softmax"},
        ]
    }
    started = time.monotonic()
    error = refused(service, spec)
    assert time.monotonic() - started < 10  # counted on the meta device, never allocated (34 GB)
    assert error["loc"] == ["body", "model"]
    assert (
        error["msg"]
        == "the model has 8594980874 parameters, which exceeds the server's limit of 50000000"
    )


def _upsampler(batch_size: int = 32) -> dict[str, Any]:
    """The issue's spec: 20 parameters, and 64 Mi activations per sample after two upsamplings."""
    spec = digits_spec(batch_size=batch_size)
    spec["model"] = {
        "layers": [
            {"type": "upsample2d", "size": 64},
            {"type": "upsample2d", "size": 16},
            {"type": "global_avgpool"},
            {"type": "dense", "units": 10},
        ]
    }
    return spec


def test_a_spec_whose_activations_are_huge_is_refused_before_any_memory_is_spent(
    service: Service,
) -> None:
    """It was accepted (201): its dry run cost the API 431 MB a request (4 at once: 2.3 GB), and at
    batch_size 65536 its estimate, 32,896 GiB, was stored and the job queued. Both are 422s now,
    from the meta device's shapes, naming the layer; the API's memory stays flat."""
    before = _api_rss(service)
    with ThreadPoolExecutor(4) as pool:
        errors = list(
            pool.map(lambda spec: refused(service, spec), [_upsampler()] * 4 + [_upsampler(65_536)])
        )
    grown = _api_rss(service) - before
    print(
        f"\n  {service.name}: the API's RSS grew {grown / 2**20:.0f} MiB through 5 huge-activation specs"
    )
    for error in errors:
        assert error["loc"] == ["body", "model", "layers", 1], error
        assert (
            "the largest is layer 1 (upsample2d), 67,108,864 values per sample (1, 8192, 8192)"
            in error["msg"]
        )
    assert errors[0]["msg"].startswith(
        "the job's training memory is estimated at 16.1 GiB (weights, gradients, "
        "optimizer state and the activations of a batch of 32), over the server's "
        "limit of 8.0 GiB"
    )
    assert (
        "estimated at 32,896.0 GiB" in errors[-1]["msg"] and "a batch of 65536" in errors[-1]["msg"]
    )
    assert grown < 300 * 2**20


def test_a_spec_whose_check_alone_is_too_big_is_refused(service: Service) -> None:
    """With the batch small enough for the memory limit, the real dry run of 2 samples could still
    cost 1.5 GiB: refused against MAX_DRY_RUN_BYTES, before it runs."""
    spec = _upsampler(batch_size=1)
    spec["model"]["layers"][1]["size"] = (
        4  # 4.3 M values per sample: 34 MiB at batch 1, 102 MiB to check
    )
    error = refused(service, spec)
    assert error["msg"] == (
        "checking this model means running 2 samples through it, which needs about 102.0 MiB "
        "(4,456,459 activations per sample), over the server's limit of 64.0 MiB for a "
        "check; the largest is layer 1 (upsample2d), 4,194,304 values per sample "
        "(1, 2048, 2048)"
    )


def test_a_path_like_dataset_id_is_refused(service: Service) -> None:
    spec = digits_spec()
    spec["dataset"] = {"id": "../../etc/passwd"}
    error = refused(service, spec)
    assert error["loc"] == ["body", "dataset", "id"]


OWNED = [
    ("status", "succeeded"),
    ("tenant", "other"),
    ("tenant_id", "t_1"),
    ("attempt", 7),
    ("path", "/etc/passwd"),
    ("artifacts_dir", "/var/lib/fitserve"),
]


@pytest.mark.parametrize("field", OWNED)
def test_server_owned_fields_are_refused(service: Service, field: tuple[str, Any]) -> None:
    name, value = field
    error = refused(service, digits_spec() | {name: value})
    assert error["loc"] == ["body", name]
    assert error["type"] == "extra_forbidden"


def test_non_finite_numbers_anywhere_are_refused(service: Service) -> None:
    spec = digits_spec()
    raw = json.dumps(spec).replace('"compile": {', '"compile": {"clip_grad_norm": Infinity, ', 1)
    with service.client() as client:
        answer = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", "compile", "clip_grad_norm"]


# --- a service with small limits -----------------------------------------------------------------

LIMITS = {
    "FITSERVE_MAX_EPOCH_SAMPLES": "100000",
    "FITSERVE_MAX_PARAMETERS": "5000",
    "FITSERVE_MAX_BATCH_SIZE": "128",
    "FITSERVE_MAX_LAYERS": "4",
    "FITSERVE_MAX_ACTIVE_JOBS": "2",
    "FITSERVE_STORAGE_QUOTA_BYTES": "20000",
    "FITSERVE_REQUEST_MAX_BYTES": "65536",
    "FITSERVE_RATE_LIMIT_PER_SECOND": "20",
    "FITSERVE_RATE_LIMIT_BURST": "20",
    "FITSERVE_AUTH_FAILURES_PER_SECOND": "0.1",
    "FITSERVE_AUTH_FAILURE_BURST": "5",
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("limited")
    port = free_port()
    service = Service("limited", f"http://127.0.0.1:{port}", _base_env(tmp) | LIMITS, tmp)
    service.start("up", "--port", str(port))
    try:
        service.wait_ready()
        service.keys["a"] = (tmp / "api_key").read_text().strip()
        service.keys["rate"] = service.fitserve("keys", "create", "--tenant", "rate")
        yield service
    finally:
        service.stop()


def small_spec(**fit: Any) -> dict[str, Any]:
    """A digits classifier of 650 parameters."""
    return {
        "dataset": {"name": "digits"},
        "model": {
            "layers": [{"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]
        },
        "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
        "fit": {"epochs": 1, "batch_size": 32, **fit},
    }


def post_job(service: Service, spec: dict[str, Any], key: str = "a") -> Any:
    with service.client(key) as client:
        return client.post("/v1/jobs", json=spec)


def test_epochs_times_samples_over_the_limit(limited: Service) -> None:
    answer = post_job(limited, small_spec(epochs=56))  # 56 x 1797 = 100632
    assert answer.status_code == 422, answer.text
    error = answer.json()["detail"][0]
    assert error["loc"] == ["body", "fit", "epochs"]
    assert (
        error["msg"]
        == "epochs x training samples = 56 x 1797 = 100632 exceeds the server's limit of 100000"
    )


def test_parameters_batch_size_and_layers_over_the_limit(limited: Service) -> None:
    big = small_spec()
    big["model"]["layers"] = [
        {"type": "flatten"},
        {"type": "dense", "units": 100, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]
    answer = post_job(limited, big)
    assert answer.status_code == 422, answer.text
    error = answer.json()["detail"][0]
    assert error["loc"] == ["body", "model"]
    assert error["msg"] == "the model has 7510 parameters, which exceeds the server's limit of 5000"

    answer = post_job(limited, small_spec(batch_size=256))
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "fit", "batch_size"]

    deep = small_spec()
    deep["model"]["layers"] = [{"type": "flatten"}, *[{"type": "dense", "units": 4}] * 4]
    answer = post_job(limited, deep)
    assert answer.status_code == 422
    assert answer.json()["detail"][0] == {
        "loc": ["body", "model", "layers"],
        "type": "invalid",
        "msg": "5 layers exceed the server's limit of 4 layers per network",
    }


def test_active_jobs_over_the_quota_are_429(limited: Service) -> None:
    with limited.client() as client:
        ids = []
        for _ in range(2):
            created = client.post("/v1/jobs", json=small_spec(epochs=50))
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        third = client.post("/v1/jobs", json=small_spec())
        assert third.status_code == 429, third.text
        assert third.headers["retry-after"] == "10"
        assert third.json()["detail"].startswith(
            "this tenant has 2 queued or running jobs, the most it may have"
        )
        for job_id in ids:
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code in (
                200,
                409,
            )  # 409: it already ended
        for job_id in ids:
            wait_for(client, job_id, ("cancelled", "succeeded", "failed"), timeout=30)
        again = client.post("/v1/jobs", json=small_spec())
        assert again.status_code == 201, again.text
        wait_for(client, again.json()["id"], ("succeeded", "failed", "cancelled"), timeout=60)


def test_submissions_racing_for_the_last_slots_get_no_more_than_the_quota(limited: Service) -> None:
    """Six at once against a quota of two: the tenant's row is locked while its jobs are counted."""

    def submit(_: int) -> httpx.Response:
        with limited.client() as client:
            return client.post("/v1/jobs", json=small_spec(epochs=50))

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(submit, range(6)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201, 201, 429, 429, 429, 429], [a.text for a in answers]
    with limited.client() as client:
        for answer in answers:
            if answer.status_code == 201:
                job_id = answer.json()["id"]
                assert client.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 409)
                wait_for(client, job_id, ("cancelled", "succeeded", "failed"), timeout=30)


def csv(rows: int) -> bytes:
    return b"a,b\n" + b"".join(f"{i % 7},{i % 3}\n".encode() for i in range(rows))


def test_uploads_past_the_storage_quota_are_413(limited: Service) -> None:
    with limited.client() as client:
        first = client.post("/v1/datasets", files={"file": ("one.csv", csv(1500))})
        assert first.status_code == 201, first.text
        used = first.json()["size_bytes"]
        count = client.get("/v1/datasets").json()["count"]
        second = client.post("/v1/datasets", files={"file": ("two.csv", csv(20000 - used))})
        assert second.status_code == 413, second.text
        assert second.json()["detail"].startswith(
            f"the tenant's storage quota of 20000 bytes (FITSERVE_STORAGE_QUOTA_BYTES) would be exceeded: {used} "
            "bytes are used by uploaded datasets"
        )
        assert client.get("/v1/datasets").json()["count"] == count


def test_concurrent_uploads_cannot_pass_the_quota_together(limited: Service) -> None:
    """Eight uploads of 6,000 bytes at once, room for three: exactly three are stored (the quota is
    checked again under the tenant's lock), the others are 413s, nothing else."""
    key = limited.fitserve("keys", "create", "--tenant", "racer")
    body = b"a,b\n" + b"1,0\n2,1\n" * 749  # 5,996 bytes: three fit in 20,000

    def upload(i: int) -> httpx.Response:
        return httpx.post(
            f"{limited.url}/v1/datasets",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": (f"r{i}.csv", body)},
            timeout=60,
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(upload, range(8)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] * 3 + [413] * 5, [a.text for a in answers]
    stored = httpx.get(
        f"{limited.url}/v1/datasets", headers={"Authorization": f"Bearer {key}"}
    ).json()["data"]
    assert sum(d["source"] == "uploaded" for d in stored) == 3
    files = {p.name for p in (limited.data_dir / "artifacts" / "datasets").iterdir()}
    assert {f"{d['id']}.csv" for d in stored if d["id"]} <= files
    assert not any(name.endswith(".tmp") for name in files), "a refused upload left its file"


def test_a_json_body_over_the_request_limit_is_413(limited: Service) -> None:
    spec = small_spec()
    spec["name"] = "x"
    with limited.client() as client:
        answer = client.post(
            "/v1/jobs",
            content=json.dumps(spec) + " " * 70_000,
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 413
    assert answer.json() == {"detail": "the request body is larger than 65536 bytes"}


def test_a_chunked_upload_over_the_limit_stops_early(limited: Service) -> None:
    """No Content-Length: the 413 comes once the limit is passed, long before the body ends."""
    url = urlsplit(limited.url)
    boundary = "fitserveboundary"
    head = (
        f"POST /v1/datasets HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {limited.keys['a']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\na,b\r\n'
    chunk = b"1,2\n" * 16384  # 64 KiB
    total, answer = 0, b""
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head.encode() + f"{len(part):x}\r\n{part}\r\n".encode())
        with contextlib.suppress(
            BrokenPipeError, ConnectionResetError
        ):  # the server hung up: the point
            while total < 64 * 2**20:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                total += len(chunk)
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert total < 32 * 2**20  # the 64 MiB body was cut off near the 1.3 MB limit


def test_a_1_gb_upload_is_refused_from_its_headers(limited: Service) -> None:
    """Content-Length says 1 GiB: the 413 comes before a byte of the body is sent, nothing is stored."""
    url = urlsplit(limited.url)
    uploads = limited.data_dir / "artifacts" / "datasets"
    before = sorted(uploads.glob("*")) if uploads.exists() else []
    head = (
        f"POST /v1/datasets HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {limited.keys['a']}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1073741824\r\n\r\n"
    )
    answer = _headers_only(limited, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert (sorted(uploads.glob("*")) if uploads.exists() else []) == before


def test_requests_past_the_rate_are_429_with_retry_after(limited: Service) -> None:
    with limited.client("rate") as client:
        codes = [client.get("/v1/jobs").status_code for _ in range(60)]
        assert 429 in codes and codes[:20] == [200] * 20
        refused_ = client.get("/v1/jobs")
        while refused_.status_code != 429:
            refused_ = client.get("/v1/jobs")
        assert int(refused_.headers["retry-after"]) >= 1
        assert refused_.json()["detail"].startswith(
            "rate limit exceeded: this API key may make 20 requests per second"
        )
        assert client.get("/healthz").status_code == 200  # probes are never limited
    with limited.client("a") as client:  # another key has its own bucket
        assert client.get("/v1/jobs").status_code == 200


def test_a_422_shows_a_preview_of_a_huge_input_not_all_of_it(service: Service) -> None:
    """A 1 MB unknown field and 20,000 layers came back whole in their 422s (2.7 MB for 10^5 layers)."""
    huge = digits_spec()
    huge["unknown"] = "x" * 1_000_000
    many = digits_spec()
    many["model"] = {"layers": [{"type": "dense", "units": 4, "bogus": 1}] * 20_000}
    with service.client() as client:
        for raw in (huge, many):
            answer = client.post("/v1/jobs", json=raw)
            assert answer.status_code == 422, answer.text[:500]
            assert len(answer.content) < 8_000, len(answer.content)
    with service.client() as client:
        detail = client.post("/v1/jobs", json=huge).json()["detail"][0]
    assert detail["loc"] == ["body", "unknown"] and detail["input"].endswith(
        "(1,000,000 characters in all)"
    )


def _headers_only(service: Service, head: str) -> bytes:
    """Send a request's headers and none of its body; the status line and headers of the answer."""
    url = urlsplit(service.url)
    answer = b""
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head.encode())
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


def test_a_body_without_a_valid_key_is_never_read(service: Service) -> None:
    """An 86 MiB JSON body without a key was parsed (+354 MB, 3.6 s) before its 401; now the 401
    comes from the headers, for a missing key and a bad one alike, the body never sent."""
    netloc = urlsplit(service.url).netloc
    for auth in ("", "Authorization: Bearer not-a-key\r\n"):
        head = (
            f"POST /v1/jobs HTTP/1.1\r\nHost: {netloc}\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {86 * 2**20}\r\n\r\n"
        )
        started = time.monotonic()
        answer = _headers_only(service, head)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert time.monotonic() - started < 5


def test_predict_without_a_key_is_a_401_not_a_422_echoing_the_input(service: Service) -> None:
    body = {"instances": "not instances, and secret-ish"}
    answer = httpx.post(f"{service.url}/v1/models/job_{'0' * 32}/predict", json=body, timeout=30)
    assert answer.status_code == 401, answer.text
    assert "secret-ish" not in answer.text and answer.headers["www-authenticate"] == "Bearer"


def test_an_address_sending_bad_keys_is_slowed_down(limited: Service) -> None:
    """Past AUTH_FAILURE_BURST refusals from one address, its requests without a valid key are 429s;
    its good keys are not affected."""
    codes = [
        httpx.get(
            f"{limited.url}/v1/jobs", headers={"Authorization": f"Bearer guess-{i}"}
        ).status_code
        for i in range(8)
    ]
    assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3, codes
    refused = httpx.get(f"{limited.url}/v1/jobs")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    with limited.client() as client:
        assert client.get("/v1/jobs").status_code == 200

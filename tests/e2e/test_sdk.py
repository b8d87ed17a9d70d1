"""The SDK (client/, fitserve_client) against a real API and worker (`fitserve up`): a
submit-stream-wait-predict session, a stream whose connection is cut and stalled mid-way (it
resumes with Last-Event-ID, nothing lost or repeated), each typed error, the retries of a
rate-limited key, the async client, datasets, and the SDK installed alone in a fresh venv."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from fitserve_client import (
    AsyncClient,
    AuthenticationError,
    Client,
    Conflict,
    Event,
    Job,
    MetricPoint,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StatusEvent,
    ValidationError,
)

from core.datasets import load_builtin
from core.preprocessing import split_indices
from core.spec import DatasetSpec, JobSpec
from tests.e2e.conftest import UPLOAD_LIMIT, Service, lone_api
from tests.e2e.http import example

ROOT = Path(__file__).resolve().parents[2]


def quick_spec(epochs: int = 3, **fit: Any) -> dict[str, Any]:
    """The digits MLP: about half a second an epoch."""
    raw = example("digits_mlp")
    raw["fit"] |= {"epochs": epochs, **fit}
    return raw


# The SDK is an HTTP client: the embedded service is enough (both backends behind the API are
# tested by the other e2e modules, its live events on both by test_events.py).
EMBEDDED = pytest.mark.parametrize("service", ["embedded"], indirect=True)


def statuses(events: list[Event]) -> list[str]:
    return [e.status for e in events if isinstance(e, StatusEvent)]


def points(events: list[Event]) -> list[MetricPoint]:
    return [e for e in events if isinstance(e, MetricPoint)]


@pytest.fixture(scope="module")
def fs(service: Service) -> Iterator[Client]:
    with Client(service.url, service.keys["a"]) as client:
        yield client


@dataclass
class Trained:
    submitted: Job
    events: list[Event]
    done: Job


@pytest.fixture(scope="module")
def trained(fs: Client) -> Trained:
    """One job per backend, submitted, streamed to its end and waited for."""
    job = fs.jobs.submit(quick_spec())
    events = list(fs.jobs.stream(job.id, timeout=120))
    return Trained(job, events, fs.jobs.wait(job.id, timeout=30))


@EMBEDDED
def test_submit_stream_and_wait(fs: Client, trained: Trained) -> None:
    assert trained.submitted.status == "queued" and trained.submitted.name == "digits-mlp"
    assert trained.done.status == "succeeded", trained.done.reason
    assert trained.done.reason == "completed 3 epochs"
    streamed, stored = points(trained.events), fs.jobs.metrics(trained.done.id)
    assert streamed == stored, "every point exactly once, in sequence order"
    assert [p.seq for p in streamed] == sorted({p.seq for p in streamed})
    assert [p.epoch for p in stored if p.name == "val_accuracy"] == [1, 2, 3]
    assert statuses(trained.events) == ["queued", "running", "succeeded"]
    assert isinstance(trained.events[-1], StatusEvent)
    assert len(stored.records()) == len(stored) and stored.records()[0]["name"] == stored[0].name
    try:
        frame = stored.to_pandas()
    except ImportError as exc:  # pandas is the SDK's extra; the fresh venv test installs it
        assert "fitserve-client[pandas]" in str(exc)
    else:
        assert list(frame["seq"]) == [p.seq for p in stored]


@EMBEDDED
def test_predict_takes_and_returns_numpy_arrays(fs: Client, trained: Trained) -> None:
    spec = trained.done.spec
    raw = load_builtin(DatasetSpec(name="digits"), seed=0)
    _, held = split_indices(len(raw.x), spec["fit"]["validation_split"], spec["fit"]["seed"])
    x, y = raw.x[held][:100], raw.y[held][:100]
    answer = fs.models.predict(trained.done.id, x)
    assert isinstance(answer.predictions, np.ndarray) and answer.predictions.shape == (100,)
    assert answer.probabilities.shape == (100, 10) and answer.class_ids.dtype.kind == "i"
    assert np.mean(answer.class_ids == y) >= 0.9
    as_lists = fs.models.predict(trained.done.id, x.tolist(), operation="predict")
    assert np.array_equal(as_lists.class_ids, answer.class_ids)


class CuttingProxy:
    """A TCP proxy in front of the API that breaks its first connections once `after` bytes of
    the answer have passed: `cut` closes it mid-body, `stall` stops forwarding (the client's read
    timeout has to notice). Later connections pass untouched."""

    def __init__(self, upstream: str, plan: list[str], after: int) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.plan, self.after, self.heads = list(plan), after, []  # type: ignore[var-annotated]
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            mode = self.plan.pop(0) if self.plan else "pass"
            threading.Thread(target=self._serve, args=(client, mode), daemon=True).start()

    def _serve(self, client: socket.socket, mode: str) -> None:
        upstream = socket.create_connection(self.upstream)
        head = client.recv(65536)
        self.heads.append(head)
        upstream.sendall(head)
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        sent = 0
        try:
            with contextlib.suppress(OSError):  # either side closed: this connection is over
                while chunk := upstream.recv(4096):
                    if mode == "pass" or sent + len(chunk) <= self.after:
                        client.sendall(chunk)
                    elif sent < self.after:
                        client.sendall(chunk[: self.after - sent])
                        if mode == "cut":
                            break
                    sent += len(chunk)  # stalled: read and dropped until the client gives up
        finally:
            client.close()
            upstream.close()

    @staticmethod
    def _pump(client: socket.socket, upstream: socket.socket) -> None:
        try:
            with contextlib.suppress(OSError):  # either side closed
                while data := client.recv(65536):
                    upstream.sendall(data)
        finally:  # the client gave up: the upstream side ends too
            upstream.close()


@EMBEDDED
def test_a_stream_cut_and_stalled_mid_way_resumes_with_nothing_lost_or_repeated(
    service: Service, fs: Client
) -> None:
    job = fs.jobs.submit(quick_spec(log_every_steps=5))  # 48 points and 3 statuses
    proxy = CuttingProxy(service.url, ["cut", "stall"], after=2500)
    try:
        with Client(proxy.url, service.keys["a"], timeout=2.0) as through:
            stream = through.jobs.stream(job.id, timeout=120)
            events = list(stream)
    finally:
        proxy.close()
    assert stream.reconnects >= 2 and len(proxy.heads) >= 3
    assert all("last-event-id: " in head.decode().lower() for head in proxy.heads[1:])
    stored = fs.jobs.metrics(job.id)
    assert points(events) == stored and len(stored) == 3 * (7 + 9)
    assert statuses(events) == ["queued", "running", "succeeded"]
    assert stream.last_event_id == fs.jobs.get(job.id).seq


@EMBEDDED
def test_each_refusal_is_a_typed_error(
    service: Service, fs: Client, trained: Trained, tmp_path: Path
) -> None:
    with (
        Client(service.url, "not-a-key", max_retries=0) as stranger,
        pytest.raises(AuthenticationError) as denied,
    ):
        stranger.jobs.list()
    assert denied.value.status == 401
    unknown = "job_" + "0" * 32
    with pytest.raises(NotFound) as missing:
        fs.jobs.get(unknown)
    assert missing.value.status == 404 and missing.value.detail == f"job {unknown} not found"
    with pytest.raises(NotFound):
        fs.models.predict(unknown, [[0.0] * 64])
    bad = quick_spec()
    bad["model"]["layers"][1]["units"] = 0
    before = fs.jobs.list().count
    with pytest.raises(ValidationError) as invalid:
        fs.jobs.submit(bad)
    assert invalid.value.errors[0].loc == ["body", "model", "layers", 1, "dense", "units"]
    assert str(invalid.value).startswith("model.layers.1.dense.units: Input should be greater")
    assert fs.jobs.list().count == before
    with pytest.raises(ValidationError) as shape:
        fs.models.predict(trained.done.id, [[1.0, 2.0]])
    assert shape.value.errors[0].loc == ["body", "instances"]
    big = tmp_path / "big.csv"
    big.write_text("a,b\n" + "1.0,0\n" * (UPLOAD_LIMIT // 6 + 1000))
    with pytest.raises(PayloadTooLarge) as too_large:
        fs.datasets.upload(big)
    assert too_large.value.status == 413


@EMBEDDED
def test_an_idempotency_key_returns_the_same_job_and_conflicts_are_409(fs: Client) -> None:
    spec = quick_spec(epochs=1000)
    job = fs.jobs.submit(spec, idempotency_key="sdk-409")
    assert fs.jobs.submit(spec, idempotency_key="sdk-409").id == job.id  # a retried submit
    with pytest.raises(Conflict) as reused:
        fs.jobs.submit(quick_spec(epochs=999), idempotency_key="sdk-409")
    assert reused.value.detail == "this Idempotency-Key was used for a different spec"
    fs.jobs.cancel(job.id)
    assert fs.jobs.wait(job.id, timeout=60).status == "cancelled"
    with pytest.raises(Conflict):
        fs.jobs.cancel(job.id)
    with pytest.raises(Conflict):
        fs.models.predict(job.id, [[0.0] * 64])


@EMBEDDED
def test_async_client_submits_streams_waits_and_predicts(service: Service) -> None:
    async def session() -> tuple[list[Event], Job, list[MetricPoint], Any]:
        async with AsyncClient(service.url, service.keys["a"]) as fs:
            job = await fs.jobs.submit(JobSpec.model_validate(quick_spec(epochs=2)))  # a model
            events = [event async for event in fs.jobs.stream(job.id, timeout=120)]
            done = await fs.jobs.wait(job.id, timeout=30)
            stored = await fs.jobs.metrics(job.id)
            return events, done, stored, await fs.models.predict(job.id, np.zeros((4, 64)))

    events, done, stored, answer = asyncio.run(session())
    assert done.status == "succeeded" and done.reason == "completed 2 epochs"
    assert points(events) == stored and statuses(events) == ["queued", "running", "succeeded"]
    assert answer.predictions.shape == (4,) and answer.probabilities.shape == (4, 10)


@EMBEDDED
def test_datasets_upload_list_and_delete(fs: Client) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    numeric = fs.datasets.upload((x, (x[:, 0] > 0).astype(int)), name="sdk-npz")
    labels = np.where(x[:, 1] > 0, "up", "down")
    texts = fs.datasets.upload((x, labels), name="sdk-csv")  # text labels go up as a CSV
    assert (numeric.source, numeric.input_shape, numeric.samples) == ("uploaded", [3], 60)
    assert numeric.num_classes == 2 and texts.class_names == ["down", "up"]
    assert texts.target == "y"
    listed = fs.datasets.list().data
    assert numeric in listed and texts in listed
    assert "digits" in {d.name for d in listed if d.source == "builtin"}
    for dataset in (numeric, texts):
        fs.datasets.delete(dataset.id)  # type: ignore[arg-type]
        with pytest.raises(NotFound):
            fs.datasets.get(dataset.id)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An API alone on the embedded default, allowing a key 2 requests, then one every 2 s."""
    rate = {"FITSERVE_RATE_LIMIT_PER_SECOND": "0.5", "FITSERVE_RATE_LIMIT_BURST": "2"}
    with lone_api(tmp_path_factory.mktemp("sdk-limited"), "limited", rate) as service:
        yield service


def test_a_rate_limited_key_gets_retry_after_and_the_retries_honour_it(
    limited: Service, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        Client(limited.url, limited.keys["a"], max_retries=0) as impatient,
        pytest.raises(RateLimited) as refused,
    ):
        for _ in range(10):  # the burst is 2: the third is refused, unless the machine stalls
            impatient.jobs.list()
    assert refused.value.status == 429 and refused.value.retry_after in (1, 2)
    caplog.set_level(logging.INFO, logger="fitserve_client")
    with Client(limited.url, limited.keys["a"], max_retries=3) as patient:
        started = time.monotonic()
        assert patient.jobs.list().count == 0  # refused at first, then sent again
        took = time.monotonic() - started
    waits = [
        float(m) for m in re.findall(r"rate limit exceeded.*retrying in ([\d.]+) s", caplog.text)
    ]
    assert waits and all(w >= 1 for w in waits), caplog.text  # Retry-After, in whole seconds
    assert took >= sum(waits) - 0.05 * len(waits)  # each logged to a tenth of a second


@pytest.mark.timeout(300)
@EMBEDDED
def test_the_sdk_installs_alone_without_torch_and_talks_to_the_service(
    service: Service, trained: Trained, tmp_path: Path
) -> None:
    source = tmp_path / "client"  # a copy: building in place would leave build/ in the tree
    shutil.copytree(ROOT / "client", source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env = {k: v for k, v in env.items() if not k.startswith("FITSERVE_")}
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    installed = subprocess.run(
        [*pip, f"{source}[pandas]"], env=env, capture_output=True, text=True, timeout=240
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    script = tmp_path / "talk.py"
    script.write_text(TALK)
    job = trained.done.id
    done = subprocess.run(
        [str(venv / "bin" / "python"), str(script), service.url, service.keys["a"], job],
        env=env,
        cwd=tmp_path,  # not the repository: nothing of the server is importable
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["no torch", "no server", "succeeded", "(3,)", "ok"]
    cli = [str(venv / "bin" / "fitserve-client"), "jobs", "--url", service.url]
    listed = subprocess.run(
        [*cli, "--api-key", service.keys["a"]], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0 and job in listed.stdout, listed.stderr


TALK = """
import sys
try:
    import torch
except ImportError:
    print("no torch")
try:
    import core, api
except ImportError:
    print("no server")
import numpy as np
from fitserve_client import Client
url, key, job_id = sys.argv[1:]
with Client(url, key) as fs:
    assert job_id in [j.id for j in fs.jobs.list(limit=100).data]
    print(fs.jobs.get(job_id).status)
    print(fs.models.predict(job_id, np.zeros((3, 64))).predictions.shape)
    frame = fs.jobs.metrics(job_id, name="val_accuracy").to_pandas()
    assert list(frame["epoch"]) == [1, 2, 3], frame
    print("ok")
"""

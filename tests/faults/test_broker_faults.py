"""The broker really broken: Redis down at submit, flushed under a queued job, and stopped for a
few seconds under a running one. A Redis server of our own (never the machine's shared one),
PostgreSQL, real `fitserve worker` and `fitserve api` processes."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import free_port
from tests.faults.conftest import FaultService, fault_service
from tests.helpers import digits_mlp

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs a redis-server binary"
)

QUEUE = "fitserve-broker-faults"
GRACE = 2.0  # FITSERVE_QUEUED_GRACE_SECONDS here: a queued job without a message is enqueued again after it


class OwnRedis:
    """A throwaway redis-server on a free port, stopped and started again on that same port."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.data_dir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.client().ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # a lost machine, not a clean shutdown
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def brittle(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, broker: OwnRedis
) -> Iterator[FaultService]:
    with fault_service(
        request,
        tmp_path_factory.mktemp("broker_faults"),
        "broker-faults",
        broker.url,
        QUEUE,
        FITSERVE_QUEUED_GRACE_SECONDS=str(GRACE),
    ) as service:
        yield service


@pytest.fixture
def redis_up(broker: OwnRedis) -> Iterator[OwnRedis]:
    """Whatever a test did to it, the next test finds the broker running."""
    yield broker
    if broker.process is None or broker.process.poll() is not None:
        broker.start()


def _submit(service: FaultService, epochs: int) -> dict[str, Any]:
    raw = digits_mlp(epochs=epochs, batch_size=4).model_dump(mode="json")
    with service.client() as client:
        created = client.post("/v1/jobs", json=raw)
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


def _worker_alive(service: FaultService) -> None:
    workers = [p for p in service.processes if p.args[1] == "worker"]  # type: ignore[index]
    assert workers and all(p.poll() is None for p in workers), service.tail()


@pytest.mark.timeout(60)
def test_a_job_submitted_while_redis_is_down_is_queued_and_runs_once_it_is_back(
    brittle: FaultService, redis_up: OwnRedis
) -> None:
    redis_up.stop()
    started = time.monotonic()
    job = _submit(brittle, epochs=1)
    submit_seconds = time.monotonic() - started
    assert job["status"] == "queued"
    time.sleep(
        GRACE + 1
    )  # the sweeper's attempts fail meanwhile: the job stays queued, nothing is lost
    assert brittle.row(job["id"])["status"] == "queued"
    redis_up.start()
    back = time.monotonic()
    brittle.until(job["id"], lambda r: r["status"] != "queued")
    running = time.monotonic() - back
    done = brittle.finish(job["id"])
    assert (done["status"], done["attempt"]) == ("succeeded", 1), done["reason"]
    brittle.metrics_are_unique(job["id"])
    _worker_alive(brittle)
    print(
        f"\nsubmit with Redis down answered in {submit_seconds:.2f} s; running {running:.1f} s after Redis was back"
    )


@pytest.mark.timeout(60)
def test_a_flushed_broker_loses_the_queued_job_s_message_and_the_sweeper_enqueues_it_again(
    brittle: FaultService, redis_up: OwnRedis
) -> None:
    first = _submit(brittle, epochs=3)  # keeps the single worker busy
    brittle.until(first["id"], lambda r: r["status"] == "running")
    second = _submit(
        brittle, epochs=1
    )  # waits behind it (concurrency 1, prefetch 1), its message in Redis
    assert redis_up.client().llen(QUEUE) == 1
    redis_up.client().flushall()
    flushed = time.monotonic()
    assert brittle.finish(first["id"])["status"] == "succeeded"
    brittle.until(second["id"], lambda r: r["status"] != "queued")
    picked = time.monotonic() - flushed
    done = brittle.finish(second["id"])
    assert (done["status"], done["attempt"]) == ("succeeded", 1), done["reason"]
    for job in (first, second):
        brittle.metrics_are_unique(job["id"])
    # and a submit right after the flush is delivered as well (the routing table is gone with it)
    redis_up.client().flushall()
    submitted = time.monotonic()
    third = _submit(brittle, epochs=1)
    brittle.until(third["id"], lambda r: r["status"] != "queued")
    direct = time.monotonic() - submitted
    done = brittle.finish(third["id"])
    assert (done["status"], done["attempt"]) == ("succeeded", 1), done["reason"]
    brittle.metrics_are_unique(third["id"])
    _worker_alive(brittle)
    print(
        f"\nthe job queued behind another was running {picked:.1f} s after the flush; one submitted right after "
        f"a flush, {direct:.1f} s after its submit"
    )


@pytest.mark.timeout(60)
def test_redis_stopped_under_a_running_job_for_a_few_seconds_and_the_job_still_succeeds(
    brittle: FaultService, redis_up: OwnRedis
) -> None:
    job = _submit(brittle, epochs=15)  # about 10 s of training: it outlasts the outage
    brittle.until(job["id"], lambda r: r["status"] == "running" and r["epoch"] >= 1)
    redis_up.stop()
    time.sleep(
        4
    )  # past the 3 s lease: heartbeats go to PostgreSQL, so the lease holds without Redis
    row = brittle.row(job["id"])
    assert (row["status"], row["attempt"]) == ("running", 1), row  # the running copy just goes on
    redis_up.start()
    back = time.monotonic()
    assert (
        brittle.row(job["id"])["status"] == "running"
    )  # still training when the broker comes back
    done = brittle.finish(job["id"])
    assert (done["status"], done["attempt"]) == ("succeeded", 1), done["reason"]
    brittle.metrics_are_unique(job["id"])
    # the worker reconnected by itself: a new job submitted now runs
    after = _submit(brittle, epochs=1)
    brittle.until(after["id"], lambda r: r["status"] != "queued")
    reconnected = time.monotonic() - back
    assert brittle.finish(after["id"])["status"] == "succeeded"
    _worker_alive(brittle)
    print(
        f"\nthe job ended and another one, submitted after it, was running {reconnected:.1f} s after Redis was back"
    )


@pytest.mark.timeout(60)
def test_every_redis_connection_dropped_under_a_running_job_is_reconnected_and_nothing_is_left_behind(
    brittle: FaultService, redis_up: OwnRedis
) -> None:
    job = _submit(brittle, epochs=8)
    brittle.until(job["id"], lambda r: r["status"] == "running" and r["epoch"] >= 1)
    killed = redis_up.client().client_kill_filter(
        _type="normal"
    )  # every connection dropped, the data kept
    assert killed >= 1
    done = brittle.finish(job["id"])
    assert (done["status"], done["attempt"]) == ("succeeded", 1), done["reason"]
    brittle.metrics_are_unique(job["id"])
    after = _submit(brittle, epochs=1)
    assert brittle.finish(after["id"])["status"] == "succeeded"
    broker = redis_up.client()  # no message left unacked or queued, to be redelivered some day
    deadline = time.monotonic() + 10
    while (broker.hlen("unacked"), broker.llen(QUEUE)) != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (broker.hlen("unacked"), broker.llen(QUEUE)) == (0, 0)
    _worker_alive(brittle)

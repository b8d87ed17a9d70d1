"""The database really broken: PostgreSQL stopped for 30 s under a training job. A server of the
test's own (never the machine's shared one), stopped and started with pg_ctl; real `fitserve
worker` and `fitserve api` processes on it, and the shared Redis on a queue of their own."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.sse import entries, stream
from tests.faults.conftest import FaultService, fault_service, shared_redis_queue
from tests.faults.postgres import PrivatePostgres, binaries
from tests.helpers import digits_mlp

BINARIES = binaries()
pytestmark = pytest.mark.skipif(
    BINARIES is None, reason="needs PostgreSQL's server binaries (initdb, pg_ctl)"
)
OUTAGE = 30.0  # seconds, as the issue asks: ten leases of the 3 s these workers hold
# The long job trains on through the outage and well past it: two jobs on this 2-core machine
# made about 1 epoch/s each (13 -> 43 in the 30 s outage), so 100 epochs outlast the outage with
# room, and its rest fits the wait; 150 needed ~120 s after the restart, the old wait's bound.
LONG_EPOCHS = 100


@pytest.fixture(scope="module")
def database() -> Iterator[PrivatePostgres]:
    assert BINARIES is not None
    server = PrivatePostgres(BINARIES)
    try:
        server.create()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def shaky(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    database: PrivatePostgres,
) -> Iterator[FaultService]:
    with (
        shared_redis_queue("db-faults") as (url, queue),
        fault_service(
            request,
            tmp_path_factory.mktemp("db_faults"),
            "db-faults",
            url,
            queue,
            postgres=database.address,
        ) as service,
    ):
        yield service


def _refusals_while_down(service: FaultService, job_id: str) -> dict[str, Any]:
    """What the API answers with its database gone: a 503 to retry, never a 500; nothing accepted."""
    spec = digits_mlp(epochs=1).model_dump(mode="json")
    with service.client() as client:
        answers = {
            "read": client.get(f"/v1/jobs/{job_id}"),
            "submit": client.post("/v1/jobs", json=spec),
            "list": client.get("/v1/jobs"),
            # a key the API has not seen yet needs the database to be checked: a 503 too, not 500
            "unknown key": httpx.get(
                f"{service.url}/v1/jobs", headers={"Authorization": "Bearer fs_unseen"}, timeout=10
            ),
            "ready": httpx.get(f"{service.url}/readyz", timeout=10),
        }
    for name, answer in answers.items():
        assert answer.status_code == 503, (name, answer.status_code, answer.text)
    for name in ("read", "submit", "list", "unknown key"):
        assert answers[name].headers["retry-after"] == "5"
        assert answers[name].json() == {"detail": "the database is unreachable; try again shortly"}
    assert answers["ready"].json()["broker"] == "ok" and answers["ready"].json()["database"] != "ok"
    return answers


@pytest.mark.timeout(330)
def test_postgres_stopped_for_30_s_under_training_jobs(
    shaky: FaultService, database: PrivatePostgres
) -> None:
    """One job trains through the whole outage; the other finishes in it, and waits to write its
    last points and its outcome. Two workers, one job each."""
    shaky.start("worker")
    long, short = (
        shaky.submit(epochs=LONG_EPOCHS),
        shaky.submit(epochs=6),
    )  # the long one trains through the outage
    before = {
        job: shaky.until(job, lambda r: r["status"] == "running" and r["epoch"] >= 1)
        for job in (long, short)
    }
    training = [int(row["lease_owner"].split(":")[1]) for row in before.values()]  # host:pid:task
    watcher = Watcher(shaky, long)  # a live stream of the long job, open across the outage
    at_stop = shaky.row(long)["epoch"]  # the last progress written before the outage
    shaky.database.dispose()  # type: ignore[union-attr]  # the test's own pool dies with the server too
    database.stop()
    stopped = time.monotonic()
    _refusals_while_down(shaky, long)
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped)))
    os.kill(
        training[0], 0
    )  # the long job's training process lived through the outage (raises if it is gone)
    # The wall time is read before the start: start() returns only after its own readiness probe,
    # and a waiting worker may have written in between (CI saw an outcome 3 ms before it).
    restarting = time.time()
    database.start()
    back, back_wall = time.monotonic(), restarting
    row = shaky.until(
        long, lambda r: r["heartbeat_at"].timestamp() > back_wall, timeout=30
    )  # its first beat since
    caught_up = time.monotonic() - back
    print(
        f"\nPostgreSQL down {back - stopped:.1f} s: the long job went from epoch {at_stop} to {row['epoch']} "
        f"meanwhile; its first heartbeat after the restart came {caught_up:.1f} s after it"
    )
    assert row["epoch"] > at_stop  # it trained on through the outage
    with shaky.client() as client:
        done = {
            job: wait_for(client, job, ("succeeded", "failed", "cancelled"), timeout=180)
            for job in (long, short)
        }
        listed = {j["id"] for j in client.get("/v1/jobs").json()["data"]}
    assert listed == {long, short}  # the submit refused during the outage left nothing behind
    for job, epochs in ((long, LONG_EPOCHS), (short, 6)):
        final = shaky.row(job)
        # One attempt throughout: the lease was renewed once the database was back, never reaped.
        assert (done[job]["status"], final["attempt"], final["preemptions"]) == (
            "succeeded",
            1,
            0,
        ), done[job]
        _every_point_written_once(shaky, job, epochs=epochs, steps=int(final["steps"]))
    # The short job trained to its end inside the outage; its last points and outcome went in after it.
    last_point = shaky.sql("SELECT max(time) FROM metric WHERE job_id = :j", j=short)[0][
        0
    ].timestamp()
    finished = shaky.row(short)["finished_at"].timestamp()
    assert last_point < back_wall < finished, (last_point, back_wall, finished)
    print(
        f"the short job's last point was taken {back_wall - last_point:.1f} s before the restart and its "
        f"outcome written {finished - back_wall:.1f} s after it"
    )
    assert "database unavailable, keeping" in shaky.tail(400)
    watcher.join(60)
    streamed = [e for e in watcher.entries if e["kind"] == "metric"]
    written = shaky.sql("SELECT seq FROM metric WHERE job_id = :j ORDER BY seq", j=long)
    assert [e["seq"] for e in streamed] == [seq for (seq,) in written], (
        "the stream lost or repeated points"
    )
    assert (
        watcher.entries[-1]["status"] == "succeeded"
        and "the database is unreachable; waiting" in watcher.comments
    )


class Watcher(threading.Thread):
    """Reads a job's event stream to its end, keeping its entries and comments."""

    def __init__(self, service: FaultService, job_id: str) -> None:
        super().__init__(daemon=True)
        self.service, self.job_id = service, job_id
        self.entries: list[dict[str, Any]] = []
        self.comments: set[str] = set()
        self.open = threading.Event()
        self.start()
        assert self.open.wait(30), "the stream did not open"

    def run(self) -> None:
        with self.service.client() as client:
            for event in stream(client, self.job_id):
                self.open.set()
                self.comments.update(event.comments)
                self.entries += entries([event])


def _every_point_written_once(service: FaultService, job_id: str, epochs: int, steps: int) -> None:
    """The points buffered through the outage all reached the table, and none twice."""
    counts = dict(
        service.sql("SELECT name, count(*) FROM metric WHERE job_id = :j GROUP BY name", j=job_id)
    )
    assert counts["loss"] == counts["accuracy"] == counts["val_loss"] == epochs, counts
    assert counts["step_loss"] == epochs * steps // 50, counts  # fit.log_every_steps: 50 by default
    total, distinct = service.sql(
        "SELECT count(*), count(DISTINCT (step, name)) FROM metric WHERE job_id = :j", j=job_id
    )[0]
    assert total == distinct
    epochs_seen = service.sql(
        "SELECT DISTINCT epoch FROM metric WHERE job_id = :j AND name = 'loss' ORDER BY 1", j=job_id
    )
    assert [e for (e,) in epochs_seen] == list(range(1, epochs + 1))
    checkpoints = service.sql("SELECT count(*) FROM checkpoint WHERE job_id = :j", j=job_id)[0][0]
    assert checkpoints >= 1

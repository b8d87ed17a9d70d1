"""Workers really broken: SIGKILL mid-training, SIGTERM (shutdown), and a job whose worker dies
every time. PostgreSQL + Redis, real `fitserve worker` and `fitserve api` processes."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tests.e2e.conftest import wait_for
from tests.faults.conftest import FaultService
from tests.helpers import digits_mlp


def _submit(service: FaultService, epochs: int) -> str:
    raw = digits_mlp(epochs=epochs, batch_size=4).model_dump(mode="json")
    with service.client() as client:
        created = client.post("/v1/jobs", json=raw)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _pid(row: dict[str, Any]) -> int:
    return int(row["lease_owner"].split(":")[1])  # host:pid:task


def _metrics_are_unique(service: FaultService, job_id: str) -> None:
    total, distinct = service.sql("SELECT count(*), count(DISTINCT (step, name)) FROM metric WHERE job_id = :j",
                                  j=job_id)[0]  # fmt: skip
    assert total == distinct > 0


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def test_a_sigkilled_worker_s_job_is_reaped_and_resumes_from_its_checkpoint(faulty: FaultService) -> None:
    job_id = _submit(faulty, epochs=6)
    row = faulty.until(job_id, lambda r: r["status"] == "running" and r["epoch"] >= 2)
    training = _pid(row)
    pool = _parent(training)
    worker = next(p for p in faulty.processes if p.args[1] == "worker" and p.poll() is None)  # type: ignore[index]
    for pid in (worker.pid, training, pool):  # the machine is gone: no goodbye, the lease just lapses
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    worker.wait(timeout=10)
    faulty.start("worker")  # a fresh worker: its reaper re-queues the job, and it resumes it
    faulty.until(job_id, lambda r: r["status"] == "running" and r["attempt"] == 2)
    print(f"\nresumed {time.monotonic() - killed:.1f} s after the kill (lease 3 s, worker start included)")
    assert time.monotonic() - killed < 45
    with faulty.client() as client:
        done = wait_for(client, job_id, ("succeeded", "failed"), timeout=120)
    assert (done["status"], done["attempt"]) == ("succeeded", 2), done["reason"]
    second = faulty.sql("SELECT min(epoch) FROM metric WHERE job_id = :j AND attempt = 2 AND name = 'loss'",
                        j=job_id)[0][0]  # fmt: skip
    assert second is not None and second >= 2  # from the epoch-1 checkpoint or later, not from scratch
    _metrics_are_unique(faulty, job_id)


def test_sigterm_preempts_the_job_which_resumes_on_another_worker(faulty: FaultService) -> None:
    job_id = _submit(faulty, epochs=6)
    faulty.until(job_id, lambda r: r["status"] == "running" and r["epoch"] >= 1)
    worker = next(p for p in faulty.processes if p.args[1] == "worker" and p.poll() is None)  # type: ignore[index]
    worker.send_signal(signal.SIGTERM)
    preempted = faulty.until(job_id, lambda r: r["status"] != "running", timeout=30)
    assert preempted["status"] in ("preempted", "queued"), preempted
    assert worker.wait(timeout=30) is not None
    faulty.start("worker")
    with faulty.client() as client:
        done = wait_for(client, job_id, ("succeeded", "failed"), timeout=120)
    row = faulty.row(job_id)
    assert (done["status"], row["attempt"], row["preemptions"]) == ("succeeded", 2, 1), done["reason"]
    _metrics_are_unique(faulty, job_id)


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(faulty: FaultService) -> None:
    job_id = _submit(faulty, epochs=200)
    kills = []
    for attempt in (1, 2):  # FITSERVE_MAX_ATTEMPTS=2; the training process dies, as in an out-of-memory kill
        row = faulty.until(job_id, lambda r, a=attempt: r["status"] == "running" and r["attempt"] == a)  # type: ignore[misc]
        os.kill(_pid(row), signal.SIGKILL)
        kills.append(time.monotonic())
    with faulty.client() as client:
        done = wait_for(client, job_id, ("succeeded", "failed"), timeout=60)
    assert done["status"] == "failed"
    assert done["reason"] == "gave up after 2 attempts: the training process was killed by SIGKILL (out of memory?)"
    worker = next(p for p in faulty.processes if p.args[1] == "worker" and p.poll() is None)  # type: ignore[index]
    assert worker.poll() is None  # the worker itself survived both kills
    assert faulty.row(job_id)["attempt"] == 2
    print(f"\nthe killed attempt was taken up again {kills[1] - kills[0]:.1f} s after its kill (no lease wait)")


def test_a_job_whose_message_was_lost_is_enqueued_again_by_the_sweeper(faulty: FaultService) -> None:
    done_id = _submit(faulty, epochs=1)
    with faulty.client() as client:
        assert wait_for(client, done_id, ("succeeded", "failed"), timeout=60)["status"] == "succeeded"
    # As if the broker had been down at submit (or flushed since): a committed row, no message.
    lost = f"job_{os.urandom(16).hex()}"
    faulty.sql("INSERT INTO job (id, tenant_id, name, spec, status, attempt, max_attempts, preemptions, "
               "cancel_requested, epoch, epochs, step, steps, parameters, estimated_memory_bytes, latest_metrics, "
               "test_metrics, created_at, updated_at) SELECT :new, tenant_id, name, spec, 'queued', 0, 3, 0, false, "
               "0, epochs, 0, 0, parameters, 0, '{}', '{}', now(), now() FROM job WHERE id = :old RETURNING id",
               new=lost, old=done_id)  # fmt: skip
    started = time.monotonic()
    with faulty.client() as client:
        done = wait_for(client, lost, ("succeeded", "failed"), timeout=60)
    assert done["status"] == "succeeded", done["reason"]
    assert 5 <= time.monotonic() - started < 30  # FITSERVE_QUEUED_GRACE_SECONDS=5

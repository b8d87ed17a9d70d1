"""The claim by query (core/repository/claims.py) on SQLite and PostgreSQL built by the
migrations: priority first, then the tenants' turns, then age; what a worker's capacity lets it
take; and two workers racing. Also the resources spec, the declared pools and the waiting reasons
(core/resources.py)."""

from __future__ import annotations

import secrets
import threading

import pytest
from pydantic import ValidationError
from sqlalchemy import update

from core.db import session_scope
from core.repository import claims as claims_repo
from core.repository import jobs as jobs_repo
from core.repository import tenants as tenants_repo
from core.repository import workers as workers_repo
from core.resources import Capacity, Need, Pool, pool_refusal, waiting_reason
from core.spec import Resources
from core.tables import Job, JobStatus

GPU_WORKER = Capacity(("cuda",), gpus=2, cpus=4, memory_bytes=2**30)


def _jobs(session, tenant: str, count: int, **columns: object) -> list[str]:  # type: ignore[no-untyped-def]
    owner = tenants_repo.get_or_create_tenant(session=session, name=tenant)
    ids = []
    for _ in range(count):
        job = Job(tenant_id=owner.id, name="j", spec={}, epochs=1, queue="cuda", gpus=1)
        for name, value in columns.items():
            setattr(job, name, value)
        ids.append(jobs_repo.create_job(session=session, job=job).id)
        session.flush()
    return ids


def _claim_all(url: str, capacity: Capacity = GPU_WORKER, queue: str = "cuda") -> list[str]:
    claimed = []
    while True:
        with session_scope(url) as s:
            job = claims_repo.claim_next(
                session=s, queue=queue, owner="w", lease_seconds=30, capacity=capacity
            )
            if job is None:
                return claimed
            claimed.append(job.id)


def _retire(url: str, ids: list[str]) -> None:
    """Out of the shared database's queues, for the tests after this one."""
    with session_scope(url) as s:
        s.execute(update(Job).where(Job.id.in_(ids)).values(status=JobStatus.CANCELLED))


def test_priority_first_then_the_tenants_take_turns_then_age(database_url: str) -> None:
    tag = secrets.token_hex(4)
    with session_scope(database_url) as s:
        a = _jobs(s, f"a-{tag}", 6)  # the busy tenant, first in
        b = _jobs(s, f"b-{tag}", 1)
        c = _jobs(s, f"c-{tag}", 1)
        urgent = _jobs(s, f"b-{tag}", 1, priority=5)
    order = _claim_all(database_url)
    # FIFO would give a[0..5] before b and c: the turns give them theirs after one of a's
    assert order == [urgent[0], a[0], c[0], b[0], *a[1:]]
    _retire(database_url, order)


def test_a_worker_claims_only_what_its_capacity_fits(database_url: str) -> None:
    tag = secrets.token_hex(4)
    with session_scope(database_url) as s:
        big = _jobs(s, f"cap-{tag}", 1, gpus=4, processes=4)[0]
        hungry = _jobs(s, f"cap-{tag}", 1, memory_bytes=2**31)[0]
        fits = _jobs(s, f"cap-{tag}", 1, processes=2, gpus=2)[0]
        # first in the `any` queue, which the shared database's other tests also fill
        anyone = _jobs(s, f"cap-{tag}", 1, queue="any", gpus=0, priority=9)[0]
    assert _claim_all(database_url) == [fits]  # the cuda queue: 2 GPUs, 1 GiB here
    cpu_worker = Capacity(("cpu",), gpus=0, cpus=2, memory_bytes=2**30)
    assert _claim_all(database_url, cpu_worker, "cpu") == []  # cuda jobs never wake it
    with session_scope(database_url) as s:
        first = claims_repo.claim_next(
            session=s, queue="any", owner="w", lease_seconds=30, capacity=GPU_WORKER
        )
        assert first is not None and first.id == anyone
    with session_scope(database_url) as s:
        # an `any` job takes the kind of the worker that first claimed it: its resumes wait there
        assert s.get(Job, anyone).queue == "cuda"  # type: ignore[union-attr]
        assert {s.get(Job, i).status for i in (big, hungry)} == {"queued"}  # type: ignore[union-attr]
    _retire(database_url, [big, hungry, fits, anyone])


def test_two_workers_racing_claim_each_job_once(database_url: str) -> None:
    """Exclusivity under races; the turns' order is the sequential test's and the e2e test's (two
    claims at the same instant have no order to check)."""
    tag = secrets.token_hex(4)
    tenants = [f"{name}-{tag}" for name in "xyz"]
    with session_scope(database_url) as s:
        owner = {job_id: t for t in tenants for job_id in _jobs(s, t, 4)}
    claimed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(2)

    def worker() -> None:
        start.wait(timeout=10)
        for job_id in _claim_all(database_url):
            with lock:
                claimed.append(job_id)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(claimed) == sorted(owner)  # each once
    with session_scope(database_url) as s:
        rows = [s.get(Job, job_id) for job_id in owner]
        assert {r.attempt for r in rows if r is not None} == {1}
    _retire(database_url, list(owner))


def test_waiting_reasons_follow_the_live_workers(database_url: str) -> None:
    tag = secrets.token_hex(4)
    with session_scope(database_url) as s:
        job_id = _jobs(s, f"why-{tag}", 1, gpus=3, processes=3)[0]
        workers_repo.register(
            session=s,
            name=f"gpu-{tag}",
            capacity=Capacity(("cuda",), 1, 8, 2**33),
            concurrency=1,
        )
    with session_scope(database_url) as s:
        live = workers_repo.live(session=s, within_seconds=30)
        workers_repo.refresh_waiting_reasons(session=s, workers=live)
    with session_scope(database_url) as s:
        reason = s.get(Job, job_id).reason  # type: ignore[union-attr]
    assert reason is not None and reason.startswith(
        "waiting for a worker serving CUDA jobs with 3 GPUs"
    )
    assert f"gpu-{tag} has 1 GPUs, the job needs 3" in reason
    with session_scope(database_url) as s:
        workers_repo.register(
            session=s, name=f"big-{tag}", capacity=Capacity(("cuda",), 4, 8, 2**33), concurrency=1
        )
        workers_repo.refresh_waiting_reasons(
            session=s, workers=workers_repo.live(session=s, within_seconds=30)
        )
    with session_scope(database_url) as s:
        assert s.get(Job, job_id).reason is None  # type: ignore[union-attr]  # it just waits its turn
        for name in (f"gpu-{tag}", f"big-{tag}"):
            workers_repo.unregister(session=s, name=name)
    _retire(database_url, [job_id])


def test_resources_are_checked_in_the_spec() -> None:
    assert Resources(device="cuda", processes=2).gpus_needed == 2
    assert Resources(processes=2).gpus_needed == 0  # any: GPUs only once it lands on one
    for bad, words in (
        ({"device": "cpu", "gpus": 1}, "gpus needs device 'cuda'"),
        ({"device": "cuda", "gpus": 2, "processes": 1}, "must equal processes"),
        ({"device": "tpu"}, "'cpu', 'cuda' or 'any'"),
        ({"processes": 0}, "greater than or equal to 1"),
    ):
        with pytest.raises(ValidationError, match=words):
            Resources.model_validate(bad)


def test_declared_pools_refuse_what_none_can_run_naming_the_field() -> None:
    pools = [Pool(kind="cpu", workers=2, cpus=4, memory_bytes=2**30)]
    assert pool_refusal(pools, Need("any", 0, 4, 2, 2**20)) is None
    cases = {
        Need("cuda", 1, 1, 1, 1): ("device", "runs no cuda workers (its pools: cpu)"),
        Need("cpu", 0, 8, 1, 1): ("processes", "at most 4 processes per job"),
        Need("cpu", 0, 1, 3, 1): ("nodes", "at most 2 such workers"),
        Need("cpu", 0, 1, 1, 2**31): ("memory_bytes", "workers allow at most 1,073,741,824"),
    }
    for need, (field, words) in cases.items():
        refusal = pool_refusal(pools, need)
        assert refusal is not None and refusal[0] == field and words in refusal[1], refusal


def test_a_waiting_reason_says_what_is_missing() -> None:
    cpu = ("host:1", Capacity(("cpu",), 0, 2, 2**30))
    need = Need("cuda", 1, 1, 1, 1000)
    assert waiting_reason(need, []) == (
        "waiting for a worker serving CUDA jobs and 1,000 bytes of training memory: "
        "no worker is running"
    )
    assert waiting_reason(need, [cpu]) == (
        "waiting for a worker serving CUDA jobs and 1,000 bytes of training memory: no live "
        "worker can; host:1 serves cpu, not cuda"
    )
    assert waiting_reason(Need("any", 0, 1, 1, 1000), [cpu]) is None
    assert "2 workers" in (waiting_reason(Need("cpu", 0, 1, 2, 1000), [cpu]) or "")


def test_a_worker_declared_cuda_without_a_gpu_refuses_to_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys
    from pathlib import Path

    from core.settings import Settings
    from worker.capacity import CapacityError, consumed_queues, this_worker

    settings = Settings(worker_queues="cpu,cuda", queue="q")
    with pytest.raises(CapacityError, match="torch sees no GPU here"):
        this_worker(settings, gpus=0)
    both = this_worker(settings, gpus=2)
    assert both.queues == ("cpu", "cuda") and both.any_kind == "cuda"
    assert consumed_queues(settings, both) == ["q", "q.cpu", "q.cuda"]
    assert this_worker(Settings(), gpus=0).queues == ("cpu",)  # unset: what the machine has
    env = {k: v for k, v in os.environ.items() if not k.startswith("FITSERVE_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "fitserve"), "worker", "--queues", "cuda"],
        env=env | {"FITSERVE_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "torch sees no GPU here" in done.stderr, done.stderr

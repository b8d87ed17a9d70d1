"""The schema, built by the migrations, on SQLite and PostgreSQL; the repositories' guarantees."""

from __future__ import annotations

from datetime import timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update

from core.db import get_engine, ours, session_scope
from core.repository import jobs as jobs_repo
from core.repository import metrics as metrics_repo
from core.repository import tenants as tenants_repo
from core.tables import ApiKey, Base, Job, utcnow


def _job(session, tenant_name: str = "acme", max_attempts: int = 3) -> Job:  # type: ignore[no-untyped-def]
    tenant = tenants_repo.get_or_create_tenant(session=session, name=tenant_name)
    return jobs_repo.create_job(
        session=session,
        job=Job(tenant_id=tenant.id, name="j", spec={}, epochs=3, max_attempts=max_attempts),
    )


def test_migrations_match_the_tables(database_url: str) -> None:
    with get_engine(database_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": ours})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_keys_are_stored_hashed_and_revocable(database_url: str) -> None:
    with session_scope(database_url) as s:
        tenant = tenants_repo.get_or_create_tenant(session=s, name="keys-test")
        key = tenants_repo.create_key(session=s, tenant=tenant)
    with session_scope(database_url) as s:
        stored = s.query(ApiKey).filter(ApiKey.tenant_id == tenant.id).one()
        assert key not in (
            stored.key_hash,
            stored.prefix,
        ) and stored.key_hash == tenants_repo.hash_key(key)
        assert tenants_repo.tenant_for_key(session=s, key=key).id == tenant.id  # type: ignore[union-attr]
        assert tenants_repo.revoke_key(session=s, prefix=key[:10]) == 1
    with session_scope(database_url) as s:
        assert tenants_repo.tenant_for_key(session=s, key=key) is None


def test_claim_is_exclusive_and_fences_stale_attempts(database_url: str) -> None:
    with session_scope(database_url) as s:
        job_id = _job(s).id
    with session_scope(database_url) as s:
        first = jobs_repo.claim(session=s, job_id=job_id, owner="w1", lease_seconds=30)
        assert first is not None and first.attempt == 1 and first.status == "running"
    with session_scope(database_url) as s:
        assert jobs_repo.claim(session=s, job_id=job_id, owner="w2", lease_seconds=30) is None
        # the lease expires: a second worker takes over with a newer attempt
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    with session_scope(database_url) as s:
        second = jobs_repo.claim(session=s, job_id=job_id, owner="w2", lease_seconds=30)
        assert second is not None and second.attempt == 2
    with session_scope(database_url) as s:
        fenced = jobs_repo.heartbeat(
            session=s, job_id=job_id, attempt=1, lease_seconds=30, progress={}
        )
        assert fenced == (False, False, 0)
        assert not jobs_repo.finish(
            session=s, job_id=job_id, attempt=1, status="failed", reason="stale"
        )
        beat = jobs_repo.heartbeat(
            session=s, job_id=job_id, attempt=2, lease_seconds=30, progress={"epoch": 2}
        )
        assert beat == (True, False, 3)  # seq 3: queued, claimed by w1, claimed by w2
        assert jobs_repo.finish(
            session=s, job_id=job_id, attempt=2, status="succeeded", reason="done"
        )
    with session_scope(database_url) as s:
        job = s.get(Job, job_id)
        assert job is not None and (job.status, job.reason, job.epoch) == ("succeeded", "done", 2)


def test_cancel_of_a_queued_job_is_immediate_and_blocks_the_claim(database_url: str) -> None:
    with session_scope(database_url) as s:
        job = _job(s)
        jobs_repo.request_cancel(session=s, job=job)
        assert (job.status, job.reason) == ("cancelled", "cancelled before it started")
    with session_scope(database_url) as s:
        assert jobs_repo.claim(session=s, job_id=job.id, owner="w", lease_seconds=30) is None


def test_metric_writes_are_idempotent(database_url: str) -> None:
    with session_scope(database_url) as s:
        job_id = _job(s).id
    rows = [
        {
            "job_id": job_id,
            "attempt": 1,
            "step": step,
            "epoch": 1,
            "name": name,
            "value": float(step),
            "time": utcnow(),
        }
        for step in range(1, 4)
        for name in ("loss", "val_loss")
    ]
    for _ in range(2):  # a retried batch
        with session_scope(database_url) as s:
            metrics_repo.number_metrics(session=s, job_id=job_id, rows=rows)
            metrics_repo.add_metrics(session=s, rows=rows)
    with session_scope(database_url) as s:
        assert metrics_repo.count_metrics(session=s, job_id=job_id) == 6
    overlapping = [{**row, "step": row["step"] + 2} for row in rows]  # steps 3..5: one old, two new
    with session_scope(database_url) as s:
        metrics_repo.number_metrics(session=s, job_id=job_id, rows=overlapping)
        metrics_repo.add_metrics(session=s, rows=overlapping)
    with session_scope(database_url) as s:
        assert metrics_repo.count_metrics(session=s, job_id=job_id) == 10
        since = metrics_repo.list_metrics(
            session=s, job_id=job_id, name="loss", since_step=1, limit=10
        )
        assert [(m.step, m.value) for m in since] == [
            (2, 2.0),
            (3, 3.0),
            (4, 2.0),
            (5, 3.0),
        ]  # first write kept


def test_jobs_are_scoped_to_their_tenant(database_url: str) -> None:
    with session_scope(database_url) as s:
        job = _job(s, "owner")
        other = tenants_repo.get_or_create_tenant(session=s, name="stranger")
    with session_scope(database_url) as s:
        assert jobs_repo.get_job(session=s, tenant_id=other.id, job_id=job.id) is None
        assert jobs_repo.get_job(session=s, tenant_id=job.tenant_id, job_id=job.id) is not None
        assert jobs_repo.list_jobs(
            session=s, tenant_id=other.id, status=None, limit=10, offset=0
        ) == ([], 0)


def test_status_for_key_checks_key_and_owner_in_one_query(database_url: str) -> None:
    from core.db import hot_read

    with session_scope(database_url) as s:
        job = _job(s, "predictor")
        key = tenants_repo.create_key(
            session=s, tenant=tenants_repo.get_or_create_tenant(session=s, name="predictor")
        )
        stranger = tenants_repo.create_key(
            session=s, tenant=tenants_repo.get_or_create_tenant(session=s, name="x")
        )

    def status(k: str) -> tuple[bool, str | None]:
        key_hash = tenants_repo.hash_key(k)
        return hot_read(
            lambda c: jobs_repo.status_for_key(connection=c, key_hash=key_hash, job_id=job.id),
            database_url,
        )

    assert status(key) == (True, "queued")
    assert status(stranger) == (True, None)
    assert status("fs_nope") == (False, None)
    with session_scope(database_url) as s:
        tenants_repo.revoke_key(session=s, prefix=key[:10])
    assert status(key) == (False, None)  # refused at once: nothing is cached


def test_hot_read_survives_a_dropped_connection(postgres_url: str) -> None:
    import psycopg
    from sqlalchemy import text

    from core.db import hot_read

    assert (
        hot_read(lambda c: c.execute(text("SELECT 1")).scalar(), postgres_url) == 1
    )  # a pooled connection
    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,)
        )
    assert hot_read(lambda c: c.execute(text("SELECT 2")).scalar(), postgres_url) == 2


def _expire(s, job_id: str) -> None:  # type: ignore[no-untyped-def]
    s.execute(
        update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
    )


def test_a_job_gives_up_after_max_attempts_and_preemptions_do_not_count(database_url: str) -> None:
    with session_scope(database_url) as s:
        job_id = _job(s, max_attempts=2).id  # the job's own, not the claiming worker's setting (3)
    for attempt in (1, 2):
        with session_scope(database_url) as s:
            job = jobs_repo.claim(session=s, job_id=job_id, owner="w", lease_seconds=30)
            assert job is not None and job.attempt == attempt
            if attempt == 1:  # the first attempt is preempted: not counted
                assert jobs_repo.preempt(
                    session=s, job_id=job_id, attempt=1, reason="worker shut down"
                )
                assert not jobs_repo.preempt(session=s, job_id=job_id, attempt=1, reason="twice")
    with session_scope(database_url) as s:
        assert s.get(Job, job_id).preemptions == 1  # type: ignore[union-attr]
        _expire(s, job_id)
    with session_scope(database_url) as s:  # attempt 2 died: one counted attempt left
        job = jobs_repo.claim(session=s, job_id=job_id, owner="w", lease_seconds=30)
        assert job is not None and job.attempt == 3
        _expire(s, job_id)
    with session_scope(database_url) as s:  # attempt 3 died too: the next claim fails the job
        assert jobs_repo.claim(session=s, job_id=job_id, owner="w", lease_seconds=30) is None
    with session_scope(database_url) as s:
        job = s.get(Job, job_id)
        assert job is not None and (job.status, job.attempt, job.lease_owner) == ("failed", 3, None)
        assert job.reason == "gave up after 2 attempts: the worker died (lease expired)"
        assert job.finished_at is not None


def test_the_reaper_requeues_expired_leases_once(database_url: str) -> None:
    with session_scope(database_url) as s:
        alive, dead = _job(s).id, _job(s).id
    with session_scope(database_url) as s:
        for job_id in (alive, dead):
            jobs_repo.claim(session=s, job_id=job_id, owner="w", lease_seconds=30)
        _expire(s, dead)
    with session_scope(database_url) as s:
        reaped = jobs_repo.reap_expired(session=s)
    assert dead in reaped and alive not in reaped
    with session_scope(database_url) as s:
        assert dead not in jobs_repo.reap_expired(session=s)  # a second reaper finds nothing
        job = s.get(Job, dead)
        assert job is not None and (job.status, job.lease_owner, job.reason) == (
            "queued",
            None,
            jobs_repo.DIED,
        )
        assert heartbeat_is_fenced(s, dead)
    with session_scope(
        database_url
    ) as s:  # reaped twice and dead again: the reason is the last one
        s.execute(update(Job).where(Job.id == dead).values(max_attempts=1))
        assert jobs_repo.claim(session=s, job_id=dead, owner="w", lease_seconds=30) is None
        assert (
            s.get(Job, dead).reason == "gave up after 1 attempts: the worker died (lease expired)"
        )  # type: ignore[union-attr]


def heartbeat_is_fenced(s, job_id: str) -> bool:  # type: ignore[no-untyped-def]
    """The attempt that lost its lease can no longer write."""
    return jobs_repo.heartbeat(
        session=s, job_id=job_id, attempt=1, lease_seconds=30, progress={}
    ) == (False, False, 0)


def test_the_sweeper_enqueues_waiting_jobs_once_per_grace_period(database_url: str) -> None:
    with session_scope(database_url) as s:
        old, fresh, running = _job(s).id, _job(s).id, _job(s).id
        jobs_repo.claim(session=s, job_id=running, owner="w", lease_seconds=30)
        long_ago = utcnow() - timedelta(seconds=120)
        s.execute(update(Job).where(Job.id.in_([old, running])).values(updated_at=long_ago))
    with session_scope(database_url) as s:
        swept = jobs_repo.sweep_waiting(session=s, grace_seconds=60)
    assert old in swept and fresh not in swept and running not in swept
    with session_scope(database_url) as s:
        assert old not in jobs_repo.sweep_waiting(
            session=s, grace_seconds=60
        )  # touched: not again this period


def test_a_maintenance_pass_enqueues_what_it_reaped_and_swept(service_env: str) -> None:
    from core.settings import get_settings
    from worker.maintenance import run_once

    with session_scope() as s:
        dead, lost = _job(s).id, _job(s).id
        jobs_repo.claim(session=s, job_id=dead, owner="w", lease_seconds=30)
        _expire(s, dead)
        s.execute(
            update(Job).where(Job.id == lost).values(updated_at=utcnow() - timedelta(seconds=3600))
        )
    sent: list[str] = []
    reaped, swept = run_once(get_settings(), lambda job_id, queue: sent.append(job_id))
    assert dead in reaped and lost in swept and dead in sent and lost in sent

    def broker_down(job_id: str, queue: str) -> None:
        raise ConnectionError("broker down")

    with session_scope() as s:  # an enqueue that fails leaves the job queued, for a later pass
        jobs_repo.claim(session=s, job_id=dead, owner="w", lease_seconds=30)
        _expire(s, dead)
    assert dead in run_once(get_settings(), broker_down)[0]
    with session_scope() as s:
        assert s.get(Job, dead).status == "queued"  # type: ignore[union-attr]


def _select(url: str) -> int:
    from sqlalchemy import text

    with get_engine(url).connect() as connection:
        return int(connection.execute(text("SELECT 1")).scalar_one())


def _nowhere() -> str:
    """A PostgreSQL URL on a port nobody listens on: connections are refused, as with a stopped server."""
    from tests.e2e.conftest import free_port

    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"


def test_patiently_waits_out_an_unreachable_database(database_url: str) -> None:
    import time

    from core.db import patiently

    urls = iter([_nowhere(), _nowhere(), database_url])  # down twice, then back
    started = time.monotonic()
    assert patiently(lambda: _select(next(urls)), patience=10, what="test") == 1
    assert time.monotonic() - started >= 0.3  # it waited 0.1 s, then 0.2 s


def test_patiently_gives_up_after_its_patience_and_never_retries_a_bad_statement(
    database_url: str,
) -> None:
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from core.db import patiently, unreachable

    nowhere = _nowhere()
    with pytest.raises(OperationalError) as down:
        patiently(lambda: _select(nowhere), patience=0.5, what="test")
    assert unreachable(down.value)
    calls: list[int] = []

    def bad() -> None:
        calls.append(1)
        with session_scope(database_url) as s:
            s.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(
        (OperationalError, ProgrammingError)
    ) as wrong:  # SQLite calls it operational
        patiently(bad, patience=5, what="test")
    if database_url.startswith("postgresql"):
        assert not unreachable(wrong.value) and calls == [1]


def test_the_reaper_holds_off_for_a_lease_after_a_database_outage(
    service_env: str, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Every lease looks lapsed once the database is back: the jobs' heartbeats go first. The
    maintenance thread's database is unreachable (a refused port), then the real one again."""
    import time

    from core.resources import Capacity
    from core.settings import get_settings
    from worker.maintenance import Maintenance

    with session_scope() as s:
        dead = _job(s).id
        jobs_repo.claim(session=s, job_id=dead, owner="w", lease_seconds=30)
        _expire(s, dead)

    def status() -> str:
        with session_scope(service_env) as s:
            return s.get(Job, dead).status  # type: ignore[union-attr]

    def use(url: str) -> None:
        monkeypatch.setenv("FITSERVE_DATABASE_URL", url)
        get_settings.cache_clear()

    monkeypatch.setenv("FITSERVE_SWEEP_INTERVAL_SECONDS", "0.05")
    monkeypatch.setenv("FITSERVE_LEASE_SECONDS", "2")
    use(_nowhere())
    maintenance = Maintenance(get_settings(), "test-worker", Capacity(("cpu",), 0, 2, 2**33), 1)
    maintenance.start()
    try:
        deadline = time.monotonic() + 10
        while maintenance.reap_after == 0.0 and time.monotonic() < deadline:
            time.sleep(0.01)
        use(service_env)  # the database is back
        back = time.monotonic()
        while status() == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        held = time.monotonic() - back
    finally:
        maintenance.stop()
        maintenance.join(timeout=5)
    assert status() == "queued"  # reaped in the end
    assert 1.5 < held < 5, held  # but only a lease (2 s) after the last failed pass


def test_the_active_job_quota_holds_under_racing_submissions(database_url: str) -> None:
    """Six submissions at once for two free slots, each in its own transaction, as the API runs them."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from fastapi import HTTPException

    from api import quota
    from core.settings import get_settings

    settings = get_settings().model_copy(update={"max_active_jobs": 2})
    with session_scope(database_url) as s:
        tenant_id = tenants_repo.get_or_create_tenant(
            session=s, name=f"racing-{len(database_url)}"
        ).id
    barrier = threading.Barrier(6)

    def submit(_: int) -> int:
        with session_scope(database_url) as s:
            quota.check_active_jobs(s, tenant_id, settings)  # the early check: every one passes it
            barrier.wait(timeout=10)
            try:
                quota.lock_tenant(s, tenant_id)
                quota.check_active_jobs(s, tenant_id, settings)
            except HTTPException as refused:
                return refused.status_code
            jobs_repo.create_job(
                session=s, job=Job(tenant_id=tenant_id, name="r", spec={}, epochs=1)
            )
            return 201

    with ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(submit, range(6)))
    assert codes == [201, 201, 429, 429, 429, 429]


def test_the_sweeper_leaves_jobs_waiting_their_turn_while_the_queue_holds_messages(
    service_env: str,
) -> None:
    """A queued job with messages ahead of it is waiting, not lost: no duplicate every grace period.
    The real embedded broker of the test's data dir holds the messages."""
    from core.queue import enqueue_training
    from core.settings import get_settings
    from tests.helpers import take_queued_job_ids
    from worker.maintenance import run_once

    with session_scope() as s:
        ahead, waiting, forgotten = _job(s).id, _job(s).id, _job(s).id
        s.execute(
            update(Job)
            .where(Job.id == waiting)
            .values(updated_at=utcnow() - timedelta(seconds=120))
        )
        s.execute(
            update(Job).where(Job.id == forgotten).values(updated_at=utcnow() - timedelta(hours=2))
        )
    enqueue_training(ahead, "any")  # a message waiting in the queue, ahead of the others
    sent: list[str] = []

    def send(job_id: str, queue: str) -> None:
        assert queue == "any"  # where these jobs wait
        sent.append(job_id)

    swept = run_once(get_settings(), send)[1]  # grace 60 s, busy grace 1 h
    assert waiting not in swept and forgotten in swept  # past even the busy grace: enqueued again
    assert take_queued_job_ids() == [
        ahead
    ]  # the queue drained: now the waiting job's message is known lost
    assert waiting in run_once(get_settings(), send)[1]
    assert sent == [forgotten, waiting]


def test_a_cancel_is_honoured_however_the_attempt_ends(database_url: str) -> None:
    """A running job flagged for cancelling: its worker dies (the reaper), its worker shuts down
    (preemption), or it waits flagged with no message: each ends `cancelled`, never stuck `queued`
    holding an active-jobs slot."""
    with session_scope(database_url) as s:
        died, stopped, stuck = (_job(s).id for _ in range(3))
        for job_id in (died, stopped):
            jobs_repo.claim(session=s, job_id=job_id, owner="w", lease_seconds=30)
            jobs_repo.request_cancel(session=s, job=s.get(Job, job_id))  # type: ignore[arg-type]
        _expire(s, died)
        # A row left by the old reaper: back to queued with the flag still set.
        s.execute(update(Job).where(Job.id == stuck).values(cancel_requested=True))
    with session_scope(database_url) as s:
        assert jobs_repo.reap_expired(session=s) == []  # nothing to enqueue again
        assert not jobs_repo.preempt(
            session=s, job_id=stopped, attempt=1, reason="worker shut down"
        )
        assert jobs_repo.claim(session=s, job_id=stuck, owner="w", lease_seconds=30) is None
    with session_scope(database_url) as s:
        for job_id in (died, stopped, stuck):
            job = s.get(Job, job_id)
            assert job is not None and job.status == "cancelled" and job.finished_at is not None, (
                job_id
            )
            assert job.reason.startswith(jobs_repo.CANCELLED_UNFINISHED), job.reason  # type: ignore[union-attr]
        assert s.get(Job, died).reason == jobs_repo.CANCELLED_UNFINISHED  # type: ignore[union-attr]


def test_the_sweeper_ends_flagged_waiting_jobs(database_url: str) -> None:
    with session_scope(database_url) as s:
        job_id = _job(s).id
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    with session_scope(database_url) as s:
        assert jobs_repo.end_flagged_waiting(session=s) >= 1
    with session_scope(database_url) as s:
        assert s.get(Job, job_id).status == "cancelled"  # type: ignore[union-attr]

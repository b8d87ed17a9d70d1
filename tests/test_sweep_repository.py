"""Sweep rows on SQLite and PostgreSQL: tenant scope, the trial slots under racing starts, the
best trial, the end, and a sweep's trial jobs."""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session

from core.db import session_scope
from core.repository import jobs as jobs_repo
from core.repository import sweeps as sweeps_repo
from core.repository import tenants as tenants_repo
from core.tables import Job, JobStatus, Sweep, SweepStatus


def _sweep(s: Session, budget: int = 4, parallelism: int = 2, tenant: str = "sweeper") -> Sweep:
    owner = tenants_repo.get_or_create_tenant(session=s, name=tenant)
    row = Sweep(tenant_id=owner.id, name="s", spec={}, trial_budget=budget, parallelism=parallelism)
    return sweeps_repo.create_sweep(session=s, sweep=row)


def _trial(s: Session, sweep: Sweep, number: int) -> Job:
    job = Job(
        tenant_id=sweep.tenant_id,
        name=f"trial {number}",
        spec={},
        sweep_id=sweep.id,
        trial_number=number,
    )
    return jobs_repo.create_job(session=s, job=job)


def test_sweeps_are_scoped_to_their_tenant(database_url: str) -> None:
    stranger = f"stranger-{secrets.token_hex(4)}"
    with session_scope(database_url) as s:
        sweep = _sweep(s)
        other = tenants_repo.get_or_create_tenant(session=s, name=stranger)
    with session_scope(database_url) as s:
        assert sweeps_repo.get_sweep(session=s, tenant_id=other.id, sweep_id=sweep.id) is None
        found = sweeps_repo.get_sweep(session=s, tenant_id=sweep.tenant_id, sweep_id=sweep.id)
        assert found is not None and (found.status, found.trials_created) == ("running", 0)
        listed, total = sweeps_repo.list_sweeps(
            session=s, tenant_id=sweep.tenant_id, status="running", limit=100, offset=0
        )
        assert sweep.id in [row.id for row in listed] and total >= 1
        empty = sweeps_repo.list_sweeps(
            session=s, tenant_id=other.id, status=None, limit=10, offset=0
        )
        assert empty == ([], 0)


def test_racing_starts_take_no_more_slots_than_the_parallelism(database_url: str) -> None:
    with session_scope(database_url) as s:
        sweep_id = _sweep(s, budget=3, parallelism=2).id
    barrier = threading.Barrier(5)

    def start(_: int) -> int | None:
        with session_scope(database_url) as s:
            barrier.wait(timeout=10)
            return sweeps_repo.start_trial(session=s, sweep_id=sweep_id)

    with ThreadPoolExecutor(5) as pool:
        started = sorted(n for n in pool.map(start, range(5)) if n is not None)
    assert started == [1, 2]  # two at once
    with session_scope(database_url) as s:
        ended = sweeps_repo.end_trial(
            session=s, sweep_id=sweep_id, job_id="job_a", value=None, direction="max"
        )
        assert not ended
        assert sweeps_repo.start_trial(session=s, sweep_id=sweep_id) == 3  # a slot came free
        sweeps_repo.end_trial(
            session=s, sweep_id=sweep_id, job_id="job_b", value=None, direction="max"
        )
        assert sweeps_repo.start_trial(session=s, sweep_id=sweep_id) is None  # budget spent


def test_the_best_trial_follows_the_direction(database_url: str) -> None:
    for direction, values, best in (("max", [0.5, 0.9, 0.7], 0.9), ("min", [0.5, 0.9, 0.2], 0.2)):
        with session_scope(database_url) as s:
            sweep_id = _sweep(s, budget=5).id
        for number, value in enumerate(values):
            with session_scope(database_url) as s:
                sweeps_repo.end_trial(
                    session=s,
                    sweep_id=sweep_id,
                    job_id=f"job_{number}",
                    value=value,
                    direction=direction,  # type: ignore[arg-type]
                )
        with session_scope(database_url) as s:
            row = s.get(Sweep, sweep_id)
            assert row is not None and row.trials_finished == 3
            assert (row.best_value, row.best_job_id) == (best, f"job_{values.index(best)}")


def test_a_sweep_ends_once_and_lists_its_trials(database_url: str) -> None:
    with session_scope(database_url) as s:
        sweep = _sweep(s)
        trials = [_trial(s, sweep, n) for n in (1, 0, 2)]
        jobs_repo.request_cancel(session=s, job=trials[0])  # queued: cancelled at once
    with session_scope(database_url) as s:
        assert [j.trial_number for j in sweeps_repo.trial_jobs(session=s, sweep_id=sweep.id)] == [
            0,
            1,
            2,
        ]
        assert sweeps_repo.count_trials(session=s, sweep_id=sweep.id) == {
            JobStatus.QUEUED: 2,
            JobStatus.CANCELLED: 1,
        }
        unfinished = sweeps_repo.unfinished_trial_ids(session=s, sweep_id=sweep.id)
        assert unfinished == [trials[1].id, trials[2].id]
        assert sweeps_repo.finish_sweep(
            session=s, sweep_id=sweep.id, status=SweepStatus.CANCELLED, reason="cancelled"
        )
        assert not sweeps_repo.finish_sweep(
            session=s, sweep_id=sweep.id, status=SweepStatus.SUCCEEDED, reason="twice"
        )
        assert sweeps_repo.start_trial(session=s, sweep_id=sweep.id) is None  # ended: no more
    with session_scope(database_url) as s:
        row = s.get(Sweep, sweep.id)
        assert row is not None and (row.status, row.reason) == ("cancelled", "cancelled")
        assert row.finished_at is not None

"""What a worker's maintenance pass (reaper + sweeper) and /metrics' jobs-by-state cost on a job
table of many finished jobs, before and after the `ix_job_status` index (migration 0003), in one
run on one fresh PostgreSQL database: the schema at 0002 first, then upgraded to head.

Every worker runs the pass every SWEEP_INTERVAL_SECONDS (2 s); a service that has run for a year
holds hundreds of thousands of terminal jobs of many tenants and a handful of live ones.

    PYTHONPATH=. .venv/bin/python bench/maintenance_scan.py [--jobs 300000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Callable

import psycopg
from alembic import command
from sqlalchemy import func, select, text

from api.observability import jobs_by_state
from core.db import alembic_config, get_engine, session_scope
from core.repository import jobs as jobs_repo
from core.tables import Job
from tests.e2e.conftest import PG_ADMIN

FILL = """
INSERT INTO tenant (id, name, created_at) SELECT 'ten_' || t, 'bench ' || t, now() FROM generate_series(0, 999) AS t;
INSERT INTO job (id, tenant_id, name, spec, status, attempt, max_attempts, preemptions, cancel_requested, epoch,
                 epochs, step, steps, parameters, estimated_memory_bytes, latest_metrics, test_metrics, created_at,
                 updated_at, lease_expires_at)
SELECT 'job_' || md5(i::text), 'ten_' || (i % 1000), 'j', '{}', s.status, 1, 3, 0, false, 1, 1, 0, 0, 1, 0, '{}', '{}',
       now() - interval '1 day', now() - interval '1 day',
       CASE WHEN s.status = 'running' THEN now() + interval '1 hour' END
FROM generate_series(1, :n) AS i,
     LATERAL (SELECT CASE WHEN i % 10000 = 0 THEN 'running' WHEN i % 10000 = 1 THEN 'queued'
                          WHEN i % 7 = 0 THEN 'failed' WHEN i % 11 = 0 THEN 'cancelled'
                          ELSE 'succeeded' END AS status) AS s;
ANALYZE job;
"""


def median_ms(action: Callable[[], object], rounds: int) -> float:
    action()  # warm the pool and the caches
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(url: str, rounds: int) -> dict[str, float]:
    def maintenance_pass() -> (
        None
    ):  # as worker.maintenance.run_once, minus the enqueue: nothing is due
        with session_scope(url) as session:
            jobs_repo.reap_expired(session=session)
        with session_scope(url) as session:
            jobs_repo.sweep_waiting(session=session, grace_seconds=3 * 86400)

    def by_state() -> None:
        with get_engine(url).connect() as connection:
            jobs_by_state(connection)

    return {
        "maintenance pass": median_ms(maintenance_pass, rounds),
        "jobs by state": median_ms(by_state, rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    name = f"fitserve_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        command.upgrade(alembic_config(url), "0002")
        with get_engine(url).begin() as connection:
            for statement in FILL.split(";"):
                if statement.strip():
                    connection.execute(text(statement), {"n": args.jobs})
        with session_scope(url) as session:
            live = session.scalar(select(func.count()).where(Job.status.in_(("running", "queued"))))
        print(
            f"{args.jobs} jobs of 1000 tenants, {live} of them running or queued; median of {args.rounds} rounds"
        )
        before = measure(url, args.rounds)
        command.upgrade(alembic_config(url), "head")
        with get_engine(url).begin() as connection:
            connection.execute(text("ANALYZE job"))
        after = measure(url, args.rounds)
        for what in before:
            print(
                f"{what:>17}: {before[what]:8.2f} ms without ix_job_status, {after[what]:8.2f} ms with it "
                f"({before[what] / after[what]:.1f}x)"
            )
    finally:
        get_engine(url).dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

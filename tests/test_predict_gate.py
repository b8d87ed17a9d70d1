"""The predict gate against a real database: a remembered (key, job) pair is forgotten when a
key is revoked, and a pair looked up before a revocation the gate has seen is never remembered."""

from __future__ import annotations

import time

from api.predict_gate import PredictGate
from core.db import hot_read, session_scope
from core.repository import tenants as tenants_repo


def _gate(url: str, check_seconds: float) -> PredictGate:
    return PredictGate(
        lambda: hot_read(lambda c: tenants_repo.revocation_mark(connection=c), url), check_seconds
    )


def _key(url: str, tenant: str = "gate") -> str:
    with session_scope(url) as s:
        return tenants_repo.create_key(
            session=s, tenant=tenants_repo.get_or_create_tenant(session=s, name=tenant)
        )


def _revoke(url: str, key: str) -> None:
    with session_scope(url) as s:
        assert tenants_repo.revoke_key(session=s, prefix=key[:10]) == 1


def test_a_revocation_forgets_every_remembered_pair(database_url: str) -> None:
    gate, revoked = _gate(database_url, 0.05), _key(database_url)
    assert not gate.admits("h1", "job") and not gate.admits("h2", "job")
    gate.remember("h1", "job", gate.generation)
    gate.remember("h2", "job", gate.generation)
    assert (
        gate.admits("h1", "job") and gate.admits("h2", "job") and not gate.admits("h1", "other-job")
    )
    _revoke(database_url, revoked)
    time.sleep(0.06)
    assert not gate.admits("h1", "job") and not gate.admits("h2", "job")


def test_a_lookup_from_before_a_seen_revocation_is_not_remembered(database_url: str) -> None:
    gate, key = _gate(database_url, 0.01), _key(database_url)
    gate.admits("h", "job")  # the gate has read the watermark
    generation = gate.generation  # the route reads this, then queries the database ...
    _revoke(database_url, key)
    time.sleep(0.02)
    assert not gate.admits("other", "job")  # ... meanwhile another request sees the revocation
    gate.remember("h", "job", generation)  # ... and the first lookup's answer is stale
    assert not gate.admits("h", "job")
    gate.remember("h", "job", gate.generation)
    assert gate.admits("h", "job")


def test_zero_check_seconds_checks_every_request(database_url: str) -> None:
    gate = _gate(database_url, 0)
    gate.remember("h", "job", gate.generation)
    assert not gate.admits("h", "job")


def test_the_watermark_reads_once_per_interval(database_url: str) -> None:
    reads: list[float] = []

    def mark() -> tuple[int]:
        reads.append(time.monotonic())
        return (0,)

    gate = PredictGate(mark, check_seconds=10)
    gate.remember("h", "job", gate.generation)  # nothing is remembered before the first read
    assert not gate.admits("h", "job")
    gate.remember("h", "job", gate.generation)
    assert all(gate.admits("h", "job") for _ in range(1000)) and len(reads) == 1

"""Many clients at once on plain routes: a request never holds a pooled database connection
while it waits for a thread, so the pool (15 connections on SQLite, 30 on PostgreSQL) and the
40 worker threads cannot lock each other up."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.e2e.conftest import Service, wait_for
from tests.e2e.http import example


def test_300_concurrent_reads_all_answer(service: Service) -> None:
    """Before SessionDep closed at the route's end, 300 reads at once parked 15 sessions on their
    connections while their responses waited for a thread, every thread waiting for a connection:
    nothing moved until the pool's 30 s timeout, then 500s."""
    raw = example("digits_mlp")
    raw["fit"]["epochs"] = 1
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=raw).json()["id"]
        wait_for(client, job_id, ("succeeded",))

    async def read(client: httpx.AsyncClient) -> tuple[int, float]:
        t = time.perf_counter()
        answer = await client.get(f"/v1/jobs/{job_id}")
        return answer.status_code, time.perf_counter() - t

    async def crowd() -> list[tuple[int, float]]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(
            base_url=service.url,
            headers={"Authorization": f"Bearer {service.keys['a']}"},
            timeout=60,
            limits=limits,
        ) as client:
            return await asyncio.gather(*(read(client) for _ in range(300)))

    started = time.perf_counter()
    answers = asyncio.run(crowd())
    took = time.perf_counter() - started
    print(
        f"\n  {service.name}: 300 concurrent GET /v1/jobs/{{id}} in {took:.1f} s, slowest "
        f"{max(t for _, t in answers):.1f} s"
    )
    assert [code for code, _ in answers] == [200] * 300
    assert took < 20, "the requests waited on each other"

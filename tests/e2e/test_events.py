"""The live event stream, read as a client reads it, through a real API and worker on both
backends: every point exactly once and in order, exact resumption with Last-Event-ID, many
streams at once, and the per-tenant limit."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Service, wait_for
from tests.e2e.http import example
from tests.e2e.sse import Event, entries, parse, stream


def sharing_steps(epochs: int = 6) -> dict[str, Any]:
    """The digits MLP with a step loss every 5 steps: each epoch's 7 epoch-end rows share step 45k
    with a step loss, the case the old stream lost."""
    raw = example("digits_mlp")
    raw["fit"] |= {"epochs": epochs, "log_every_steps": 5}
    return raw


def submit(client: httpx.Client, raw: dict[str, Any]) -> str:
    created = client.post("/v1/jobs", json=raw)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def all_points(client: httpx.Client, job_id: str, page: int = 7) -> list[dict[str, Any]]:
    """Every metric point of the job, paged by the cursor (`after`, `next`, `has_more`)."""
    points, after = [], 0
    while True:
        answer = client.get(
            f"/v1/jobs/{job_id}/metrics", params={"after": after, "limit": page}
        ).json()
        points += answer["data"]
        assert answer["next"] == (answer["data"][-1]["seq"] if answer["data"] else after)
        after = answer["next"]
        if not answer["has_more"]:
            return points


def test_the_stream_carries_every_point_once_in_order_then_ends(service: Service) -> None:
    with service.client() as client:
        job_id = submit(client, sharing_steps())
        received = list(stream(client, job_id))
        job = client.get(f"/v1/jobs/{job_id}").json()
        points = all_points(client, job_id)
    assert job["status"] == "succeeded", job["reason"]
    got = entries(received)
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(set(seqs)), "in sequence order, none twice"
    metrics = [{k: v for k, v in e.items() if k != "kind"} for e in got if e["kind"] == "metric"]
    assert metrics == points, "the stream's points are the database's, exactly"
    steps = [(p["step"], p["name"]) for p in points]
    assert len(steps) == len(set(steps)) and len(points) == 6 * (
        7 + 9
    )  # 7 epoch metrics, 45/5 step losses
    shared = {p["step"] for p in points if p["name"] == "val_loss"} & {
        p["step"] for p in points if p["name"] == "step_loss"
    }
    assert len(shared) == 6, "every epoch's rows share their step with a step loss"
    assert [e["status"] for e in got if e["kind"] == "status"] == ["queued", "running", "succeeded"]
    # It opens with the job as it stands and ends with the final state, then the final status.
    assert (
        received[0].event == "job"
        and received[-1].event == "status"
        and received[-2].event == "job"
    )
    assert received[-2].json()["status"] == "succeeded" and received[-2].json()["seq"] == job["seq"]
    assert all(e.id == str(e.json()["seq"]) for e in received if e.event in ("metric", "status"))
    with service.client() as client:  # past the end: 204 tells EventSource to stop reconnecting
        done = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(job["seq"])})
        assert done.status_code == 204 and done.content == b""


def test_a_reconnect_with_last_event_id_resumes_exactly_after_it(service: Service) -> None:
    with service.client() as client:
        job_id = submit(client, sharing_steps(epochs=60))  # still training at the cut
        first: list[Event] = []
        for event in stream(client, job_id):  # drop the connection mid-training
            first.append(event)
            if event.event == "metric" and event.json()["epoch"] >= 3:
                break
        cut = int(first[-1].id)  # type: ignore[arg-type]
        running = client.get(f"/v1/jobs/{job_id}").json()
        assert running["status"] == "running", "the cut came mid-training"
        second = list(stream(client, job_id, last_event_id=cut))
        by_query = list(stream(client, job_id, after=cut))  # for clients that cannot set headers
        points = all_points(client, job_id, page=50)
    resumed = entries(second)
    assert [e["seq"] for e in resumed] == [p["seq"] for p in points if p["seq"] > cut] + [
        resumed[-1]["seq"]
    ]
    assert resumed[-1] == {**resumed[-1], "kind": "status", "status": "succeeded"}
    assert entries(by_query) == resumed
    stitched = [e["seq"] for e in entries(first) + resumed if e["kind"] == "metric"]
    assert stitched == [p["seq"] for p in points], "no point lost or repeated across the reconnect"


def _open_streams(
    service: Service,
    watches: list[tuple[str, str]],
    ready: threading.Event,
    stop: threading.Event,
    counts: list[int],
) -> None:
    """Hold one stream per (key, job) open, reading, until `stop`: all in one event loop."""

    async def hold(client: httpx.AsyncClient, key: str, job_id: str) -> None:
        async with client.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {key}"}
        ) as answer:
            assert answer.status_code == 200
            counts.append(1)
            async for _ in answer.aiter_lines():
                if stop.is_set():
                    return

    async def main() -> None:
        limits = httpx.Limits(max_connections=len(watches) + 10)
        async with httpx.AsyncClient(base_url=service.url, timeout=120, limits=limits) as client:
            tasks = [asyncio.create_task(hold(client, key, job_id)) for key, job_id in watches]
            while len(counts) < len(watches) and not any(t.done() for t in tasks):
                await asyncio.sleep(0.05)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


@pytest.fixture
def long_job(service: Service) -> Iterator[str]:
    """A job that trains for minutes unless cancelled, with a step loss every step."""
    raw = example("digits_mlp")
    raw["fit"] |= {"epochs": 1000, "log_every_steps": 1}
    with service.client() as client:
        job_id = submit(client, raw)
        wait_for(client, job_id, ("running",), timeout=60)
        yield job_id
        client.post(f"/v1/jobs/{job_id}/cancel")
        wait_for(client, job_id, ("cancelled", "succeeded", "failed"), timeout=60)


def test_200_streams_leave_another_tenants_reads_fast(service: Service, long_job: str) -> None:
    """50 streams on the training job, and 50 on each of three other tenants' jobs, queued behind
    it (each tenant under its limit of 64); a fifth tenant reads its jobs meanwhile."""
    watches = [(service.keys["a"], long_job)] * 50
    waiting = []
    for n in range(3):
        key = service.fitserve("keys", "create", "--tenant", f"watcher-{service.name}-{n}")
        with httpx.Client(
            base_url=service.url, headers={"Authorization": f"Bearer {key}"}
        ) as client:
            waiting.append((key, submit(client, sharing_steps(epochs=1))))
        watches += [waiting[-1]] * 50
    ready, stop, counts = threading.Event(), threading.Event(), []  # type: ignore[var-annotated]
    holder = threading.Thread(target=_open_streams, args=(service, watches, ready, stop, counts))
    holder.start()
    try:
        assert ready.wait(120) and len(counts) == 200, f"{len(counts)} streams open"
        with service.client("b") as other:
            other.get("/v1/jobs")  # a first connection
            latencies = []
            for _ in range(40):
                t = time.perf_counter()
                assert other.get("/v1/jobs").status_code == 200
                latencies.append(time.perf_counter() - t)
        print(
            f"\n  {service.name}: with 200 streams open, another tenant's GET /v1/jobs: median "
            f"{statistics.median(latencies) * 1e3:.1f} ms, max {max(latencies) * 1e3:.1f} ms"
        )
        assert max(latencies) < 1.0, latencies  # 27 s with 16 streams before the hub
    finally:
        stop.set()
        holder.join(60)
        for key, job_id in waiting:
            with httpx.Client(
                base_url=service.url, headers={"Authorization": f"Bearer {key}"}
            ) as client:
                client.post(f"/v1/jobs/{job_id}/cancel")


def test_a_tenants_65th_stream_is_refused_with_429(service: Service, long_job: str) -> None:
    ready, stop, counts = threading.Event(), threading.Event(), []  # type: ignore[var-annotated]
    key = service.keys["a"]
    holder = threading.Thread(
        target=_open_streams, args=(service, [(key, long_job)] * 64, ready, stop, counts)
    )
    holder.start()
    try:
        assert ready.wait(120) and len(counts) == 64
        with service.client() as client:
            refused = client.get(f"/v1/jobs/{long_job}/events")
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            assert "64 open event streams" in refused.json()["detail"]
        with service.client("b") as other:  # another tenant has slots of its own (and no such job)
            assert other.get(f"/v1/jobs/{long_job}/events").status_code == 404
    finally:
        stop.set()
        holder.join(60)
    with service.client() as client:  # the slots come back when the streams close
        deadline = time.monotonic() + 10
        while True:
            with client.stream("GET", f"/v1/jobs/{long_job}/events") as answer:
                if answer.status_code == 200:
                    assert next(parse(answer.iter_lines())).event == "job"
                    break
            assert time.monotonic() < deadline, "the slots were not given back"
            time.sleep(0.2)


def test_a_quiet_stream_sends_keepalives_and_ends_with_its_job(
    service: Service, long_job: str
) -> None:
    """A job queued behind another has no news: the stream says `retry:`, the job, its status,
    then keepalive comments (every second in these services), until the job is cancelled."""
    with service.client() as client:
        job_id = submit(client, sharing_steps(epochs=1))
        huge = str(
            2**64
        )  # past the database's BIGINT: was a 500 on /metrics (schemathesis, stateful)
        for bad in (
            {"headers": {"Last-Event-ID": "abc"}},
            {"params": {"after": -1}},
            {"headers": {"Last-Event-ID": huge}},
            {"params": {"after": huge}},
        ):
            assert client.get(f"/v1/jobs/{job_id}/events", **bad).status_code == 422  # type: ignore[arg-type]
        for params in ({"after": huge}, {"since_step": huge}):
            answer = client.get(f"/v1/jobs/{job_id}/metrics", params=params)
            assert answer.status_code == 422, answer.text
            assert answer.json()["detail"][0]["loc"] == ["query", next(iter(params))]
        seen: list[Event] = []
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as answer:
            lines = answer.iter_lines()
            assert next(lines) == "retry: 2000"
            for event in parse(lines):
                seen.append(event)
                if sum(e.event == "" for e in seen) == 2:
                    client.post(f"/v1/jobs/{job_id}/cancel")
                if event.event == "status" and event.json()["status"] == "cancelled":
                    break
    kinds = [e.event for e in seen]
    assert kinds[:2] == ["job", "status"] and seen[1].json()["status"] == "queued"
    assert kinds[2:4] == ["", ""] and seen[2].comments == ["keepalive"]
    assert kinds[-2:] == ["job", "status"] and seen[-2].json()["status"] == "cancelled"

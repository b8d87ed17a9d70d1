"""The routes the dashboard added, tried as a shared service: many clients at once, against
GET /healthz and GET /v1/jobs/{id} measured in the same run as the baseline.

Starts `fitserve up` on the embedded default in a temporary folder, trains one digits job, then
sends ROUNDS waves of CLIENTS concurrent requests to each route and prints requests/s and p50/p99
(and each as a ratio of GET /v1/jobs/{id}); then an oversized `name` filter (refused before it
costs a query) and clients that disconnect mid-answer (the service keeps answering).

    PYTHONPATH=. .venv/bin/python bench/dashboard_routes.py [--clients 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wave(client: httpx.AsyncClient, path: str, clients: int) -> tuple[list[float], int]:
    async def one() -> tuple[float, int]:
        began = time.perf_counter()
        try:
            status = (await client.get(path)).status_code
        except httpx.TransportError:  # counted: a connection the server dropped
            status = 0
        return time.perf_counter() - began, status

    results = await asyncio.gather(*(one() for _ in range(clients)))
    return [r[0] for r in results], sum(1 for r in results if r[1] != 200)


async def measure(url: str, key: str, paths: dict[str, str], clients: int, rounds: int) -> None:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as c:
        figures: dict[str, tuple[float, float, float, int]] = {}
        for label, path in paths.items():
            await wave(c, path, clients)  # warm: connections open, caches filled
            times: list[float] = []
            errors, began = 0, time.perf_counter()
            for _ in range(rounds):
                got, bad = await wave(c, path, clients)
                times += got
                errors += bad
            rate = len(times) / (time.perf_counter() - began)
            q = statistics.quantiles(times, n=100)
            figures[label] = (rate, q[49] * 1e3, q[98] * 1e3, errors)
        base = figures["GET /v1/jobs/{id} (baseline)"]
        print(f"{clients} concurrent clients, {rounds} waves each")
        for label, (rate, p50, p99, errors) in figures.items():
            print(
                f"  {label:<34} {rate:7.0f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
                f"non-200 {errors}  (p99 x{p99 / base[2]:.2f} of the baseline)"
            )
        for size in (101, 60_000):  # httpx itself refuses a query past 64 KiB
            try:
                answer = await c.get("/v1/jobs", params={"name": "x" * size})
                said = f"{answer.status_code} ({len(answer.content)} bytes)"
            except httpx.TransportError as exc:
                said = f"connection closed ({type(exc).__name__})"
            print(f"  a name filter of {size:,} characters: {said}")


def disconnects(url: str, key: str, path: str, count: int) -> int:
    """Clients that send a request and close at once; answers the status of a request after."""
    host, port = url.removeprefix("http://").split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    for _ in range(count):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(request)
    return httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {key}"}).status_code


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    data, port = Path(tempfile.mkdtemp()), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FITSERVE_DATA_DIR": str(data), "FITSERVE_RATE_LIMIT_PER_SECOND": "0"}
    log = (data / "up.log").open("wb")
    up = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "cli.main", "up", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        key = (data / "api_key").read_text().strip()
        auth = {"Authorization": f"Bearer {key}"}
        spec = json.loads((ROOT / "examples" / "digits_mlp.json").read_text())
        job = httpx.post(f"{url}/v1/jobs", json=spec, headers=auth, timeout=60).json()["id"]
        while httpx.get(f"{url}/v1/jobs/{job}", headers=auth).json()["status"] != "succeeded":
            time.sleep(0.5)
        paths = {
            "GET /healthz": "/healthz",
            "GET /v1/jobs/{id} (baseline)": f"/v1/jobs/{job}",
            "GET /v1/jobs/{id}/summary": f"/v1/jobs/{job}/summary",
            "GET /v1/jobs?name=digits": "/v1/jobs?name=digits",
            "GET / (dashboard page)": "/",
            "GET /ui/js/main.js": "/ui/js/main.js",
        }
        asyncio.run(measure(url, key, paths, args.clients, args.rounds))
        status = disconnects(url, key, f"/v1/jobs/{job}/summary", 200)
        print(f"  200 clients gone before their answer; the next request: {status}")
    finally:
        up.terminate()
        up.wait(timeout=30)


if __name__ == "__main__":
    main()

"""A real service per backend: `fitserve up` on the embedded default, and `fitserve api` +
`fitserve worker` on PostgreSQL + Redis (127.0.0.1). Real processes, real sockets."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
UPLOAD_LIMIT = 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    name: str
    url: str
    env: dict[str, str]
    data_dir: Path
    keys: dict[str, str] = field(default_factory=dict)
    tenants: dict[str, str] = field(default_factory=dict)  # the tenant name behind each of `keys`
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def client(self, tenant: str = "a") -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.keys[tenant]}"}, timeout=60
        )

    def fitserve(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "fitserve"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout.strip()

    def start(self, *args: str) -> None:
        log = self.data_dir / f"{args[0]}-{len(self.logs)}.log"
        handle = log.open("wb")
        self.logs.append(log)
        self.processes.append(
            subprocess.Popen(
                [str(BIN / "fitserve"), *args],
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.processes:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args} exited {p.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready in {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            for log in self.logs
            if log.exists()
        )

    def stop(self) -> None:
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _base_env(data_dir: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("FITSERVE_") and k != "LOG_FORMAT"
    }
    env.update(
        FITSERVE_DATA_DIR=str(data_dir),
        FITSERVE_UPLOAD_MAX_BYTES=str(UPLOAD_LIMIT),
        FITSERVE_HEARTBEAT_SECONDS="0.2",
        FITSERVE_STREAM_KEEPALIVE_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def lone_api(
    tmp: Path, name: str, settings: dict[str, str], request: pytest.FixtureRequest | None = None
) -> Iterator[Service]:
    """`fitserve api` alone (no worker) on the embedded default with these settings, and a key
    `a`; its logs are shown when a test of the session failed (with `request`)."""
    port = free_port()
    service = Service(name, f"http://127.0.0.1:{port}", _base_env(tmp) | settings, tmp)
    service.fitserve("db", "upgrade")
    service.keys["a"] = service.fitserve("keys", "create", "--tenant", name)
    service.start("api", "--port", str(port))
    try:
        service.wait_ready()
        yield service
    finally:
        if request is not None and getattr(request.session, "testsfailed", 0):
            print(f"\n{service.name} service logs:\n{service.tail()}")
        service.stop()


def _embedded(tmp: Path) -> Iterator[Service]:
    port = free_port()
    service = Service("embedded", f"http://127.0.0.1:{port}", _base_env(tmp), tmp)
    service.start("up", "--port", str(port))
    try:
        service.wait_ready()
        service.keys["a"], service.tenants["a"] = (tmp / "api_key").read_text().strip(), "local"
        service.keys["b"] = service.fitserve("keys", "create", "--tenant", "other")
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def shared_redis_queue(label: str) -> Iterator[tuple[str, str]]:
    """(broker URL, a queue of this module's own) on the machine's shared Redis; its kombu
    bindings, which Redis keeps, are cleaned afterwards."""
    import redis

    url, queue = "redis://127.0.0.1:6379/0", f"fitserve-{label}-{secrets.token_hex(4)}"
    try:
        yield url, queue
    finally:
        broker = redis.Redis.from_url(url)
        broker.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        broker.zrem("_kombu.binding_deadlines", queue)


def _postgres(tmp: Path) -> Iterator[Service]:
    import psycopg

    name = f"fitserve_e2e_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    port = free_port()
    with shared_redis_queue("e2e") as (broker_url, queue):
        env = _base_env(tmp) | {
            "FITSERVE_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
            "FITSERVE_BROKER_URL": broker_url,
            "FITSERVE_QUEUE": queue,
        }
        service = Service("postgres", f"http://127.0.0.1:{port}", env, tmp)
        try:
            service.fitserve("db", "upgrade")
            service.keys["a"], service.tenants["a"] = (
                service.fitserve("keys", "create", "--tenant", "alpha"),
                "alpha",
            )
            service.keys["b"] = service.fitserve("keys", "create", "--tenant", "beta")
            service.start("worker")
            service.start("api", "--port", str(port))
            service.wait_ready()
            yield service
        finally:
            service.stop()
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["embedded", "postgres"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp(request.param)
    factory = _embedded if request.param == "embedded" else _postgres
    gen = factory(tmp)
    svc = next(gen)
    yield svc
    failed = getattr(request.session, "testsfailed", 0)
    if failed:
        print(f"\n{svc.name} service logs:\n{svc.tail()}")
    with contextlib.suppress(StopIteration):
        next(gen)


def wait_for(
    client: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float = 180
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")

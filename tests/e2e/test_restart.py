"""`fitserve up` stopped as a whole (SIGTERM to every process in its group, as a terminal's Ctrl-C,
systemd or a process manager send it) while a job trains, then started again on the same data
directory: the job was preempted once, and resumes as its 2nd attempt, on the device kind and at
the precision its first attempt began with."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import BIN, _base_env, free_port, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_mlp.json"


@contextlib.contextmanager
def up(data_dir: Path, name: str) -> Iterator[httpx.Client]:
    port = free_port()
    with (data_dir / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "fitserve"), "up", "--port", str(port)],
            env=_base_env(data_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None, (data_dir / f"{name}.log").read_text()
            time.sleep(0.3)
        key = (data_dir / "api_key").read_text().strip()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ) as client:
            yield client
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group at once
        try:
            proc.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.timeout(240)
def test_a_job_preempted_by_stopping_the_service_resumes_as_its_second_attempt(
    tmp_path: Path,
) -> None:
    spec: dict[str, Any] = json.loads(EXAMPLE.read_text())
    spec["fit"] |= {"epochs": 120}
    with up(tmp_path, "first") as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        deadline = time.monotonic() + 90
        while (job := client.get(f"/v1/jobs/{job_id}").json())["progress"]["epoch"] < 3:
            assert time.monotonic() < deadline and job["status"] in ("queued", "running"), job
            time.sleep(0.1)
    with up(tmp_path, "second") as client:
        done = wait_for(client, job_id, ("succeeded", "failed", "cancelled"), timeout=150)
        events = client.get(
            f"/v1/jobs/{job_id}/metrics", params={"name": "val_loss", "limit": 500}
        ).json()["data"]
    # Before the fix the stopping worker was handed the job it had just preempted, and claimed it
    # again: attempts 2-4 were spent in half a second, each preempted at once.
    assert (done["status"], done["attempt"]) == ("succeeded", 2), done
    assert (done["device"], done["precision"]) == ("cpu", "fp32")
    assert [p["epoch"] for p in events] == list(
        range(1, 121)
    )  # every epoch once, across the two attempts

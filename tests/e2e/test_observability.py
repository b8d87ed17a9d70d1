"""Operations over a real service: /metrics after a job and a predict, JSON log lines that name
the job, and no API key anywhere in the logs."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import httpx

from tests.e2e.conftest import BIN, Service, wait_for
from tests.helpers import EXAMPLES

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def _metrics(service: Service) -> dict[tuple[str, str], float]:
    answer = httpx.get(f"{service.url}/metrics", timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, line
            samples[(match[1], match[2] or "")] = float(match[3])
    return samples


def _json_lines(service: Service) -> list[dict[str, Any]]:
    records = []
    for log in service.logs:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
    return records


def test_metrics_logs_and_no_key_in_them(service: Service) -> None:
    spec = json.loads((EXAMPLES / "digits_mlp.json").read_text())
    spec["fit"]["epochs"] = 1
    with service.client() as client:
        created = client.post("/v1/jobs", json=spec)
        assert created.status_code == 201, created.text
        job = wait_for(client, created.json()["id"], ("succeeded", "failed", "cancelled"))
        assert job["status"] == "succeeded", job["reason"]
        answer = client.post(f"/v1/models/{job['id']}/predict", json={"instances": [[0.0] * 64]})
        assert answer.status_code == 200, answer.text

    samples = _metrics(service)
    assert samples[("fitserve_jobs", 'state="succeeded"')] >= 1
    assert samples[("fitserve_predict_seconds_count", "")] >= 1
    assert samples[("fitserve_source_up", 'source="broker"')] == 1
    assert (
        "fitserve_queue_depth",
        f'queue="{service.env.get("FITSERVE_QUEUE", "fitserve")}"',
    ) in samples

    # the worker writes its outcome line after the row turns terminal
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ours = [r for r in _json_lines(service) if r.get("job_id") == job["id"]]
        if any("succeeded" in r["message"] for r in ours):
            break
        time.sleep(0.2)
    assert ours and all(r["attempt"] == 1 for r in ours if "attempt" in r)
    assert any(r["message"].startswith(f"job {job['id']} attempt 1: succeeded") for r in ours), ours
    assert {"time", "level", "logger", "message"} <= set(ours[0])
    access = [r for r in _json_lines(service) if r["logger"] == "uvicorn.access"]
    assert any("/v1/models/" in r["message"] for r in access)

    # a key printed by `keys create` goes to stdout only, and no key is in any log
    done = subprocess.run(
        [str(BIN / "fitserve"), "keys", "create", "--tenant", "observability"],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    new_key = done.stdout.strip()
    assert new_key and new_key not in done.stderr
    text = "\n".join(log.read_text(errors="replace") for log in service.logs)
    for key in [*service.keys.values(), new_key]:
        assert key not in text

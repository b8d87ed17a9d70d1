"""Uploads under concurrency, both backends: stored in chunks and parsed away from the event loop,
so twenty at once all land while the service keeps answering."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from tests.e2e.conftest import UPLOAD_LIMIT, Service


def table(seed: int) -> bytes:
    """A CSV just under the test services' upload limit: 12 features and a class."""
    rng = np.random.default_rng(seed)
    lines = [",".join([f"f{i}" for i in range(12)] + ["label"])]
    while sum(len(x) + 1 for x in lines) < UPLOAD_LIMIT - 200:
        row = rng.normal(size=12).round(4)
        lines.append(",".join(f"{v:.4f}" for v in row) + f",{int(row[0] > 0)}")
    return ("\n".join(lines[:-1]) + "\n").encode()


def test_twenty_uploads_at_once_all_land_while_healthz_answers(service: Service) -> None:
    files = [table(i) for i in range(20)]
    stop, healthz = threading.Event(), []  # type: ignore[var-annotated]

    def probe() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                t = time.perf_counter()
                assert client.get(f"{service.url}/healthz").status_code == 200
                healthz.append(time.perf_counter() - t)
                time.sleep(0.01)

    def upload(i: int) -> httpx.Response:
        with service.client() as client:
            return client.post("/v1/datasets", files={"file": (f"t{i}.csv", files[i])}, data={"name": f"t{i}"})

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(upload, range(20)))
    finally:
        stop.set()
        prober.join()
    assert [a.status_code for a in answers] == [201] * 20, [a.text for a in answers if a.status_code != 201]
    print(f"\n  {service.name}: 20 uploads of {len(files[0]):,} bytes at once; /healthz meanwhile ({len(healthz)} "
          f"requests) median {np.median(healthz) * 1e3:.1f} ms, max {max(healthz) * 1e3:.1f} ms")  # fmt: skip
    assert max(healthz) < 1.0, "the event loop was blocked"
    for i, answer in enumerate(answers):
        row = answer.json()
        assert (row["name"], row["size_bytes"], row["samples"]) == (f"t{i}", len(files[i]), files[i].count(b"\n") - 1)
        stored = service.data_dir / "artifacts" / "datasets" / f"{row['id']}.csv"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(files[i]).hexdigest()

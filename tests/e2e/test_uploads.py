"""Uploads under concurrency, both backends: stored in chunks and parsed away from the event loop,
so twenty at once all land while the service keeps answering."""

from __future__ import annotations

import hashlib
import io
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from tests.e2e.conftest import UPLOAD_LIMIT, Service, wait_for


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
            return client.post(
                "/v1/datasets", files={"file": (f"t{i}.csv", files[i])}, data={"name": f"t{i}"}
            )

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(upload, range(20)))
    finally:
        stop.set()
        prober.join()
    assert [a.status_code for a in answers] == [201] * 20, [
        a.text for a in answers if a.status_code != 201
    ]
    print(
        f"\n  {service.name}: 20 uploads of {len(files[0]):,} bytes at once; /healthz meanwhile ({len(healthz)} "
        f"requests) median {np.median(healthz) * 1e3:.1f} ms, max {max(healthz) * 1e3:.1f} ms"
    )
    assert max(healthz) < 1.0, "the event loop was blocked"
    for i, answer in enumerate(answers):
        row = answer.json()
        assert (row["name"], row["size_bytes"], row["samples"]) == (
            f"t{i}",
            len(files[i]),
            files[i].count(b"\n") - 1,
        )
        stored = service.data_dir / "artifacts" / "datasets" / f"{row['id']}.csv"
        assert (
            hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(files[i]).hexdigest()
        )


def test_a_dataset_is_deleted_unless_a_waiting_or_running_job_needs_it(service: Service) -> None:
    """The storage quota could only ever fill: DELETE frees it, refused (409) while a job will still
    read the data; a finished job's model keeps predicting."""
    body = table(99)
    with service.client() as client:
        ds = client.post("/v1/datasets", files={"file": ("d.csv", body)}).json()
        spec = {
            "name": "uses-it",
            "dataset": {"id": ds["id"]},
            "model": {"preset": {"name": "mlp", "hidden_units": [8]}},
            "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
            "fit": {"epochs": 1},
        }
        done = client.post("/v1/jobs", json=spec).json()["id"]
        wait_for(client, done, ("succeeded",))
        busy = client.post("/v1/jobs", json=spec | {"fit": {"epochs": 1000}}).json()["id"]
        wait_for(client, busy, ("running",))
        refused = client.delete(f"/v1/datasets/{ds['id']}")
        assert refused.status_code == 409 and busy in refused.json()["detail"], refused.text
        client.post(f"/v1/jobs/{busy}/cancel")
        wait_for(client, busy, ("cancelled",))
        stored = service.data_dir / "artifacts" / "datasets" / f"{ds['id']}.csv"
        assert stored.exists()
        deleted = client.delete(f"/v1/datasets/{ds['id']}")
        assert deleted.status_code == 204 and deleted.content == b""
        assert not stored.exists() and client.get(f"/v1/datasets/{ds['id']}").status_code == 404
        assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 404
        row = [float(v) for v in body.decode().splitlines()[1].split(",")[:-1]]
        assert (
            client.post(f"/v1/models/{done}/predict", json={"instances": [row]}).status_code == 200
        )
        again = client.post("/v1/jobs", json=spec)
        assert again.status_code == 422 and again.json()["detail"][0]["loc"] == [
            "body",
            "dataset",
            "id",
        ]


def _npz(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def zip_bomb(mib: int) -> bytes:
    """An NPZ whose x.npy is `mib` MiB of zeros, LZMA-compressed to some 45 KB; streamed, never in memory."""
    header = io.BytesIO()
    rows = mib * 2**20 // (64 * 4)
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (rows, 64)}
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_LZMA) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            for _ in range(mib // 8):
                member.write(bytes(8 * 2**20))
        archive.writestr("y.npy", _npy(np.zeros(rows, dtype=np.int64)[:2]))
    return buf.getvalue()


def liar() -> bytes:
    """A few hundred bytes whose x.npy header claims a 1 TiB array."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (2**38, 1)}
    )
    return _npz({"x.npy": header.getvalue() + bytes(16), "y.npy": _npy(np.array([0, 1]))})


def _api_rss(service: Service) -> int:
    api = next(p for p in service.processes if p.args[1] in ("up", "api"))  # type: ignore[index]
    status = Path(f"/proc/{api.pid}/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
        * 1024
    )


def test_npz_bombs_are_refused_from_their_metadata(service: Service) -> None:
    """A small upload whose x.npy inflates to 304 MiB was stored (the API's memory +1 GB for 512 MiB), and one
    whose header claims 1 TiB was a 500 (MemoryError): both are 413s naming the member, nothing stored."""
    bomb, lie = zip_bomb(304), liar()
    assert len(bomb) < UPLOAD_LIMIT and len(lie) < 1000
    before = _api_rss(service)
    with service.client() as client:
        count = client.get("/v1/datasets").json()["count"]
        cases = [
            (bomb, f"'x.npy' inflates to {304 * 2**20 + 128:,} bytes"),
            (lie, "'x.npy' claims a float32 array of shape (274877906944, 1)"),
        ]
        for body, says in cases:
            answer = client.post("/v1/datasets", files={"file": ("bomb.npz", body)})
            assert answer.status_code == 413, answer.text
            assert says in answer.json()["detail"], answer.text
        assert client.get("/v1/datasets").json()["count"] == count
    grown = _api_rss(service) - before
    print(
        f"\n  {service.name}: the API's RSS grew {grown / 2**20:.0f} MiB through the two NPZ bombs"
    )
    assert grown < 300 * 2**20
    assert not list((service.data_dir / "artifacts" / "datasets").glob(".*.tmp"))

"""Serving: requests/s and p50/p99 latency of predict as apps call it, at 1, 8, 32 and 64
concurrent clients, for the digits MLP and a ShallowVGGNet-sized CNN (examples/), in one run:

  bare          a bare FastAPI endpoint running the same checkpoint (no auth, no database, no
                batching): the baseline, measured in the same run
  v1 unbatched  POST /v1/models/{name}/predict, JSON, the model registered with max_batch_size 1
  v1 batched    the same route, the model registered with the service's batching defaults
  v2 binary     POST /v2/models/{name}/infer, the binary tensor extension, batched

Each request carries one instance (a raw digits image), as an app sends them. Starts
`fitserve up` (embedded) or `fitserve api` + a worker on PostgreSQL and Redis, trains both models
through the service, registers each twice (unbatched and batched), then loads each case from an
asyncio client in this process for SECONDS per cell. The client shares the 2 cores with the
service, equally for every case; ratios within one run are what to read.

    PYTHONPATH=. .venv/bin/python bench/serving.py [--quick] [--backend embedded|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from api.schemas import PredictRequest
from bench.service_latency import service, wait_done
from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
# The MLP on digits (8x8 pixels); the CNN is the shallow_vggnet preset (conv 32-32, pool, conv
# 64-64, pool, dense 512) on CIFAR-sized 3x32x32 images: a synthetic upload, as nothing here may
# be downloaded. Speed, not accuracy, is measured.
MODELS = {"mlp": "digits_mlp.json", "cnn": "digits_shallow_vggnet.json"}
IMAGE = (3, 32, 32)
CONCURRENCY = (1, 8, 32, 64)
Request = tuple[str, bytes, dict[str, str]]  # url, body, headers


async def load(requests: list[Request], clients: int, seconds: float) -> tuple[float, list[float]]:
    """`clients` concurrent callers, each on its own keep-alive connection, each sending its next
    request as soon as the last answered. HTTP/1.1 written and read by hand on asyncio streams:
    an HTTP client library at 32-64 connections cost more CPU than the service (httpx's answered
    the bare endpoint slower at 32 clients than at 8), and this client shares the 2 cores."""
    latencies: list[float] = []
    raw = [_encode(url, body, headers) for url, body, headers in requests]
    host, port = urlsplit(requests[0][0]).hostname, urlsplit(requests[0][0]).port

    async def caller(i: int, until: float, record: bool) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        n = i
        try:
            while time.perf_counter() < until:
                began = time.perf_counter()
                writer.write(raw[n % len(raw)])
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                answer = await reader.readexactly(length)
                if not status.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"{requests[0][0]}: {status!r} {answer[:300]!r}")
                if record:
                    latencies.append(time.perf_counter() - began)
                n += clients
        finally:
            writer.close()

    warm = time.perf_counter() + min(1.0, seconds / 3)  # connections, the model, the batcher
    await asyncio.gather(*(caller(i, warm, False) for i in range(clients)))
    began = time.perf_counter()
    await asyncio.gather(*(caller(i, began + seconds, True) for i in range(clients)))
    return len(latencies) / (time.perf_counter() - began), latencies


def _encode(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def v2_binary(url: str, auth: dict[str, str], meta: dict[str, Any], row: np.ndarray) -> Request:
    """An infer request in the binary tensor extension, as tritonclient builds it."""
    tensor = row.astype(np.float32).reshape(1, *[d for d in meta["inputs"][0]["shape"][1:]])
    raw = tensor.tobytes()
    header = {
        "inputs": [
            {
                "name": meta["inputs"][0]["name"],
                "shape": list(tensor.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [
            {"name": o["name"], "parameters": {"binary_data": True}} for o in meta["outputs"]
        ],
    }
    head = json.dumps(header).encode()
    headers = auth | {
        "Inference-Header-Content-Length": str(len(head)),
        "content-type": "application/octet-stream",
    }
    return url, head + raw, headers


def cases(
    svc_url: str,
    bare_url: str,
    auth: dict[str, str],
    model: str,
    rows: np.ndarray,
    meta: dict[str, Any],
) -> dict[str, list[Request]]:
    js = {"content-type": "application/json"}
    bodies = [json.dumps({"instances": [r.tolist()]}).encode() for r in rows]
    return {
        "bare": [(f"{bare_url}/{model}", b, js) for b in bodies],
        "v1 unbatched": [
            (f"{svc_url}/v1/models/{model}-unbatched/predict", b, auth | js) for b in bodies
        ],
        "v1 batched": [
            (f"{svc_url}/v1/models/{model}-batched/predict", b, auth | js) for b in bodies
        ],
        "v2 binary": [
            v2_binary(f"{svc_url}/v2/models/{model}-batched/infer", auth, meta, r) for r in rows
        ],
    }


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) * 1e3


def serve(paths: list[str], port: int) -> None:
    """The bare baseline: each model's Predictor behind one route, nothing else."""
    import torch
    import uvicorn
    from fastapi import FastAPI

    from models.inference import Predictor

    torch.set_num_threads(1)  # as the service's API does
    app = FastAPI()
    for spec in paths:
        name, path = spec.split("=", 1)
        app.post(f"/{name}")(_route(Predictor.load(Path(path))))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _route(predictor: Any) -> Callable[[PredictRequest], dict[str, Any]]:
    def predict(body: PredictRequest) -> dict[str, Any]:
        return predictor.predict(body.instances)  # type: ignore[no-any-return]

    return predict


def train_and_register(client: httpx.Client, images: np.ndarray) -> dict[str, str]:
    """Both models trained through the service (1 epoch), each registered twice: `{m}-unbatched`
    (max_batch_size 1) and `{m}-batched` (the service's batching defaults)."""
    buf = io.BytesIO()
    np.savez(buf, x=images, y=np.arange(len(images)) % 10)
    upload = client.post("/v1/datasets", files={"file": ("cifar-sized.npz", buf.getvalue())})
    jobs = {}
    for model, example in MODELS.items():
        spec = json.loads((ROOT / "examples" / example).read_text())
        spec["fit"]["epochs"] = 1
        if model == "cnn":
            spec["dataset"] = {"id": upload.raise_for_status().json()["id"]}
        jobs[model] = client.post("/v1/jobs", json=spec).raise_for_status().json()["id"]
    for model, job_id in jobs.items():
        wait_done(client, job_id)
        for suffix, batching in (("unbatched", {"max_batch_size": 1}), ("batched", None)):
            body = {"name": f"{model}-{suffix}", "job_id": job_id, "batching": batching}
            client.post("/v1/models", json=body).raise_for_status()
    return jobs


def report(model: str, table: dict[tuple[str, int], tuple[float, list[float]]]) -> None:
    print(f"\n  {model}: req/s, p50 / p99 ms, one instance per request")
    print("    " + f"{'':14s}" + "".join(f"{c:>26d} clients"[-30:] for c in CONCURRENCY))
    for case in ("bare", "v1 unbatched", "v1 batched", "v2 binary"):
        cells = []
        for c in CONCURRENCY:
            rate, lat = table[(case, c)]
            cells.append(f"{rate:8.0f} {pct(lat, 50):7.2f} / {pct(lat, 99):7.2f}")
        print(f"    {case:14s}" + "".join(f"{cell:>34s}" for cell in cells))


def targets(model: str, table: dict[tuple[str, int], tuple[float, list[float]]]) -> None:
    def cell(case: str, c: int) -> tuple[float, float, float]:
        rate, lat = table[(case, c)]
        return rate, pct(lat, 50), pct(lat, 99)

    b_rate, _, b_p99 = cell("v2 binary", 32)
    u_rate, _, u_p99 = cell("v1 unbatched", 32)
    bare_rate = cell("bare", 32)[0]
    _, one_b, _ = cell("v1 batched", 1)
    _, one_u, _ = cell("v1 unbatched", 1)
    print(
        f"    {model} at 32 clients: v2 binary batched / v1 JSON unbatched = {b_rate / u_rate:.2f}x "
        f"req/s (target >= 2x), p99 {b_p99 / u_p99:.2f}x (target <= 2x); v2 binary / bare "
        f"{b_rate / bare_rate:.2f}x req/s"
    )
    print(
        f"    {model} at 1 client: batching adds {one_b - one_u:+.2f} ms to p50 "
        f"({one_u:.2f} -> {one_b:.2f} ms; target < 1 ms)"
    )


def histogram(svc_url: str) -> str:
    """The service's batch-size histogram, as /metrics exposes it."""
    text = httpx.get(f"{svc_url}/metrics", timeout=30).text
    lines = [ln for ln in text.splitlines() if ln.startswith("fitserve_batch_size_bucket")]
    return "\n".join(f"      {ln}" for ln in lines[-12:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1.5 s per cell instead of 5")
    p.add_argument("--backend", choices=["embedded", "postgres"], default="embedded")
    p.add_argument("--seconds", type=float, help="per cell")
    p.add_argument("--serve", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        return serve(args.serve, args.port)
    from sklearn.datasets import load_digits

    seconds = args.seconds or (1.5 if args.quick else 5.0)
    rows = {
        "mlp": load_digits().data[:256].astype(np.float32),
        "cnn": np.random.default_rng(0).uniform(0, 255, (256, *IMAGE)).astype(np.float32),
    }
    print(f"{os.cpu_count()} cores; {args.backend}; {seconds:g} s per cell after a warm-up")
    with tempfile.TemporaryDirectory() as tmp, service(args.backend, Path(tmp)) as (svc, _):
        auth = {"Authorization": f"Bearer {svc.keys['a']}"}
        with svc.client() as client:
            jobs = train_and_register(client, rows["cnn"])
            metas = {
                m: client.get(f"/v2/models/{m}-batched").raise_for_status().json() for m in MODELS
            }
        port = free_port()
        files = [
            f"{m}={Path(tmp) / 'artifacts' / 'jobs' / j / 'model.json'}" for m, j in jobs.items()
        ]
        bare = subprocess.Popen(  # noqa: S603
            [sys.executable, __file__, "--serve", *files, "--port", str(port)], env=svc.env
        )
        try:
            bare_url = f"http://127.0.0.1:{port}"
            _wait(
                lambda: httpx.post(f"{bare_url}/mlp", json={"instances": [rows["mlp"][0].tolist()]})
            )
            for model in MODELS:
                table = {}
                for case, requests in cases(
                    svc.url, bare_url, auth, model, rows[model], metas[model]
                ).items():
                    for c in CONCURRENCY:
                        table[(case, c)] = asyncio.run(load(requests, c, seconds))
                report(model, table)
                targets(model, table)
        finally:
            bare.terminate()
            bare.wait(20)
        print("\n  batch sizes served (fitserve_batch_size, all models):")
        print(histogram(svc.url))


def _wait(call: Callable[[], httpx.Response]) -> None:
    for _ in range(300):
        try:
            if call().status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the bare endpoint did not start")


if __name__ == "__main__":
    main()

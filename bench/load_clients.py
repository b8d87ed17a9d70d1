"""The client processes of bench/load.py: SSE watchers and pollers, each an asyncio loop.

Watchers speak raw HTTP/1.1 on asyncio sockets and pick the events out of the bytes with one
regular expression: a thousand streams parsed by a full HTTP client would cost these 2 cores
more than the server they measure. What each stream received goes to a JSON file:

    python bench/load_clients.py watch URL KEY JOB N DEADLINE OUT.json
    python bench/load_clients.py poll URL KEY JOB N DEADLINE OUT.json
    python bench/load_clients.py upload URL KEY MIB N DEADLINE OUT.json

Uploads go from a process of their own too: twenty client threads building multipart bodies in the
bench's process would hold its GIL and pass their delay off as the server's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

ENTRY = re.compile(rb"(?:^|\n)id: (\d+)\nevent: (metric|status)\n")
# The clients would be on other machines: here they share 2 cores with the server they measure, so
# they yield to it (and to the probes) rather than pass their own work off as the server's delay.
NICE = 10
END = re.compile(rb'event: status\ndata: \{"seq":\d+,"status":"(?:succeeded|failed|cancelled)"')


async def watch_one(
    host: str, port: int, path: str, key: str, deadline: float, opened: list[int]
) -> dict[str, Any]:
    got: dict[str, Any] = {"metric": [], "status": [], "ended": False, "error": None}
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        got["error"] = f"connect: {exc}"
        return got
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), max(deadline - time.time(), 1))
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            got["error"] = f"HTTP {status}"
            return got
        opened.append(1)
        buf = b""
        while not got["ended"]:
            chunk = await asyncio.wait_for(reader.read(1 << 16), max(deadline - time.time(), 0.01))
            if not chunk:
                got["error"] = "closed before the final status"
                break
            buf += chunk
            cut = buf.rfind(
                b"\n\n"
            )  # frames end in a blank line; keep a partial one for the next read
            if cut < 0:
                continue
            block, buf = buf[: cut + 2], buf[cut + 2 :]
            for seq, kind in ENTRY.findall(block):
                got[kind.decode()].append(int(seq))
            got["ended"] = END.search(block) is not None
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        got["error"] = f"{type(exc).__name__} {exc}"
    finally:
        writer.close()
    return got


async def watch(url: str, key: str, job: str, n: int, deadline: float) -> dict[str, Any]:
    parts = urlsplit(url)
    opened: list[int] = []
    t0 = time.perf_counter()
    tasks = [
        asyncio.create_task(
            watch_one(
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                f"/v1/jobs/{job}/events",
                key,
                deadline,
                opened,
            )
        )
        for _ in range(n)
    ]
    reported = False
    while not all(t.done() for t in tasks):
        if not reported and len(opened) + sum(t.done() for t in tasks) >= n:
            print(f"opened {len(opened)} {time.perf_counter() - t0:.2f}", flush=True)
            reported = True
        await asyncio.sleep(0.05)
    if not reported:
        print(f"opened {len(opened)} {time.perf_counter() - t0:.2f}", flush=True)
    return {"streams": [t.result() for t in tasks]}


async def poll(url: str, key: str, job: str, n: int, deadline: float) -> dict[str, Any]:
    """`n` clients reading the job every half second, as dashboards that do not stream would."""
    codes: dict[str, int] = {}

    async def one(client: httpx.AsyncClient) -> None:
        while time.time() < deadline:
            try:
                code = str((await client.get(f"/v1/jobs/{job}")).status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            codes[code] = codes.get(code, 0) + 1
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30, limits=limits
    ) as client:
        print("opened", n, flush=True)
        await asyncio.gather(*(one(client) for _ in range(n)))
    return {"codes": codes}


def csv_table(mib: float, seed: int) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(max(10, int(mib * 2**20 / (21 * 9))), 20)).round(5)
    header = ",".join([f"f{i}" for i in range(20)] + ["label"])
    rows = "\n".join(",".join(f"{v:.5f}" for v in r) + f",{int(r[0] > 0)}" for r in x)
    return f"{header}\n{rows}\n".encode()


def upload(url: str, key: str, mib: str, n: int, deadline: float) -> dict[str, Any]:
    """`n` uploads of `mib` MiB at once, one thread each; their statuses and the time they took."""
    from concurrent.futures import ThreadPoolExecutor

    files = [csv_table(float(mib), i) for i in range(n)]
    print("opened", n, flush=True)  # ready: the bench starts its probe phase and says go
    sys.stdin.readline()
    started = time.perf_counter()

    def one(i: int) -> int | str:
        try:
            return httpx.post(
                f"{url}/v1/datasets",
                headers={"Authorization": f"Bearer {key}"},
                files={"file": (f"u{i}.csv", files[i])},
                timeout=max(deadline - time.time(), 1),
            ).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(one, range(n)))
    return {"codes": codes, "seconds": time.perf_counter() - started, "bytes": len(files[0])}


def main() -> None:
    mode, url, key, job, n, deadline, out = sys.argv[1:8]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, int(n) + 100)), hard))
    os.nice(NICE)
    if mode == "upload":
        result = upload(url, key, job, int(n), float(deadline))  # `job` is the size in MiB here
    else:
        run = watch if mode == "watch" else poll
        result = asyncio.run(run(url, key, job, int(n), float(deadline)))
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

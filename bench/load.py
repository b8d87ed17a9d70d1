"""The service under a crowd: a job training for about a minute while N SSE watchers follow it,
M pollers read it, a predict loop runs, and a burst of concurrent uploads comes in.

Per backend (`fitserve up` on the embedded default; `fitserve api --workers 2` + a worker on
PostgreSQL + Redis), all on loopback, bounded in time:
1. a small model is trained for predict; the long job starts; M pollers start;
2. no watchers: p50/p99 of /healthz, GET /v1/jobs/{id} and predict (probes in this process);
3. N watchers open (over several client processes, bench/load_clients.py): the same probes;
4. with the watchers still open, U uploads at once while /healthz is probed;
5. the job is cancelled, the streams end with its final status, and what each stream received
   is checked against the rows in the database: missing, duplicated, out of order;
and the API processes' peak RSS (sampled every 0.2 s; the upload parse processes apart).

    PYTHONPATH=. .venv/bin/python bench/load.py [--backend both|embedded|postgres] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.load_clients import NICE
from bench.service_latency import ROOT, pct, service, wait_done
from tests.e2e.conftest import Service

CLIENTS = Path(__file__).with_name("load_clients.py")


class Probe(threading.Thread):
    """One request after another (20 ms apart) on a keep-alive connection, latencies by phase."""

    def __init__(
        self, name: str, call: Callable[[httpx.Client], httpx.Response], headers: dict[str, str]
    ) -> None:
        super().__init__(daemon=True)
        self.name, self.call, self.headers = name, call, headers
        self.phase, self.stop = "", threading.Event()
        self.times: dict[str, list[float]] = {}
        self.failures: dict[str, int] = {}

    def run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            while not self.stop.is_set():
                phase, t = self.phase, time.perf_counter()
                try:
                    ok = self.call(client).is_success
                except httpx.HTTPError:
                    ok = False
                if phase:
                    self.times.setdefault(phase, []).append(time.perf_counter() - t)
                    self.failures[phase] = self.failures.get(phase, 0) + (not ok)
                time.sleep(0.02)


class RssSampler(threading.Thread):
    """Peak RSS of the API processes (and, apart, of their upload parse processes)."""

    def __init__(self, svc: Service, workers: int) -> None:
        super().__init__(daemon=True)
        root = svc.processes[-1].pid
        # With workers, uvicorn's supervisor spawns them (and multiprocessing's resource tracker).
        self.api = (
            [root]
            if workers == 1
            else [
                p
                for p in children(root)
                if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()
            ]
        )
        self.peak: dict[int, int] = {}
        self.parse_peak: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in self.api:
                self.peak[pid] = max(self.peak.get(pid, 0), rss(pid))
                for child in children(pid):
                    if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                        self.parse_peak[child] = max(self.parse_peak.get(child, 0), rss(child))
            time.sleep(0.2)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def rss(pid: int) -> int:
    try:
        line = next(
            x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS")
        )
    except (OSError, StopIteration):
        return 0
    return int(line.split()[1]) * 1024


def clients(
    mode: str,
    svc: Service,
    job: str,
    total: int,
    procs: int,
    deadline: float,
    tmp: Path,
    stdin: bool = False,
) -> list[tuple[subprocess.Popen[str], Path]]:
    started = []
    for i in range(procs):
        n = total // procs + (i < total % procs)
        out = tmp / f"{mode}-{i}.json"
        cmd = [
            sys.executable,
            str(CLIENTS),
            mode,
            svc.url,
            svc.keys["a"],
            job,
            str(n),
            str(deadline),
            str(out),
        ]
        pipe = subprocess.PIPE if stdin else None
        started.append((subprocess.Popen(cmd, stdin=pipe, stdout=subprocess.PIPE, text=True), out))  # noqa: S603
    return started


def opened(started: list[tuple[subprocess.Popen[str], Path]]) -> tuple[int, float]:
    """Wait for each client process's `opened N SECONDS` line."""
    lines = [(p.stdout.readline() if p.stdout else "").split() for p, _ in started]
    return sum(int(x[1]) for x in lines if x), max(
        (float(x[2]) for x in lines if len(x) > 2), default=0.0
    )


def finished(
    started: list[tuple[subprocess.Popen[str], Path]], timeout: float
) -> list[dict[str, Any]]:
    results = []
    for proc, out in started:
        proc.wait(timeout)
        results.append(json.loads(out.read_text()))
    return results


def database_rows(db_url: str, job: str) -> tuple[list[int], list[int]]:
    """(metric seqs, status seqs) of the job, read from the database itself."""
    queries = (
        "SELECT seq FROM metric WHERE job_id = %s ORDER BY seq",
        "SELECT seq FROM job_event WHERE job_id = %s ORDER BY seq",
    )
    if db_url.startswith("postgresql"):
        with psycopg.connect(db_url.replace("+psycopg", "")) as conn:
            return tuple([r[0] for r in conn.execute(q, (job,))] for q in queries)  # type: ignore[return-value]
    with sqlite3.connect(db_url.split("///", 1)[1]) as conn:
        return tuple([r[0] for r in conn.execute(q.replace("%s", "?"), (job,))] for q in queries)  # type: ignore[return-value]


def line(label: str, base: list[float], load: list[float]) -> str:
    b99, l99 = pct(base, 99), pct(load, 99)
    return (
        f"  {label:22s} p50 {pct(base, 50):6.1f} p99 {b99:6.1f} ms | p50 {pct(load, 50):6.1f} p99 {l99:6.1f} ms "
        f"| p99 x{l99 / b99:4.2f} ({len(base)}/{len(load)} requests)"
    )


@dataclass
class Observed:
    """What one backend's run saw, for the report."""

    backend: str
    workers: int
    probes: list[Probe]
    sampler: RssSampler
    job: dict[str, Any] = field(default_factory=dict)
    job_seconds: float = 0.0
    polled: dict[str, int] = field(default_factory=dict)
    opened: tuple[int, float] = (0, 0.0)
    streams: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[int | str] = field(default_factory=list)
    upload_seconds: float = 0.0
    upload_bytes: int = 0
    rows: tuple[list[int], list[int]] = ([], [])


def run_backend(backend: str, args: argparse.Namespace) -> Observed:
    workers = 1 if backend == "embedded" else args.api_workers
    settings = {
        "FITSERVE_MAX_STREAMS_PER_TENANT": str(args.watchers + 100)
    }  # one tenant watches here
    with (
        tempfile.TemporaryDirectory() as tmp,
        service(backend, Path(tmp), settings, workers) as (svc, db_url),
    ):
        auth = {"Authorization": f"Bearer {svc.keys['a']}"}
        client = httpx.Client(base_url=svc.url, headers=auth, timeout=60)
        spec = json.loads((ROOT / "examples/digits_mlp.json").read_text())
        model = client.post("/v1/jobs", json=spec | {"fit": spec["fit"] | {"epochs": 2}}).json()[
            "id"
        ]
        wait_done(client, model)
        # Batches of 4 with a step loss every 60 steps: an epoch of about 16 rows every second or so.
        long = spec | {
            "fit": spec["fit"] | {"epochs": 10_000, "batch_size": 4, "log_every_steps": 60}
        }
        job = client.post("/v1/jobs", json=long).json()["id"]
        while client.get(f"/v1/jobs/{job}").json()["status"] != "running":
            time.sleep(0.1)
        started, end = time.time(), time.time() + args.seconds + 120
        body = {"instances": [[float(v) for v in range(64)]]}
        seen = Observed(
            backend,
            workers,
            [
                Probe("/healthz", lambda c: c.get(f"{svc.url}/healthz"), {}),
                Probe("GET /v1/jobs/{id}", lambda c: c.get(f"{svc.url}/v1/jobs/{job}"), auth),
                Probe(
                    "predict",
                    lambda c: c.post(f"{svc.url}/v1/models/{model}/predict", json=body),
                    auth,
                ),
            ],
            RssSampler(svc, workers),
        )
        seen.sampler.start()
        pollers = clients("poll", svc, job, args.pollers, 1, started + args.seconds, Path(tmp))
        opened(pollers)
        for probe in seen.probes:
            probe.start()
        measure(seen.probes, "base", args.seconds / 4)
        watchers = clients("watch", svc, job, args.watchers, args.watcher_procs, end, Path(tmp))
        seen.opened = opened(watchers)
        measure(seen.probes, "watched", args.seconds / 4)
        uploads = clients(
            "upload", svc, str(args.upload_mib), args.uploads, 1, end, Path(tmp), stdin=True
        )
        opened(uploads)  # the files are made: now send them, and probe /healthz meanwhile
        seen.probes[0].phase = "uploads"
        uploads[0][0].stdin.write("go\n")  # type: ignore[union-attr]
        uploads[0][0].stdin.flush()  # type: ignore[union-attr]
        done = finished(uploads, max(end - time.time(), 1))[0]
        seen.probes[0].phase = ""
        seen.uploads, seen.upload_seconds, seen.upload_bytes = (
            done["codes"],
            done["seconds"],
            done["bytes"],
        )
        time.sleep(max(0.0, started + args.seconds - time.time()))
        client.post(f"/v1/jobs/{job}/cancel")
        seen.job = wait_done(client, job, timeout=120)
        seen.job_seconds = time.time() - started
        seen.streams = [
            s for r in finished(watchers, max(end - time.time(), 1) + 30) for s in r["streams"]
        ]
        seen.polled = finished(pollers, 60)[0]["codes"]
        for probe in seen.probes:
            probe.stop.set()
        seen.sampler.stop.set()
        seen.rows = database_rows(db_url, job)
    return seen


def measure(probes: list[Probe], phase: str, seconds: float) -> None:
    for probe in probes:
        probe.phase = phase
    time.sleep(seconds)
    for probe in probes:
        probe.phase = ""


def check_streams(streams: list[dict[str, Any]], rows: tuple[list[int], list[int]]) -> str:
    """Each stream's events against the database's rows: every one once, in order."""
    missing = duplicated = disorder = ended = 0
    want = set(rows[0])
    for s in streams:
        got = s["metric"]
        missing += len(want - set(got))
        duplicated += len(got) - len(set(got))
        disorder += got != sorted(got)
        ended += s["ended"] and s["status"] == rows[1]
    errors = [s["error"] for s in streams if s["error"]]
    per = [len(s["metric"]) for s in streams] or [0]
    return (
        f"metric events per stream {min(per)}..{max(per)} against {len(want)} rows: missing {missing}, "
        f"duplicated {duplicated}, out of order {disorder}; {ended} ended with every status change and the final "
        f"status; errors {len(errors)} {errors[:3]}"
    )


def report(seen: Observed, args: argparse.Namespace) -> None:
    name = (
        "fitserve up (SQLite, embedded broker)"
        if seen.backend == "embedded"
        else "PostgreSQL + Redis"
    )
    print(
        f"\n== {seen.backend}: {name}, {seen.workers} API process(es); load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"  the watched job: {seen.job['status']} after {seen.job_seconds:.0f} s, epoch "
        f"{seen.job['progress']['epoch']}; {len(seen.rows[0])} metric rows and {len(seen.rows[1])} status changes "
        f"in the database; {args.pollers} pollers meanwhile, answers {seen.polled}"
    )
    watched = f"{seen.opened[0]} watchers"
    print(f"  {'':22s} {'no watchers':33s} | {watched:33s} |")
    for p in seen.probes:
        failed = f"  failures {p.failures}" if any(p.failures.values()) else ""
        print(line(p.name, p.times.get("base", [0.0]), p.times.get("watched", [0.0])) + failed)
    print(
        f"  watchers: {seen.opened[0]} of {args.watchers} streams open in {seen.opened[1]:.1f} s over "
        f"{args.watcher_procs} client processes; {check_streams(seen.streams, seen.rows)}"
    )
    up = seen.probes[0].times.get("uploads", [0.0])
    codes = {c: seen.uploads.count(c) for c in sorted(set(seen.uploads), key=str)}
    print(
        f"  uploads: {args.uploads} x {seen.upload_bytes / 2**20:.1f} MiB CSV at once (another process), with the "
        f"watchers open: answers "
        f"{codes} in {seen.upload_seconds:.1f} s; /healthz meanwhile p50 {pct(up, 50):.1f} p99 {pct(up, 99):.1f} "
        f"ms ({len(up)} requests)"
    )
    peaks = ", ".join(f"{b / 2**20:.0f} MiB" for b in seen.sampler.peak.values())
    parse = (
        ", ".join(f"{b / 2**20:.0f} MiB" for b in seen.sampler.parse_peak.values())
        or "none started"
    )
    print(f"  API peak RSS: {peaks} (target < 1024 MiB each); upload parse processes: {parse}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["both", "embedded", "postgres"], default="both")
    p.add_argument("--watchers", type=int, default=1000)
    p.add_argument("--watcher-procs", type=int, default=4)
    p.add_argument("--pollers", type=int, default=50)
    p.add_argument("--uploads", type=int, default=20)
    p.add_argument("--upload-mib", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=60.0, help="how long the watched job trains")
    p.add_argument("--api-workers", type=int, default=2, help="API processes on PostgreSQL")
    p.add_argument("--quick", action="store_true", help="200 watchers, 10 pollers, 5 uploads, 30 s")
    args = p.parse_args()
    if args.quick:
        args.watchers, args.pollers, args.uploads, args.seconds = 200, 10, 5, 30.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the API and the clients inherit it
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.watchers + 1024)), hard)
    )
    print(
        f"{os.cpu_count()} cores; {args.watchers} watchers over {args.watcher_procs} processes, {args.pollers} "
        f"pollers, {args.uploads} uploads of {args.upload_mib:g} MiB, the job watched {args.seconds:.0f} s; the "
        f"watcher, poller and uploader processes run at nice {NICE} (they stand in for clients on other machines)"
    )
    for backend in ["embedded", "postgres"] if args.backend == "both" else [args.backend]:
        report(run_backend(backend, args), args)


if __name__ == "__main__":
    main()

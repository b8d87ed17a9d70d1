"""The service commands: up, api, worker, db, keys. Each reads the same settings."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.settings import Settings, get_settings

LOCAL_TENANT = "local"
# A stopping API waits this long for its requests, then closes what is left: event streams never
# end on their own, and their clients reconnect (with Last-Event-ID) to another process.
GRACE_SECONDS = 5
WORKER_NICENESS = 5  # `fitserve up`'s worker, beside its API on one machine
WORKER_STOP_SECONDS = 20  # a preempting job stops within a step; past this the worker is killed


def ensure_local_key(settings: Settings) -> str | None:
    """On first start: a tenant `local` and a key, printed and kept in <data_dir>/api_key (0600)."""
    from core.db import session_scope
    from core.repository import tenants as tenants_repo

    key_file = settings.data_dir / "api_key"
    if key_file.exists():
        return None
    with session_scope() as session:
        tenant = tenants_repo.get_or_create_tenant(session=session, name=LOCAL_TENANT)
        key = tenants_repo.create_key(session=session, tenant=tenant)
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n")
    return key


def configure_service_logging(
    settings: Settings, level: str | None = None, celery: bool = False
) -> dict[str, Any]:
    """The service commands log to stderr: plain lines on a terminal, one JSON object per line
    otherwise (FITSERVE_LOG_FORMAT or LOG_FORMAT=json|text decides instead); returns the dictConfig
    for uvicorn to apply in its own processes."""
    from core.logging import celery_keeps_logging, configure_logging, logging_config

    configure_logging(settings.log_style, level or settings.log_level)
    if celery:
        celery_keeps_logging()
    return logging_config(settings.log_style, level or settings.log_level)


def cmd_db(args: argparse.Namespace) -> int:
    from core.db import upgrade

    upgrade()
    print(f"database at head: {get_settings().database_url.split('@')[-1]}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from core.db import session_scope
    from core.repository import tenants as tenants_repo

    with session_scope() as session:
        if args.action == "create":
            tenant = tenants_repo.get_or_create_tenant(session=session, name=args.tenant)
            print(tenants_repo.create_key(session=session, tenant=tenant))
            return 0
        revoked = tenants_repo.revoke_key(session=session, prefix=args.prefix)
    print(f"revoked {revoked} key(s)", file=sys.stderr)
    return 0 if revoked else 1


def _device_kinds(value: str) -> str:
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    if not kinds or any(k not in ("cpu", "cuda") for k in kinds):
        raise argparse.ArgumentTypeError(f"{value!r}: give cpu, cuda or cpu,cuda")
    return ",".join(dict.fromkeys(kinds))


def cmd_worker(args: argparse.Namespace) -> int:
    if args.queues is not None:  # read by every process of this worker, its pool's included
        os.environ["FITSERVE_WORKER_QUEUES"] = args.queues
        get_settings.cache_clear()
    from core.queue import declare_queues
    from worker.capacity import CapacityError, consumed_queues, this_worker
    from worker.celery_app import app

    settings = get_settings()
    try:
        capacity = this_worker(settings)
    except CapacityError as exc:
        print(f"fitserve worker: {exc}", file=sys.stderr)
        return 2
    configure_service_logging(settings, args.loglevel, celery=True)
    queues = consumed_queues(settings, capacity)
    declare_queues(queues)
    argv = [
        "worker",
        f"--loglevel={args.loglevel}",
        f"--concurrency={args.concurrency}",
        "--pool=prefork",
        "-Q",
        ",".join(queues),
        "-O",
        "fair",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if settings.log_style == "json":
        argv.insert(0, "--quiet")  # no banner: the log is JSON lines only
    app.worker_main(argv)
    # Celery has stopped its pool and handed back what it held: skip the interpreter's teardown
    # (seconds with torch loaded), which a stopping `fitserve up` would wait on.
    logging.shutdown()
    os._exit(0)


def server_options(settings: Settings) -> dict[str, Any]:
    """What both commands give uvicorn.run: the protocol that times headers and caps connections
    (api/protocol.py), with room for that many open files."""
    from api.protocol import HTTP_PROTOCOL, make_room_for_connections

    make_room_for_connections(settings.max_connections)
    return {"http": HTTP_PROTOCOL, "timeout_graceful_shutdown": GRACE_SECONDS}


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    log_config = configure_service_logging(settings)
    uvicorn.run(
        "api.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=log_config,
        **server_options(settings),
    )
    return 0


def _die_with_parent() -> None:
    """In the worker child: killed if `fitserve up` dies without stopping it (even by SIGKILL). A
    worker still starting up does not act on SIGTERM, and a job it held is redelivered anyway."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def cmd_up(args: argparse.Namespace) -> int:
    import uvicorn

    from core.db import upgrade

    # uvicorn re-raises SIGTERM after its graceful shutdown; make it an exit that runs `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = get_settings()
    log_config = configure_service_logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade()
    key = ensure_local_key(settings)
    if key and sys.stdout.isatty():  # never into a log file: only a terminal sees the key
        print(
            f"created the local API key (also in {settings.data_dir / 'api_key'}):\n  {key}",
            flush=True,
        )
    else:
        print(
            f"API key: see {settings.data_dir / 'api_key'} (or: fitserve keys create --tenant NAME)",
            flush=True,
        )
    # One machine for both: training takes whatever CPU the API leaves, so requests and live streams
    # stay quick while a job trains (an idle API leaves training all of it).
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker"],
        env=os.environ.copy(),
        preexec_fn=lambda: os.nice(WORKER_NICENESS),
    )
    try:
        uvicorn.run(
            "api.main:app",
            host=args.host,
            port=args.port,
            log_config=log_config,
            **server_options(settings),
        )
    finally:
        _stop_worker(worker)
        # Everything is written and stopped: skip the interpreter's teardown (torch's and the
        # upload pool's exit handlers took seconds more, the person at Ctrl-C waiting on them).
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """After the API: the worker's running job stops at its next step and is preempted (SIGTERM
    asks for that; a Ctrl-C in the terminal has already sent it SIGINT, the same request)."""
    began = time.monotonic()
    say(
        "stopping: the API is down; the worker preempts a running job, which resumes on the next start"
    )
    worker.terminate()
    try:
        worker.wait(timeout=WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        say(f"the worker did not stop within {WORKER_STOP_SECONDS} s and was killed")
    say(f"stopped in {time.monotonic() - began:.1f} s")


def say(line: str) -> None:
    """A line for the person at the terminal, beside the logs (stderr), in either log format."""
    print(f"fitserve: {line}", file=sys.stderr, flush=True)


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    up = sub.add_parser(
        "up", help="run the API and one worker on the embedded default (no servers needed)"
    )
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--data-dir", type=Path, help="default $FITSERVE_DATA_DIR or ./.fitserve")
    up.set_defaults(run=cmd_up)
    api = sub.add_parser(
        "api", help="run the HTTP API against FITSERVE_DATABASE_URL / FITSERVE_BROKER_URL"
    )
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)
    api.set_defaults(run=cmd_api)
    worker = sub.add_parser("worker", help="run a Celery worker (one job per process)")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument(
        "--queues",
        default=None,
        type=_device_kinds,
        help="device kinds it serves: cpu, cuda or cpu,cuda (default: cuda where torch sees a "
        "GPU, else cpu); it also serves jobs that take any device",
    )
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(run=cmd_worker)
    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade"])
    db.set_defaults(run=cmd_db)
    keys = sub.add_parser("keys", help="API keys: create (printed once), revoke by prefix")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create")
    create.add_argument("--tenant", required=True)
    revoke = keys_sub.add_parser("revoke")
    revoke.add_argument("prefix", help="the key's first 10 characters")
    keys.set_defaults(run=cmd_keys)

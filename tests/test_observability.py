"""Structured logs (job id and attempt bound inside a job) and the /metrics text."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.logging import bind_job, configure_logging, logging_config, make_handler
from core.settings import get_settings

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def _logger(log_format: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger(f"fitserve.test.{log_format}")
    logger.handlers[:] = [make_handler(log_format, stream)]  # type: ignore[arg-type]
    logger.propagate, logger.level = False, logging.INFO
    return logger, stream


def _in_job(job_id: str, attempt: int | None, emit) -> None:  # type: ignore[no-untyped-def]
    def run() -> None:
        bind_job(job_id, attempt)
        emit()

    contextvars.copy_context().run(run)


def test_json_lines_carry_the_job_only_inside_it() -> None:
    logger, stream = _logger("json")
    logger.info("before %s", "any job")
    _in_job("job_1", 2, lambda: logger.warning("training %d", 3))
    logger.info("after")
    try:
        raise ValueError("boom")
    except ValueError:
        _in_job("job_2", None, lambda: logger.exception("failed"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "before any job",
        "training 3",
        "after",
        "failed",
    ]
    assert set(lines[0]) == {"time", "level", "logger", "message"}
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "fitserve.test.json"
    assert lines[0]["time"].endswith("+00:00")
    assert (
        lines[1]["job_id"] == "job_1"
        and lines[1]["attempt"] == 2
        and lines[1]["level"] == "WARNING"
    )
    assert "job_id" not in lines[2] and "attempt" not in lines[2]
    assert lines[3]["job_id"] == "job_2" and "attempt" not in lines[3]
    assert "ValueError: boom" in lines[3]["exc_info"]


def test_text_lines_name_the_job() -> None:
    logger, stream = _logger("text")
    _in_job("job_9", 1, lambda: logger.info("hello"))
    logger.info("bye")
    first, second = stream.getvalue().splitlines()
    assert "INFO fitserve.test.text [job_9#1]: hello" in first
    assert "fitserve.test.text: bye" in second and "job_9" not in second


def test_configure_logging_routes_uvicorn_and_celery_through_root(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("json", "info")
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/metrics", "1.1", 200
        )
        logging.getLogger("celery.app.trace").info("Task done")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [line["logger"] for line in lines] == ["uvicorn.access", "celery.app.trace"]
        assert lines[0]["message"] == '127.0.0.1:1 - "GET /metrics HTTP/1.1" 200'
        assert logging_config("text", "DEBUG")["root"]["level"] == "DEBUG"
    finally:
        root.handlers[:], root.level = saved
        logging.captureWarnings(False)


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    samples: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        samples[(match[1], match[2] or "")] = float(match[3])
    return samples


@pytest.fixture
def api_env(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("FITSERVE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("FITSERVE_DATA_DIR", str(tmp_path))
    for name in ("FITSERVE_BROKER_URL", "FITSERVE_METRICS_TOKEN", "FITSERVE_METRICS_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    from core.queue import celery_app

    celery_app.cache_clear()
    yield tmp_path
    get_settings.cache_clear()
    celery_app.cache_clear()


def _seed_jobs() -> None:
    from core.db import session_scope
    from core.repository import tenants as tenants_repo
    from core.tables import Job

    with session_scope() as session:
        tenant = tenants_repo.get_or_create_tenant(session=session, name="metrics-test")
        for status in ("succeeded", "succeeded", "failed"):
            session.add(Job(tenant_id=tenant.id, name="t", spec={}, status=status))
        session.add(
            Job(
                tenant_id=tenant.id,
                name="t",
                spec={},
                status="running",
                steps=10,
                latest_metrics={"epoch_seconds": 2.0, "samples_per_second": 160.0},
            )
        )
        session.add(
            Job(
                tenant_id=tenant.id, name="t", spec={}, status="running", steps=0, latest_metrics={}
            )
        )


def test_metrics_text_parses_and_counts(api_env: Path) -> None:
    from api.main import create_app
    from api.observability import PREDICT_SECONDS

    _seed_jobs()
    before = parse_metrics(TestClient(create_app()).get("/metrics").text)
    PREDICT_SECONDS.observe(0.003)
    with TestClient(create_app()) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = parse_metrics(answer.text)
    # the sqlite file is shared by the session: other tests may have added jobs; these are ours at least
    assert samples[("fitserve_jobs", 'state="succeeded"')] >= 2
    assert samples[("fitserve_jobs", 'state="failed"')] >= 1
    assert samples[("fitserve_jobs", 'state="running"')] >= 2
    assert ("fitserve_jobs", 'state="queued"') in samples
    assert samples[("fitserve_queue_depth", 'queue="fitserve"')] == 0
    assert samples[("fitserve_source_up", 'source="database"')] == 1
    assert samples[("fitserve_source_up", 'source="broker"')] == 1
    assert samples[("fitserve_epoch_seconds_max", "")] >= 2.0
    assert samples[("fitserve_step_seconds_mean", "")] > 0
    assert samples[("fitserve_samples_per_second", "")] >= 160.0
    count = samples[("fitserve_predict_seconds_count", "")]
    assert count == before[("fitserve_predict_seconds_count", "")] + 1
    assert samples[("fitserve_predict_seconds_bucket", 'le="+Inf"')] == count
    assert samples[("fitserve_predict_seconds_bucket", 'le="0.005"')] >= 1
    assert samples[("process_resident_memory_bytes", "")] > 0


def test_metrics_token_and_switch(api_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from api.main import create_app

    monkeypatch.setenv("FITSERVE_METRICS_TOKEN", "scrape-secret")
    get_settings.cache_clear()
    client = TestClient(create_app())
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert (
        client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code == 200
    )
    monkeypatch.setenv("FITSERVE_METRICS_ENABLED", "false")
    get_settings.cache_clear()
    assert TestClient(create_app()).get("/metrics").status_code == 404


@pytest.mark.parametrize(
    ("terminal", "variables", "style"),
    [
        (True, {}, "text"),
        (False, {}, "json"),
        (True, {"LOG_FORMAT": "json"}, "json"),
        (False, {"FITSERVE_LOG_FORMAT": "text"}, "text"),
    ],
)
def test_the_log_format_is_text_on_a_terminal_and_json_elsewhere(
    terminal: bool, variables: dict[str, str], style: str
) -> None:
    """`auto` (the default) looks at stderr, where the logs go: a process is started with a
    pseudo-terminal or a pipe as its stderr, and prints the style its settings resolve."""
    import os
    import pty
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "FITSERVE_LOG_FORMAT")}
    master, child = pty.openpty()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from core.settings import Settings; print(Settings().log_style)",
            ],
            env={**env, **variables},
            stderr=child if terminal else subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        os.close(child)
        os.close(master)
    assert done.stdout.strip() == style

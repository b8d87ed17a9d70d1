"""The SDK's pure parts, without a server: the SSE decoder, the error mapping, the retry
decisions and the progress lines. tests/e2e/test_sdk.py runs them against real services."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from fitserve_client import errors
from fitserve_client.events import Cursor, Decoder, ServerSentEvent, decode
from fitserve_client.progress import ProgressPrinter
from fitserve_client.transport import Call, RetryPolicy, no_content
from fitserve_client.types import JobState, MetricPoint, StatusEvent

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def feed(lines: list[str]) -> list[ServerSentEvent]:
    decoder = Decoder()
    return [e for line in lines if (e := decoder.feed(line)) is not None]


def test_the_decoder_reads_events_and_skips_comments() -> None:
    lines = [
        "retry: 2000",
        "",
        ": keepalive",
        "",
        "id: 7",
        "event: metric",
        "data: {",
        "data: }",
        "",
    ]
    assert feed(lines) == [ServerSentEvent("metric", "7", "{\n}")]


def test_an_event_cut_off_by_a_dropped_connection_is_never_dispatched() -> None:
    assert feed(["id: 3", "event: status", 'data: {"seq": 3']) == []


def test_an_unknown_event_kind_is_skipped_and_a_known_one_typed() -> None:
    assert decode(ServerSentEvent("future", "1", "{}")) is None
    point = {
        "seq": 4,
        "step": 1,
        "epoch": 1,
        "name": "loss",
        "value": 0.5,
        "attempt": 1,
        "time": NOW.isoformat(),
    }
    assert decode(ServerSentEvent("metric", "4", json.dumps(point))) == MetricPoint(**point)


def test_the_cursor_remembers_the_last_seq_and_refuses_a_repeat() -> None:
    cursor = Cursor()
    first, again = metric(5, "loss", 1), metric(5, "loss", 1)
    assert cursor.accept(first) and not cursor.accept(again)
    assert cursor.call("job_1").headers["Last-Event-ID"] == "5" and not cursor.ended
    assert cursor.accept(status(6, "succeeded")) and cursor.ended


def response(code: int, body: Any = None, **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "http://fitserve.test/v1/jobs")
    if isinstance(body, str):
        return httpx.Response(code, text=body, headers=headers, request=request)
    return httpx.Response(code, json=body, headers=headers, request=request)


def test_a_422_keeps_each_errors_field_path_and_message() -> None:
    detail = [
        {
            "loc": ["body", "model", "layers", 1, "dense", "units"],
            "msg": "too small",
            "type": "x",
            "input": 0,
        }
    ]
    error = errors.from_response(response(422, {"detail": detail}))
    assert isinstance(error, errors.ValidationError) and error.status == 422
    assert error.errors[0].loc == ["body", "model", "layers", 1, "dense", "units"]
    assert str(error) == "model.layers.1.dense.units: too small"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (400, errors.BadRequest),
        (401, errors.AuthenticationError),
        (404, errors.NotFound),
        (409, errors.Conflict),
        (413, errors.PayloadTooLarge),
        (500, errors.ServerError),
        (418, errors.FitserveError),
    ],
)
def test_each_status_has_its_error(code: int, kind: type[errors.FitserveError]) -> None:
    error = errors.from_response(response(code, {"detail": "why"}, **{"x-request-id": "r1"}))
    assert type(error) is kind and (error.status, error.detail, error.request_id) == (
        code,
        "why",
        "r1",
    )


def test_retry_after_is_read_in_seconds_or_as_a_date() -> None:
    limited = errors.from_response(response(429, {"detail": "slow down"}, **{"Retry-After": "3"}))
    assert isinstance(limited, errors.RateLimited) and limited.retry_after == 3
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    down = errors.from_response(response(503, "database down", **{"Retry-After": later}))
    assert isinstance(down, errors.ServiceUnavailable) and isinstance(down, errors.ServerError)
    assert down.retry_after is not None and 25 < down.retry_after <= 30
    assert down.detail == "database down"


def call(idempotent: bool) -> Call[None]:
    return Call("POST", "/v1/jobs", no_content, idempotent=idempotent)


def test_429_and_503_are_retried_for_any_request_after_retry_after() -> None:
    policy = RetryPolicy(max_retries=2)
    limited = errors.RateLimited("slow", status=429, retry_after=2.0)
    assert 2.0 <= policy.wait(call(False), limited, 0) <= 2.25  # type: ignore[operator]
    assert policy.wait(call(False), limited, 2) is None  # max_retries spent
    far = errors.RateLimited("later", status=429, retry_after=3600)
    assert policy.wait(call(True), far, 0) is None  # raised, not slept through


def test_a_dropped_connection_is_retried_only_when_the_request_is_safe_to_repeat() -> None:
    policy = RetryPolicy(backoff=0.5)
    dropped = errors.APITimeoutError("read timeout", request_sent=True)
    assert policy.wait(call(False), dropped, 0) is None
    assert 0.25 <= policy.wait(call(True), dropped, 0) <= 0.5  # type: ignore[operator]
    assert 0.5 <= policy.wait(call(True), dropped, 1) <= 1.0  # type: ignore[operator]
    never_sent = errors.APIConnectionError("refused", request_sent=False)
    assert policy.wait(call(False), never_sent, 0) is not None
    assert policy.wait(call(True), errors.NotFound("no", status=404), 0) is None


def job(epoch: int, step: int, status: str = "running") -> JobState:
    return JobState(
        id="job_1", name="n", status=status, reason=None, attempt=1,  # type: ignore[arg-type]
        progress={"epoch": epoch, "epochs": 2, "step": step, "steps": 40},  # type: ignore[arg-type]
        metrics={}, test_metrics={}, parameters=1, estimated_memory_bytes=1, device="cpu",
        precision="fp32", cancel_requested=False, created_at=NOW, updated_at=NOW,
        started_at=NOW, finished_at=None, seq=0, trained_seconds=0.0,
    )  # fmt: skip


def metric(seq: int, name: str, epoch: int, value: float = 0.5) -> MetricPoint:
    return MetricPoint(
        seq=seq, step=40 * epoch, epoch=epoch, name=name, value=value, attempt=1, time=NOW
    )


def status(seq: int, name: str, reason: str | None = None) -> StatusEvent:
    return StatusEvent(seq=seq, status=name, reason=reason, attempt=1, time=NOW)  # type: ignore[arg-type]


def test_a_replayed_job_prints_one_line_per_epoch_and_its_statuses() -> None:
    """Connected late: the job as it stands (epoch 2) comes first, then the replay from epoch 1."""
    out = io.StringIO()
    printer = ProgressPrinter(out, live=False)
    events = [job(2, 40), status(1, "queued"), status(2, "running"), metric(3, "step_loss", 1)]
    events += [
        metric(4, "loss", 1, 0.9),
        metric(5, "epoch_seconds", 1, 1.25),
        metric(6, "val_loss", 1, 0.8),
    ]
    events += [metric(7, "loss", 2, 0.4), metric(8, "lr", 2, 0.1), job(2, 40, "succeeded")]
    events += [status(9, "succeeded", "completed 2 epochs")]
    for event in events:
        printer(event)
    assert out.getvalue().splitlines() == [
        "job queued",
        "job running (attempt 1)",
        "epoch 1/2  40/40 steps  1.2s  loss 0.9000  val_loss 0.8000",
        "epoch 2/2  40/40 steps  loss 0.4000",
        "job succeeded: completed 2 epochs",
    ]


def test_without_a_job_event_the_steps_come_from_the_epochs_points() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, live=False)
    for event in (metric(1, "loss", 1), metric(2, "loss", 2), status(3, "failed", "stopped")):
        printer(event)
    assert out.getvalue().splitlines()[:2] == [
        "epoch 1  40/40 steps  loss 0.5000",
        "epoch 2  40/40 steps  loss 0.5000",
    ]


def test_on_a_terminal_the_epoch_in_progress_is_a_bar_with_steps_and_eta() -> None:
    now = [100.0]
    out = io.StringIO()
    printer = ProgressPrinter(out, live=True, clock=lambda: now[0])
    printer(job(1, 10))
    now[0] += 1.0
    printer(metric(1, "step_loss", 1, 0.7))
    printer(job(1, 20))  # 10 steps a second: 20 to go in this epoch, 2 s
    assert out.getvalue().endswith(
        "\r\x1b[2Kepoch 1/2 [############------------] 20/40  ETA 0:02  loss 0.7000"
    )
    printer(metric(2, "loss", 1, 0.6))
    now[0] += 2.4
    printer(job(2, 4))  # epoch 1 is over: its line replaces the bar, the new bar below it
    assert "\r\x1b[2Kepoch 1/2  40/40 steps  loss 0.6000\n\r\x1b[2Kepoch 2/2 [##" in out.getvalue()
    assert out.getvalue().endswith("4/40  ETA 0:04  loss 0.7000")  # still 10 a second: 36 to go

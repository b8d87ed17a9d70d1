"""BodyLimit's timeouts on the ASGI interface, without a server: a stalled body is a 408 and the
route never runs; once a body is complete, `receive` waits unbounded (event streams)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi import FastAPI, Request

from api.limits import BodyLimit

ran: list[str] = []


def app() -> FastAPI:
    api = FastAPI()

    @api.post("/v1/echo")
    async def echo(request: Request) -> dict[str, int]:
        body = await request.body()
        ran.append("echo")
        return {"size": len(body)}

    return api


async def exchange(asgi: Any, chunks: list[tuple[float, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run one request whose `receive` hands out `chunks` (each after its delay, then stalls for
    good); what the app sent."""
    sent: list[dict[str, Any]] = []
    queue = list(chunks)

    async def receive() -> dict[str, Any]:
        if not queue:
            await asyncio.Event().wait()
        delay, message = queue.pop(0)
        await asyncio.sleep(delay)
        return message

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/echo",
        "headers": [(b"content-length", b"100")],
        "query_string": b"",
        "http_version": "1.1",
        "scheme": "http",
        "root_path": "",
    }
    await asyncio.wait_for(asgi(scope, receive, send), 5)
    return sent


def chunk(size: int, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": b"x" * size, "more_body": more}


@pytest.mark.anyio
async def test_a_stalled_body_is_408_with_connection_close_and_the_route_never_runs() -> None:
    ran.clear()
    sent = await exchange(BodyLimit(app(), lambda _: 1024, idle_seconds=0.1), [(0, chunk(10))])
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {"detail": "no data of the request body came in 0.1 s"}
    assert len(sent) == 2 and ran == []  # the parser's 400 for the cut body is dropped


@pytest.mark.anyio
async def test_a_steady_body_passes_and_a_slow_whole_is_cut_at_the_total() -> None:
    ran.clear()
    steady = [(0.05, chunk(10)) for _ in range(5)] + [(0.05, chunk(50, more=False))]
    limited = BodyLimit(app(), lambda _: 1024, idle_seconds=0.1, total_seconds=1.0)
    sent = await exchange(limited, steady)
    assert (
        sent[0]["status"] == 200
        and json.loads(sent[1]["body"]) == {"size": 100}
        and ran == ["echo"]
    )
    sent = await exchange(
        BodyLimit(app(), lambda _: 1024, idle_seconds=0.1, total_seconds=0.2), steady
    )
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"]) == {
        "detail": "the request body took longer than 0.2 s to arrive"
    }


@pytest.mark.anyio
async def test_after_the_body_receive_waits_past_the_timeouts() -> None:
    """An event stream waits in `receive` for the disconnect; that wait is not a body's."""
    got: list[dict[str, Any]] = []

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        got.append(await receive())
        got.append(await receive())  # the disconnect, 0.3 s later: three idle timeouts
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent = await exchange(
        BodyLimit(stream, lambda _: 1024, idle_seconds=0.1, total_seconds=0.2),
        [(0, chunk(0, more=False)), (0.3, {"type": "http.disconnect"})],
    )
    assert [m["type"] for m in got] == ["http.request", "http.disconnect"] and sent[0][
        "status"
    ] == 200


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

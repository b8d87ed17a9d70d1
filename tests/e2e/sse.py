"""A server-sent events reader, as a browser's EventSource parses the stream (the WHATWG rules:
fields per line, a blank line ends an event, lines starting with ':' are comments)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Event:
    event: str
    id: str | None
    data: str
    comments: list[str] = field(default_factory=list)  # comment lines seen since the previous event

    def json(self) -> Any:
        return json.loads(self.data)


def parse(lines: Iterable[str]) -> Iterator[Event]:
    """Events from the stream's lines; an event of comments alone (a keepalive) has event ''."""
    kind, ident, data, comments = "", None, [], []  # type: ignore[var-annotated]
    for line in lines:
        if line == "":
            if data or comments:
                yield Event(kind or ("message" if data else ""), ident, "\n".join(data), comments)
            kind, data, comments = "", [], []
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            ident = value  # kept, as EventSource keeps its last event id, until another comes


def stream(
    client: httpx.Client, job_id: str, last_event_id: int | None = None, **params: Any
) -> Iterator[Event]:
    """Open the job's event stream and yield its events (keepalives included) until it ends."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    with client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers=headers, params=params
    ) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        yield from parse(answer.iter_lines())


def entries(events: Iterable[Event]) -> list[dict[str, Any]]:
    """The sequence entries (`metric` and `status` events) with their kind, in the order received."""
    return [{"kind": e.event, **e.json()} for e in events if e.event in ("metric", "status")]

"""GET /v1/jobs/{id}/events: a job's live events as server-sent events (see api/streams.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.deps import SettingsDep, ShortTenant
from api.errors import ApiError, responses
from api.hub import Hub
from api.schemas import MAX_SEQ, JobState, MetricPoint, StatusEvent
from api.streams import EventStream, follow
from api.views import to_state
from core.db import session_scope
from core.repository import jobs as jobs_repo
from core.tables import TERMINAL

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=responses(401, 503))
STREAMS_RETRY_AFTER_SECONDS = 5

DESCRIPTION = """Server-sent events (`text/event-stream`), live until the job ends.

Every metric point and status change of a job has a number in the job's **event sequence**
(`seq`: 1, 2, 3..., rising, with an occasional gap). The stream sends:

| event | `id:` | `data:` |
| --- | --- | --- |
| `metric` | its `seq` | a metric point (`MetricPoint`, as `GET /v1/jobs/{id}/metrics` lists it) |
| `status` | its `seq` | a status change: `{seq, status, reason, attempt, time}` |
| `job` | the stream's cursor | the job as it stands, without its spec (`JobState`): first, on change, before the end |

**Cursor.** A stream replays every event numbered above its cursor, in order, exactly once,
then follows live: a reconnect with `Last-Event-ID: <id>` (browsers send it themselves), or
`?after=<seq>` for clients that cannot set headers, resumes right after that event. The header
wins over the query. Without either the stream starts from the job's first event.

**End.** The stream's last event is the `status` event of a terminal status (`succeeded`,
`failed`, `cancelled`), after a final `job` event; then the server closes it. A request whose
cursor is already past a finished job's last event gets `204 No Content` (which tells a
browser's EventSource to stop reconnecting).

**Quiet streams.** A comment line (`: keepalive`) comes every 15 s; `retry: 2000` asks browsers
to reconnect after 2 s. While the database is unreachable the stream sends
`: the database is unreachable; waiting` and goes on once it is back.

**Limits.** A tenant may hold `max_streams_per_tenant` (64) open streams per API process; one
more is a 429 with `Retry-After`."""


def _data(model: Any, name: str) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # what it refers to (Progress) is among the components already
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "id": {
                "type": "string",
                "description": "the event's seq (for `job`: the stream's cursor)",
            },
            "retry": {"type": "integer", "minimum": 0},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": schema,
            },
        },
    }


EVENT_DATA = ((MetricPoint, "metric"), (StatusEvent, "status"), (JobState, "job"))
OPENAPI_200: dict[str, Any] = {
    "description": "the job's events (see above)",
    "content": {
        "text/event-stream": {
            # OpenAPI 3.2's schema of each event of a sequential media type.
            "itemSchema": {"oneOf": [_data(model, name) for model, name in EVENT_DATA]},
        }
    },
}


def _owned_state(tenant_id: str, job_id: str) -> JobState | None:
    with session_scope() as session:
        job = jobs_repo.get_job(session=session, tenant_id=tenant_id, job_id=job_id)
        return None if job is None else to_state(job)


@router.get(
    "/{job_id}/events",
    response_class=EventStream,
    status_code=200,
    description=DESCRIPTION,
    responses={
        **responses(404, 429),
        200: OPENAPI_200,
        204: {"description": "the cursor is past the finished job's last event"},
    },
)
async def stream_events(
    request: Request,
    tenant: ShortTenant,
    settings: SettingsDep,
    job_id: str,
    after: Annotated[
        int | None,
        Query(ge=0, le=MAX_SEQ, description="resume after this seq (Last-Event-ID wins)"),
    ] = None,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=MAX_SEQ)] = None,
) -> Response:
    state = await run_in_threadpool(_owned_state, tenant.id, job_id)
    if state is None:
        raise ApiError(404, f"job {job_id} not found")
    cursor = last_event_id if last_event_id is not None else (after or 0)
    if state.status in TERMINAL and cursor >= state.seq:
        return Response(status_code=204)
    hub: Hub = request.app.state.hub
    if not hub.admit(tenant.id):
        raise HTTPException(
            429,
            f"this tenant has {settings.max_streams_per_tenant} open event streams on this "
            "API process, the most it may have (FITSERVE_MAX_STREAMS_PER_TENANT); close one, or "
            "retry later",
            headers={"Retry-After": str(STREAMS_RETRY_AFTER_SECONDS)},
        )
    tenant_id = tenant.id
    return EventStream(
        follow(hub, job_id, cursor, settings.stream_keepalive_seconds),
        release=lambda: hub.release(tenant_id),
    )

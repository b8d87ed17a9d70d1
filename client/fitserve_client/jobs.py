"""/v1/jobs: submit, get, list, cancel, metrics, checkpoints, the live stream and wait.

A spec is a dict, a path to a JSON file, or any pydantic model (the server's `JobSpec` where
it is installed): this package keeps no copy of the spec's classes. The server validates it,
and its 422 comes back as `ValidationError` naming each field.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from fitserve_client.events import AsyncEventStream, EventStream
from fitserve_client.progress import ProgressPrinter
from fitserve_client.transport import AsyncTransport, Call, Transport, parse
from fitserve_client.types import (
    Checkpoints,
    Dataset,
    Job,
    JobList,
    JobStatus,
    MetricPage,
    Metrics,
)

SpecLike = Mapping[str, Any] | str | os.PathLike[str] | BaseModel
DatasetLike = Dataset | str
# Keys of a spec's dataset section that only a generated dataset takes: dropped when
# `dataset=` points the spec at another dataset.
GENERATED_ONLY = ("name", "id", "n_samples", "noise", "classes")


def job_path(job_id: str, tail: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{tail}"


def load_spec(spec: SpecLike) -> dict[str, Any]:
    """The spec as the JSON body to post."""
    if isinstance(spec, BaseModel):
        return spec.model_dump(mode="json", by_alias=True)
    if isinstance(spec, str | os.PathLike):
        loaded = json.loads(Path(spec).read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{spec}: a job spec is a JSON object")
        return loaded
    return copy.deepcopy(dict(spec))


def with_dataset(spec: dict[str, Any], dataset: DatasetLike | None) -> dict[str, Any]:
    """The spec pointed at `dataset`: an uploaded dataset's id, or a `Dataset` from the API.
    The section's other settings (target, task, splits, scaling) are kept."""
    if dataset is None:
        return spec
    section = spec.get("dataset")
    section = section if isinstance(section, dict) else {}
    kept = {k: v for k, v in section.items() if k not in GENERATED_ONLY}
    if isinstance(dataset, Dataset) and dataset.source == "builtin":
        return {**spec, "dataset": {**kept, "name": dataset.name}}
    return {
        **spec,
        "dataset": {**kept, "id": dataset.id if isinstance(dataset, Dataset) else dataset},
    }


def submit_call(
    spec: SpecLike, dataset: DatasetLike | None, idempotency_key: str | None
) -> Call[Job]:
    # The key makes the submit safe to retry: a repeat returns the job the first one created.
    key = idempotency_key or uuid.uuid4().hex
    body = with_dataset(load_spec(spec), dataset)
    return Call("POST", "/v1/jobs", parse(Job), json=body, headers={"Idempotency-Key": key})


def list_call(status: JobStatus | None, limit: int, offset: int) -> Call[JobList]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status is not None:
        params["status"] = status
    return Call("GET", "/v1/jobs", parse(JobList), params=params)


def metrics_call(
    job_id: str, name: str | None, after: int, since_step: int | None, limit: int
) -> Call[MetricPage]:
    params: dict[str, Any] = {"after": after, "limit": limit}
    if name is not None:
        params["name"] = name
    if since_step is not None:
        params["since_step"] = since_step
    return Call("GET", job_path(job_id, "/metrics"), parse(MetricPage), params=params)


def cancel_call(job_id: str) -> Call[Job]:
    # Sent twice, a cancel that worked the first time would answer 409: not retried blindly.
    return Call("POST", job_path(job_id, "/cancel"), parse(Job), idempotent=False)


class Jobs:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def submit(
        self,
        spec: SpecLike,
        *,
        dataset: DatasetLike | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        return self._t.send(submit_call(spec, dataset, idempotency_key))

    def get(self, job_id: str) -> Job:
        return self._t.send(Call("GET", job_path(job_id), parse(Job)))

    def list(self, *, status: JobStatus | None = None, limit: int = 20, offset: int = 0) -> JobList:
        return self._t.send(list_call(status, limit, offset))

    def cancel(self, job_id: str) -> Job:
        return self._t.send(cancel_call(job_id))

    def checkpoints(self, job_id: str) -> Checkpoints:
        return self._t.send(Call("GET", job_path(job_id, "/checkpoints"), parse(Checkpoints)))

    def metrics(
        self,
        job_id: str,
        *,
        name: str | None = None,
        after: int = 0,
        since_step: int | None = None,
        page_size: int = 10_000,
    ) -> Metrics:
        """Every point (of `name`, if given), paged by the cursor."""
        points = Metrics()
        while True:
            page = self._t.send(metrics_call(job_id, name, after, since_step, page_size))
            points.extend(page.data)
            after = page.next
            if not page.has_more:
                return points

    def stream(
        self, job_id: str, *, after: int | None = None, timeout: float | None = None
    ) -> EventStream:
        """The job's events from the first (or after `after`) until it ends, reconnecting with
        Last-Event-ID; `timeout` bounds the whole stream (TimeoutError)."""
        return EventStream(self._t, job_id, after, timeout)

    def wait(self, job_id: str, *, progress: bool = False, timeout: float | None = None) -> Job:
        """Follow the job until it ends and return it. With `progress`, its events from the
        first are drawn on stderr; without, the stream starts where the job stands."""
        job = self.get(job_id)
        if job.done:
            return job
        printer = ProgressPrinter(sys.stderr) if progress else None
        with self.stream(job_id, after=None if progress else job.seq, timeout=timeout) as events:
            for event in events:
                if printer is not None:
                    printer(event)
        return self.get(job_id)


class AsyncJobs:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def submit(
        self,
        spec: SpecLike,
        *,
        dataset: DatasetLike | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        return await self._t.send(submit_call(spec, dataset, idempotency_key))

    async def get(self, job_id: str) -> Job:
        return await self._t.send(Call("GET", job_path(job_id), parse(Job)))

    async def list(
        self, *, status: JobStatus | None = None, limit: int = 20, offset: int = 0
    ) -> JobList:
        return await self._t.send(list_call(status, limit, offset))

    async def cancel(self, job_id: str) -> Job:
        return await self._t.send(cancel_call(job_id))

    async def checkpoints(self, job_id: str) -> Checkpoints:
        return await self._t.send(Call("GET", job_path(job_id, "/checkpoints"), parse(Checkpoints)))

    async def metrics(
        self,
        job_id: str,
        *,
        name: str | None = None,
        after: int = 0,
        since_step: int | None = None,
        page_size: int = 10_000,
    ) -> Metrics:
        points = Metrics()
        while True:
            page = await self._t.send(metrics_call(job_id, name, after, since_step, page_size))
            points.extend(page.data)
            after = page.next
            if not page.has_more:
                return points

    def stream(
        self, job_id: str, *, after: int | None = None, timeout: float | None = None
    ) -> AsyncEventStream:
        return AsyncEventStream(self._t, job_id, after, timeout)

    async def wait(
        self, job_id: str, *, progress: bool = False, timeout: float | None = None
    ) -> Job:
        job = await self.get(job_id)
        if job.done:
            return job
        printer = ProgressPrinter(sys.stderr) if progress else None
        after = None if progress else job.seq
        async with self.stream(job_id, after=after, timeout=timeout) as events:
            async for event in events:
                if printer is not None:
                    printer(event)
        return await self.get(job_id)

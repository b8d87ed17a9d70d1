"""Dataset uploads without blocking the event loop or the API's memory: the multipart body is
spooled to a temporary file by Starlette; a thread copies it, in chunks, to the upload folder
(hashing and counting on the way); a parse process reads and checks it; a thread writes the row
under the tenant's lock, quota checked again, so concurrent uploads cannot pass it together.

Parsing runs in `upload_parse_processes` processes of its own (spawned: they import only
core.datasets; at a lower priority, so requests come first): a CSV parser is Python code that would
hold the API's GIL for seconds, and a hostile file that exhausts memory takes a parse process
down, not the API.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import IO, Any

from fastapi import HTTPException
from fastapi.concurrency import run_in_threadpool

from api import quota
from api.errors import unprocessable
from core.datasets import DatasetError, Task
from core.db import session_scope
from core.repository import datasets as datasets_repo
from core.settings import Settings
from core.storage import upload_path
from core.tables import Dataset, new_id
from core.uploads import TooLarge, TooLargeInflated, describe_file, lower_priority, save

log = logging.getLogger("fitserve.api")


class ParsePool:
    """Parse processes, started on the first upload and kept; rebuilt if one dies."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=lower_priority,
            )
        return self._executor

    async def describe(
        self,
        path: Path,
        fmt: str,
        target: str | None,
        task: Task | None,
        name: str,
        inflated_limit: int,
    ) -> dict[str, Any]:
        pool = self._pool()
        try:
            return await asyncio.wrap_future(
                pool.submit(describe_file, str(path), fmt, target, task, name, inflated_limit)
            )
        except BrokenProcessPool as exc:
            if self._executor is pool:
                self._executor = None
                pool.shutdown(wait=False, cancel_futures=True)
            log.warning("an upload's parse process died; parse processes restarted")
            raise DatasetError(
                "the file could not be parsed: its parse process died (out of memory?)"
            ) from exc

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _used(tenant_id: str) -> int:
    with session_scope() as session:
        return quota.stored_bytes(session, tenant_id)


def _copy(
    source: IO[bytes], target: Path, limit: int, used: int, settings: Settings
) -> tuple[int, str]:
    try:
        return save(source, target, limit)
    except TooLarge as exc:
        if limit < settings.upload_max_bytes:
            raise quota.storage_refusal(settings, used) from exc
        raise HTTPException(
            413, f"the file is larger than the upload limit of {limit} bytes"
        ) from exc


def _insert(row: Dataset, staged: Path, final: Path, settings: Settings) -> Dataset:
    """The row, with the quota checked again under the tenant's lock; the file moves into place
    before the commit (and is removed if the commit fails)."""
    try:
        with session_scope() as session:
            quota.lock_tenant(session, row.tenant_id)
            used = quota.stored_bytes(session, row.tenant_id)
            if used + row.size_bytes > settings.storage_quota_bytes:
                raise quota.storage_refusal(settings, used, row.size_bytes)
            datasets_repo.add_dataset(session=session, dataset=row)
            os.replace(staged, final)
        return row
    except BaseException:
        staged.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise


async def store_upload(
    *,
    pool: ParsePool,
    settings: Settings,
    tenant_id: str,
    source: IO[bytes],
    fmt: str,
    name: str,
    target: str | None,
    task: Task | None,
) -> Dataset:
    used = await run_in_threadpool(_used, tenant_id)
    left = max(settings.storage_quota_bytes - used, 0)
    dataset_id = new_id("ds")
    final = upload_path(settings.artifacts_dir, dataset_id, fmt)
    staged = final.with_name(f".{final.name}.tmp")
    size, sha256 = await run_in_threadpool(
        _copy, source, staged, min(left, settings.upload_max_bytes), used, settings
    )
    try:
        parsed = await pool.describe(
            staged, fmt, target, task, name, settings.upload_max_inflated_bytes
        )
    except TooLargeInflated as exc:
        staged.unlink(missing_ok=True)
        raise HTTPException(413, f"the upload is too large once inflated: {exc}") from exc
    except DatasetError as exc:
        staged.unlink(missing_ok=True)
        raise unprocessable(str(exc), ("body", "file")) from exc
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    row = Dataset(
        id=dataset_id,
        tenant_id=tenant_id,
        name=name[:200],
        format=fmt,
        size_bytes=size,
        sha256=sha256,
        target=parsed["target"],
        task=parsed["task"],
        description=parsed["description"],
    )
    return await run_in_threadpool(_insert, row, staged, final, settings)
